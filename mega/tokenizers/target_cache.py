"""Ground-truth token ids remembered by content, so a sample seen before costs no tokenizer or body-model work.

The frozen tokenizer maps a body (pose and shape) to the same ids every time, so the training step's
target ids are a function of the ground truth alone. :class:`TargetIdCache` keys each sample by a
digest of the exact float32 bytes of its ground truth (body pose, betas and, for a tokenizer that
tokenizes it, the global orientation): a horizontally flipped sample has another pose, hence another
key and its own ids, and so has any other augmentation that changes the ground truth; nothing stale can
be served. Only the misses of a batch are meshed and encoded (as one sub-batch). Bounded: the least
recently used entries go first. Each process (rank) holds its own.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


class TargetIdCache:
    """Token ids per ground-truth content.

    Args:
        max_items: entries kept (each ~0.2 kB for 54 ids); the oldest unused go first.
    Attributes:
        hits, misses: samples served from the cache / encoded, since construction.
    """

    def __init__(self, max_items: int = 500_000) -> None:
        self.max_items = int(max_items)
        self._ids: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._ids)

    @staticmethod
    def keys(*fields: Tensor) -> list[bytes]:
        """One key per sample: a 128-bit digest of the samples' fields, each (B, ...) float, as float32 bytes."""
        rows = torch.cat([f.detach().reshape(f.shape[0], -1).float().cpu() for f in fields], 1).numpy()
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]

    def lookup(self, keys: list[bytes], encode: Callable[[Tensor], Tensor], device: torch.device) -> Tensor:
        """Ids (B, L) int64 of the samples ``keys``; ``encode(index)`` computes those of the misses.

        Args:
            keys: B keys (:meth:`keys`).
            encode: (M,) int64 indices of the missing samples in the batch -> their (M, L) ids.
            device: device of the returned ids.
        """
        found = [self._ids.get(k) for k in keys]
        missing = [i for i, row in enumerate(found) if row is None]
        missing_set = set(missing)
        if missing:
            fresh = encode(torch.as_tensor(missing, dtype=torch.long)).cpu().numpy()
            for i, row in zip(missing, fresh):
                found[i] = row.astype(np.int16 if row.max(initial=0) < 2**15 else np.int32)
                self._ids[keys[i]] = found[i]
            while len(self._ids) > self.max_items:
                self._ids.popitem(last=False)
        for i, k in enumerate(keys):
            if i not in missing_set:
                self._ids.move_to_end(k)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return torch.from_numpy(np.stack(found).astype(np.int64)).to(device)
