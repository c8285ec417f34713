"""Backbone parameters, FLOPs and forward time at each one's paper input size, B = 1 and 8.

    python benchmarks/backbones.py [--names tiny_cnn resnet50 ...] [--batches 1 8] [--threads 1]
                                   [--repeats 3] [--device cpu] [--no-pyramid] [--backward]

Builds every registered backbone from its config (configs/backbone/<name>.yaml, random weights) and
prints one row per (backbone, batch): trunk and neck (pyramid) parameters, GFLOPs per image
(torch.utils.flop_counter, multiply-add = 2 FLOPs, B = 1), and the median forward time (eval, no grad)
in ms per image (batch 64 too for the cheap CPU backbones, tiny_cnn and blazepose); ``--backward`` adds a training-mode forward + backward. ``--no-pyramid`` measures the trunk alone (pyramid_scales = []), what a model that uses
only tokens pays. tiny_cnn is also measured at 96 px (the CPU preset's smaller crop).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

import mega  # noqa: F401
from mega.backbones import BACKBONES, build_backbone
from mega.backbones.tflite_plan import FLOP_FORMULAS

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "backbone"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _fwd_bwd_ms(m, x: torch.Tensor, device: str, repeats: int) -> float:
    """Median ms per image of a training-mode forward + backward (sum of tokens and pyramid)."""
    m.train()
    times = []
    for i in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        out = m(x)
        (out.tokens.mean() + sum(f.mean() for f in out.pyramid)).backward()
        _sync(device)
        if i:  # the first run is a warm-up
            times.append(time.perf_counter() - t)
    m.eval()
    m.zero_grad(set_to_none=True)
    return statistics.median(times) * 1000 / x.shape[0]


def measure(
    name: str,
    kwargs: dict,
    batches: list[int],
    device: str,
    repeats: int,
    backward: bool = False,
    large_batch: int = 0,
) -> list[str]:
    """Rows for one backbone: params, GFLOPs/img, median forward (and fwd+bwd) ms/img per batch size;
    ``large_batch`` is added for backbones under 2 GFLOP/img (the frozen CPU trunks cache features at
    large batches)."""
    t0 = time.perf_counter()
    m = build_backbone(name, **kwargs).to(device).eval()
    build_s = time.perf_counter() - t0
    trunk = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("neck."))
    neck = sum(p.numel() for n, p in m.named_parameters() if n.startswith("neck."))
    s = m.input_size
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x1 = torch.randn(1, 3, s, s, generator=g).to(device)
        with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fc:
            m(x1)
        gflops = fc.get_total_flops() / 1e9
        rows = []
        if large_batch and gflops < 2 and large_batch not in batches:
            batches = [*batches, large_batch]
        for b in batches:
            x = torch.randn(b, 3, s, s, generator=g).to(device)
            m(x)  # warm-up
            times = []
            for _ in range(repeats):
                _sync(device)
                t = time.perf_counter()
                m(x)
                _sync(device)
                times.append(time.perf_counter() - t)
            ms = statistics.median(times) * 1000 / b
            train = ""
            if backward:
                with torch.enable_grad():
                    train = f"  fwd+bwd {_fwd_bwd_ms(m, x, device, repeats):9.1f} ms/img"
            h, w = m.token_grid
            rows.append(
                f"{name:10s} {s:4d}px  tokens {h:2d}x{w:<2d}x{m.dim:<5d} trunk {trunk / 1e6:8.2f} M  "
                f"neck {neck / 1e6:6.2f} M  {gflops:8.2f} GFLOP/img  B={b}  fwd {ms:9.1f} ms/img{train}  "
                f"(build {build_s:.1f} s)"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="*", default=None, help="backbones (default: every registered one)")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument(
        "--large-batch", type=int, default=64, help="extra batch for backbones < 2 GFLOP/img (0: none)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-pyramid", action="store_true", help="measure without the pyramid neck")
    ap.add_argument("--backward", action="store_true", help="also time a training forward + backward")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.names or BACKBONES.names()
    print(
        f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s), median of {args.repeats}"
    )
    for name in names:
        cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"), resolve=True)
        cfg.pop("name")
        if args.no_pyramid:
            cfg["pyramid_scales"] = []
        sizes = [cfg["input_size"], 96] if name == "tiny_cnn" else [cfg["input_size"]]
        for size in sizes:
            for row in measure(
                name,
                {**cfg, "input_size": size},
                args.batches,
                args.device,
                args.repeats,
                args.backward,
                args.large_batch,
            ):
                print(row, flush=True)


if __name__ == "__main__":
    main()
