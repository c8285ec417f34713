"""The BlazePose port's speed: side by side with LiteRT on the same file, and as a backbone.

    python benchmarks/blazepose.py [--threads 1 2] [--batches 1 8 64] [--rounds 15] [--no-before]

1. Port against LiteRT (``pip install -c constraints.txt ai-edge-litert``; a note when absent) on the
   same input batch and the same number of threads, for two sets of outputs:
   - ``backbone``: what the ``blazepose`` backbone runs: the 8 x 8 x 144 encoder map + landmarks, world
     landmarks, presence. LiteRT gets the same work: a copy of the file cut to the operators those
     outputs need (its schema's object API; RESHAPEs made batch-agnostic so a batch runs in one call);
   - ``full``: every output of the file (segmentation and heat-map decoder included).
   Each side runs interleaved with LiteRT, one call each per round after two warm-up calls: the port
   (its fused path) and, with ``before``, the port's reference path (the operators as they ran before
   the fused path existed) in a second interleaved run, so that each ratio compares calls made under
   the same load and cache conditions. Medians of wall and of process CPU ms per image, the ratio of
   the medians, and the 1-minute load average before and after the row (the machine is shared:
   interleaving spreads load over both sides alike; CPU time leaves out time spent descheduled).
Several threads on a loaded machine: the port's batches run whole images per worker thread (no
per-operator barrier); a single image runs OpenMP teams, whose spinning waits collapse when other
processes hold the cores (measured at 2 threads, 2 cores, load 6: 114-370 ms per image by default,
27-29 ms with ``OMP_WAIT_POLICY=PASSIVE``, read by OpenMP at start-up only; on an idle machine the
default is the faster one).

2. The ``blazepose`` backbone as the HMR model calls it (ImageNet-normalised crops, eval, no grad): ms per
   image at each batch; and a frozen trunk's training forward + backward at B = 8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from mega.backbones import build_backbone
from mega.backbones.blazepose import LANDMARKS, MAP_TENSOR, PRESENCE, WORLD
from mega.backbones.blazepose_file import DEFAULT_PATH, require_model_file
from mega.backbones.tflite_graph import read_tflite
from mega.backbones.tflite_net import TFLiteNet

BACKBONE_OUTPUTS = (MAP_TENSOR, LANDMARKS, PRESENCE, WORLD)
SPIN_GAP_S = 0.05


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _timed_both(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _load() -> float:
    return os.getloadavg()[0]


def litert_model(path: str, outputs: list[str] | None) -> bytes:
    """The .tflite file cut to the operators that the tensors named ``outputs`` need (None: all), its
    RESHAPE targets given a -1 batch so that the input can be resized to any batch."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(open(path, "rb").read(), 0)
    graph = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in graph.tensors]
    if outputs is not None:
        want = [names.index(n) for n in outputs]
        needed, kept = set(want), []
        for op in reversed(graph.operators):
            if any(t in needed for t in op.outputs):
                kept.append(op)
                needed.update(t for t in op.inputs if t >= 0)
        graph.operators, graph.outputs = kept[::-1], want
    reshape = schema.BuiltinOperator.RESHAPE
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == reshape:
            buf = model.buffers[graph.tensors[op.inputs[1]].buffer]
            shape = np.frombuffer(bytes(bytearray(buf.data)), dtype=np.int32).copy()
            shape[0] = -1
            buf.data = np.frombuffer(shape.tobytes(), dtype=np.uint8)
            if op.builtinOptions is not None and getattr(op.builtinOptions, "newShape", None) is not None:
                op.builtinOptions.newShape = [int(v) for v in shape]
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _litert(path: str, outputs: list[str] | None, threads: int, img: np.ndarray):
    """A LiteRT call on ``img`` (B, 256, 256, 3), or None when LiteRT is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    interp = Interpreter(model_content=litert_model(path, outputs), num_threads=threads)
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, list(img.shape))
    interp.allocate_tensors()
    interp.set_tensor(index, img)
    return interp.invoke


def side_by_side(path: str, which: str, threads: int, batch: int, rounds: int, before: bool) -> dict:
    """One row: LiteRT and the port (fused; reference with ``before``) on the same batch, ms per image."""
    torch.set_num_threads(threads)
    graph = read_tflite(path)
    names = list(BACKBONE_OUTPUTS) if which == "backbone" else None
    by_name = {v: k for k, v in graph.names.items()}
    ids = [by_name[n] for n in names] if names else graph.outputs
    net = TFLiteNet(graph, ids).eval()
    img = np.random.default_rng(0).random((batch, 256, 256, 3), dtype=np.float32)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()
    lite = _litert(path, names, threads, img)
    pairs = {"port": lambda: net(x, fused=True)}
    if before:
        pairs["before"] = lambda: net(x, fused=False)
    # With several threads, each runtime's idle workers spin for a while after a call (OpenMP, and
    # LiteRT's pool): a pause before each timed call keeps them out of the other side's measurement.
    gap = SPIN_GAP_S if threads > 1 else 0.0
    load0 = _load()
    row: dict = {}
    with torch.inference_mode():
        for side, fn in pairs.items():  # each side in its own interleaved run with LiteRT
            sides = {"LiteRT": lite, side: fn} if lite is not None else {side: fn}
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
            for _ in range(2):
                for f in sides.values():
                    f()
            for _ in range(rounds):
                for k, f in sides.items():
                    time.sleep(gap)
                    times[k].append(_timed_both(f))
            for k, v in times.items():
                key = k if k != "LiteRT" else f"LiteRT/{side}"
                row[key] = statistics.median(w for w, _ in v) * 1000 / batch
                row[key + " cpu"] = statistics.median(c for _, c in v) * 1000 / batch
    return {"outputs": which, "threads": threads, "batch": batch, **row, "load": (load0, _load())}


def format_row(r: dict, cpu: bool = False) -> str:
    """| outputs | threads | batch | time | LiteRT | port | port / LiteRT | LiteRT | before | before /
    LiteRT | load |: wall ms per image (``cpu``: CPU ms of the process per image); each side's ratio is
    against the LiteRT calls interleaved with it."""
    s = " cpu" if cpu else ""
    cells = [r["outputs"], str(r["threads"]), str(r["batch"]), "CPU" if cpu else "wall"]
    for side in ("port", "before"):
        if side + s not in r:
            continue
        lite = r.get(f"LiteRT/{side}{s}")
        ratio = f"{r[side + s] / lite:5.2f}" if lite else "-"
        cells += [f"{lite:7.2f}" if lite else "(no LiteRT)", f"{r[side + s]:7.2f}", ratio]
    cells.append(f"{r['load'][0]:.2f} -> {r['load'][1]:.2f}")
    return "| " + " | ".join(cells) + " |"


def backbone_rows(path: str, threads: int, batches: list[int], rounds: int) -> list[str]:
    """ms per image of the backbone (eval) per batch, and of a frozen-trunk training forward + backward."""
    torch.set_num_threads(threads)
    bb = build_backbone("blazepose", source=path).eval()
    rows = []
    for b in batches:
        x = torch.randn(b, 3, 256, 256)
        with torch.inference_mode():
            bb(x)
            n = max(3, rounds * 8 // (b + 7))
            ms = statistics.median(_timed(lambda x=x: bb(x)) for _ in range(n)) * 1000 / b
        rows.append(f"threads {threads}: backbone B={b:<3d} {ms:7.2f} ms/img  (load {_load():.2f})")
    bb.train()
    x = torch.randn(8, 3, 256, 256)

    def step() -> None:
        bb(x).tokens.mean().backward()

    step()
    ms = statistics.median(_timed(step) for _ in range(3)) * 1000 / 8
    rows.append(f"threads {threads}: frozen trunk, training forward + backward B=8 {ms:7.2f} ms/img")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8, 64])
    ap.add_argument("--rounds", type=int, default=15, help="rounds at batch 1 (fewer at larger batches)")
    ap.add_argument("--outputs", nargs="*", default=["backbone", "full"], choices=["backbone", "full"])
    ap.add_argument("--no-before", dest="before", action="store_false", help="skip the reference path")
    ap.add_argument("--model", default=DEFAULT_PATH)
    args = ap.parse_args()
    path = str(require_model_file(args.model))
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, load average {_load():.2f}; ms per image, medians"
    )
    head = "| outputs | threads | batch | time | LiteRT | port | port / LiteRT |"
    head += " LiteRT | before (reference path) | before / LiteRT |" if args.before else ""
    print(head + " load (1 min) |")
    print("|" + "---|" * (head.count("|") - 1 + 1))
    for t in args.threads:
        for which in args.outputs:
            for b in args.batches:
                rounds = max(3, args.rounds * 8 // (b + 7))
                row = side_by_side(path, which, t, b, rounds, args.before)
                print(format_row(row) + "\n" + format_row(row, cpu=True), flush=True)
    for t in args.threads:
        for row in backbone_rows(path, t, args.batches, args.rounds):
            print(row, flush=True)


if __name__ == "__main__":
    main()
