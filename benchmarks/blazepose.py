"""The BlazePose port's speed: side by side with LiteRT on the same file, and as a backbone.

    python benchmarks/blazepose.py [--threads 1 2] [--rounds 15] [--batches 1 64]

1. The whole landmark network (every output, batch 1, the file's own 256 x 256 input), our PyTorch port
   against LiteRT (``pip install -c constraints.txt ai-edge-litert``; skipped with a note when absent),
   on the same number of threads, interleaved round by round (one call of each per round, after two
   warm-up calls), median ms and the ratio of the medians.
2. The ``blazepose`` backbone as the HMR model uses it (encoder + landmark branch, no decoder), ms per
   image at each batch size (eval, no grad), and a training step's forward + backward of a frozen trunk.

The load average is printed first: on a busy machine both sides slow down, the ratio less so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from mega.backbones import build_backbone
from mega.backbones.blazepose_file import DEFAULT_PATH, require_model_file
from mega.backbones.tflite_graph import read_tflite
from mega.backbones.tflite_net import TFLiteNet


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def side_by_side(path: str, threads: int, rounds: int) -> str:
    """One row: LiteRT and the port on the full graph, batch 1, median ms and ratio."""
    torch.set_num_threads(threads)
    graph = read_tflite(path)
    net = TFLiteNet(graph, graph.outputs).eval()
    img = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()

    def ours() -> None:
        with torch.inference_mode():
            net(x)

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        ours()
        ms = statistics.median(_timed(ours) for _ in range(rounds)) * 1000
        return f"threads {threads}: port {ms:7.1f} ms  (LiteRT not installed: pip install -c constraints.txt ai-edge-litert)"
    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], img)
    for _ in range(2):
        ours()
        interp.invoke()
    a, b = [], []
    for _ in range(rounds):
        a.append(_timed(interp.invoke))
        b.append(_timed(ours))
    lite, port = statistics.median(a) * 1000, statistics.median(b) * 1000
    return (
        f"threads {threads}: LiteRT {lite:7.1f} ms   port {port:7.1f} ms   port / LiteRT {port / lite:5.2f}"
    )


def backbone_rows(path: str, threads: int, batches: list[int], rounds: int) -> list[str]:
    """ms per image of the backbone (eval) per batch, and of a frozen-trunk training forward + backward."""
    torch.set_num_threads(threads)
    bb = build_backbone("blazepose", source=path).eval()
    rows = []
    for b in batches:
        x = torch.randn(b, 3, 256, 256)

        def run(x: torch.Tensor = x) -> None:
            bb(x)

        with torch.inference_mode():
            run()
            ms = statistics.median(_timed(run) for _ in range(max(3, rounds // max(1, b // 8)))) * 1000 / b
        rows.append(f"threads {threads}: backbone B={b:<3d} {ms:7.1f} ms/img")
    bb.train()
    x = torch.randn(8, 3, 256, 256)

    def step() -> None:
        out = bb(x)
        out.tokens.mean().backward()

    step()
    ms = statistics.median(_timed(step) for _ in range(3)) * 1000 / 8
    rows.append(f"threads {threads}: frozen trunk, training forward + backward B=8 {ms:7.1f} ms/img")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 64])
    ap.add_argument("--model", default=DEFAULT_PATH)
    args = ap.parse_args()
    path = str(require_model_file(args.model))
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for t in args.threads:
        print(side_by_side(path, t, args.rounds), flush=True)
    for t in args.threads:
        for row in backbone_rows(path, t, args.batches, args.rounds):
            print(row, flush=True)


if __name__ == "__main__":
    main()
