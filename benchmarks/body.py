"""Body-model forward time and peak memory at B = 1, 64, 512 for `free` and a synthetic `smpl`.

    python benchmarks/body.py [--device cuda] [--threads 2]

Prints one row per (model, batch): median forward ms (no grad), forward+backward ms, and peak memory
(CUDA: torch.cuda.max_memory_allocated; CPU: growth of the process's peak RSS during the runs).
"""

from __future__ import annotations

import argparse
import resource
import tempfile

import torch
from timing import median_seconds

import mega  # noqa: F401
from mega.body import load_body_model
from mega.body.synthetic import write_synthetic_smpl


def measure(body, b: int, device: str, repeats: int) -> str:
    """One row: forward and forward+backward time and peak memory at batch size ``b``."""
    g = torch.Generator().manual_seed(0)
    go = (torch.randn(b, 3, generator=g) * 0.3).to(device)
    bp = (torch.randn(b, 23, 3, generator=g) * 0.2).to(device)
    betas = torch.randn(b, 10, generator=g).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        body(go, bp, betas)  # warm-up
        fwd = median_seconds(lambda: body(go, bp, betas), device, repeats, warmup=0) * 1000

    def fwd_bwd():
        p = bp.clone().requires_grad_()
        body(go, p, betas).vertices.square().mean().backward()

    both = median_seconds(fwd_bwd, device, max(2, repeats // 2), warmup=0) * 1000
    if device == "cuda":
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        mem = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return (
        f"B={b:4d}  fwd {fwd:8.2f} ms  fwd+bwd {both:8.2f} ms  {b / fwd * 1000:9.0f} bodies/s  "
        f"peak {mem:8.1f} MiB"
    )


def bench(body, name: str, device: str, repeats: int) -> None:
    """Rows for B = 1, 64, 512 (increasing, so CPU peak-RSS growth is attributable)."""
    body = body.to(device)
    for b in (1, 64, 512):
        print(f"{name:6s} {device:4s} {measure(body, b, device, repeats)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    bench(load_body_model("free"), "free", args.device, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_smpl(tmp, genders=("neutral",))
        bench(load_body_model("smpl", path=tmp), "smpl", args.device, args.repeats)


if __name__ == "__main__":
    main()
