"""A mixture of image datasets drawn with named ratios (``images=mix``: COCO + H36M + MPI-INF-3DHP + MPII).

Each epoch has a fixed plan of ``length`` items: item ``i`` comes from part ``c_i``, drawn with
probability ``ratios[c]`` by a generator seeded by ``(seed, epoch)``, and within a part items are
taken in a fresh random permutation, pass after pass, so no item repeats before the part is used up.
A part's augmentation is seeded by ``(seed, rank, epoch * 1000 + pass, index)`` (distinct when a small
part is drawn more than once in an epoch). Parts are :class:`ImageNpzDataset`-like (``get(index, epoch)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mega.data.images.augment import SharedEpoch

MAX_PASSES = 1000  # passes over one part in one epoch (folded into the part's augmentation epoch)


class MixedImageDataset(Dataset):
    """Named parts drawn with named ratios.

    Args:
        parts: name -> dataset with ``__len__`` and ``get(index, epoch)``.
        ratios: name -> non-negative weight (normalised; every part needs one, zero drops it).
        length: items per epoch; None = the total length of the parts with a positive weight.
        seed: seeds the plan.
    """

    def __init__(self, parts: Mapping[str, Dataset], ratios: Mapping[str, float], length: int | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        if set(parts) != set(ratios):
            raise KeyError(
                f"mix: ratios name {sorted(ratios)} but the parts are {sorted(parts)}; name each part once"
            )
        bad = {k: v for k, v in ratios.items() if not float(v) >= 0}
        if bad or sum(float(v) for v in ratios.values()) <= 0:
            raise ValueError(f"mix: ratios must be non-negative with a positive sum, got {dict(ratios)}")
        self.names = [k for k in parts if float(ratios[k]) > 0]
        self.parts = [parts[k] for k in self.names]
        if any(len(p) == 0 for p in self.parts):
            raise ValueError(
                f"mix: empty part(s) {[k for k, p in zip(self.names, self.parts) if len(p) == 0]}"
            )
        w = np.array([float(ratios[k]) for k in self.names])
        self.probs = w / w.sum()
        self.length = int(length) if length else sum(len(p) for p in self.parts)
        self.seed, self._epoch = seed, SharedEpoch()
        self._plan: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length

    @property
    def epoch(self) -> int:
        """The epoch of the augmentation seeds (shared with DataLoader workers)."""
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; call before creating the epoch's iterator (persistent workers see it)."""
        self._epoch.set(epoch)

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(part, index within the part, pass) of every item of ``epoch``: three (length,) int64 arrays."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1:]
        rng = np.random.default_rng([self.seed, epoch])
        part = rng.choice(len(self.parts), size=self.length, p=self.probs)
        index, passes = np.zeros(self.length, np.int64), np.zeros(self.length, np.int64)
        for c, ds in enumerate(self.parts):
            where = np.flatnonzero(part == c)
            n = len(ds)
            rounds = -(-len(where) // n)
            perm = np.concatenate([rng.permutation(n) for _ in range(rounds)])[: len(where)]
            index[where], passes[where] = perm, np.arange(len(where)) // n
        self._plan = (epoch, part.astype(np.int64), index, passes)
        return self._plan[1:]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(f"mix: index {i} out of range [0, {self.length})")
        epoch = self.epoch
        part, index, passes = self.plan(epoch)
        c = int(part[i])
        return self.parts[c].get(int(index[i]), epoch * MAX_PASSES + int(min(passes[i], MAX_PASSES - 1)))

    def counts(self, epoch: int | None = None) -> dict[str, int]:
        """Items per part in an epoch's plan."""
        part = self.plan(self.epoch if epoch is None else epoch)[0]
        return {k: int((part == c).sum()) for c, k in enumerate(self.names)}


SHARED_KEYS = ("crop_size", "bbox_aspect", "augment", "seed", "rank", "max_reduce", "pelvis_model")


def mix(
    split: str,
    parts: Mapping[str, Mapping[str, Any]],
    ratios: Mapping[str, float],
    build: Callable[..., Any],
    length: int | None = None,
    **shared: Any,
) -> MixedImageDataset:
    """Build each part from its own config (``parts.<name>``: a full image data config) with ``build``
    (:func:`mega.data.images.build_image_dataset`, bound at registration), then mix.

    ``shared`` keys (crop size, augmentation, seed, rank ...) override every part's.
    """
    unknown = set(shared) - set(SHARED_KEYS)
    if unknown:
        raise TypeError(f"mix: unknown keys {sorted(unknown)}; shared keys are {SHARED_KEYS}")
    built = {}
    for name, cfg in parts.items():
        if float(ratios.get(name, 0.0)) <= 0:
            continue
        built[name] = build(cfg, split, **shared)
    return MixedImageDataset(
        built, {k: v for k, v in ratios.items() if k in built}, length, shared.get("seed", 0)
    )
