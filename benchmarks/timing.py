"""Timing shared by the benchmarks: wait for the device, the median of repeated runs, a matmul's GFLOP/s.

Imported by the benchmark scripts as ``from timing import ...`` (``python benchmarks/<name>.py`` puts this
folder first on the path); ``make bench`` runs every file here, this one prints nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    """Wait for the queued CUDA work (timings measure the work, not the launch); nothing on the CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(
    device: str, n: int, repeats: int, dtype: torch.dtype = torch.float32, warmup: int = 1
) -> float:
    """Measured GFLOP/s of an (n x n) @ (n x n) matmul in ``dtype``: the device's practical peak."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, device, repeats, warmup) / 1e9
