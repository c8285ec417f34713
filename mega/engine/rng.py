"""Explicit randomness: named generator streams seeded from ``(seed, rank, name)``, and RNG snapshots.

:class:`RngStreams` hands out one ``torch.Generator`` per named stream ("mask", "augment", ...), so adding
a random draw to one stream never shifts another. :func:`capture_rng_state` snapshots those streams and
the global torch (CPU and CUDA), numpy and python generators as plain containers that a checkpoint can
hold and ``torch.load(weights_only=True)`` can read back; :func:`restore_rng_state` puts them back.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def stream_seed(seed: int, rank: int, name: str) -> int:
    """A 63-bit seed derived from ``(seed, rank, name)``; stable across Python runs and platforms."""
    digest = hashlib.sha256(f"{seed}/{rank}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed the global torch, numpy and python generators from ``(seed, rank)``.

    Scripts call it with rank 0 on every rank before building the model, so that all ranks start from
    the same weights; the engine calls it again with the real rank before training (DiT's per-rank seed).
    """
    torch.manual_seed(stream_seed(seed, rank, "torch"))
    np.random.seed(stream_seed(seed, rank, "numpy") % 2**32)
    random.seed(stream_seed(seed, rank, "python"))


class RngStreams:
    """Named ``torch.Generator`` streams on one device, created on first use.

    Example:
        >>> rng = RngStreams(seed=0, rank=0)
        >>> noise = torch.randn(4, 3, generator=rng["augment"])

    Args:
        seed: the run's seed.
        rank: this process's rank (each rank draws different numbers).
        device: device of the generators (CUDA ops need a CUDA generator).
    """

    def __init__(self, seed: int, rank: int, device: torch.device | str = "cpu") -> None:
        self.seed, self.rank, self.device = seed, rank, torch.device(device)
        self._gens: dict[str, torch.Generator] = {}

    def __getitem__(self, name: str) -> torch.Generator:
        """The generator of stream ``name`` (created and seeded from ``(seed, rank, name)`` on first use)."""
        if name not in self._gens:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(stream_seed(self.seed, self.rank, name))
            self._gens[name] = gen
        return self._gens[name]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Stream name -> generator state (uint8 CPU tensor)."""
        return {name: gen.get_state() for name, gen in self._gens.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the streams saved by :meth:`state_dict` (creating them if needed)."""
        for name, value in state.items():
            self[name].set_state(value)


def capture_rng_state(streams: RngStreams) -> dict[str, Any]:
    """Global torch (CPU and current CUDA device), numpy and python states plus ``streams``' states."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": random.getstate(),
        "streams": streams.state_dict(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Mapping[str, Any], streams: RngStreams) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    npy = state["numpy"]
    np.random.set_state(
        ("MT19937", np.asarray(npy["key"], dtype=np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    streams.load_state_dict(state["streams"])
