"""Small training-loop settings shared by the engine tests (``mega.engine.EngineConfig`` keys)."""

from __future__ import annotations

from typing import Any

#: 4 samples a batch, lr 1e-2 in fp32, a log line every update, no progress bar.
SMALL: dict[str, Any] = {
    "batch_size": 4,
    "lr": 1e-2,
    "precision": "fp32",
    "log_every": 1,
    "progress_bar": False,
}


def small_engine(**settings: Any) -> dict[str, Any]:
    """:data:`SMALL` with ``settings`` (``max_steps``, ``warmup_steps``, ``ckpt_every`` ...) on top."""
    return {**SMALL, **settings}
