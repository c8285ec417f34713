"""This rank's batches, epoch after epoch, resumable in the middle of an epoch.

The order comes from a ``DistributedSampler`` (shuffle seeded by ``seed + epoch``, ``set_epoch`` every
epoch, ``drop_last`` so every rank gets as many full batches). Across ranks, batch ``k`` of epoch ``e``
covers positions ``[k * B * W, (k + 1) * B * W)`` of the epoch's permutation whatever the world size
``W``, so one process with batch ``B * W`` sees the same samples per step as ``W`` ranks with ``B``.

Resuming at ``(epoch, position)`` rebuilds the epoch's permutation and skips the first
``position * batch_size`` indices without loading them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from mega.engine.dist import DistInfo
from mega.engine.preemption import ignore_in_worker
from mega.engine.rng import stream_seed


class _SkipSampler(Sampler[int]):
    """Yields ``inner``'s indices after the first ``start`` (the ones consumed before a resume)."""

    def __init__(self, inner: DistributedSampler) -> None:
        self.inner, self.start = inner, 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.inner), self.start, None)

    def __len__(self) -> int:
        return max(len(self.inner) - self.start, 0)


class ResumableBatches:
    """Endless iterator over this rank's batches; ``epoch``/``position`` say where it stands.

    Args:
        dataset: map-style dataset.
        batch_size: samples per batch on this rank.
        dist: rank and world size (and the device, for pinned memory).
        seed: shuffle seed (the same on every rank).
        num_workers: DataLoader worker processes.
        collate_fn: DataLoader collate function (None = default).

    Attributes:
        epoch: epoch of the next batch.
        position: batches of ``epoch`` already yielded.
        per_epoch: full batches per epoch on this rank.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        dist: DistInfo,
        seed: int,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.sampler = DistributedSampler(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.per_epoch = len(self.sampler) // batch_size
        if self.per_epoch == 0:
            raise ValueError(
                f"a dataset of {len(self.sampler) * dist.world_size} samples gives no full batch of "
                f"{batch_size} on each of {dist.world_size} ranks; lower engine.batch_size"
            )
        self.batch_size, self.seed, self.rank = batch_size, seed, dist.rank
        self._skip = _SkipSampler(self.sampler)
        self._gen = torch.Generator()  # worker base seeds; explicit so the global RNG is never drawn from
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._skip,
            drop_last=True,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=dist.device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=self._gen,
            worker_init_fn=ignore_in_worker if num_workers > 0 else None,  # preemption stops the rank
        )
        self.epoch, self.position = 0, 0

    def __iter__(self) -> Iterator[Any]:
        while True:
            self.sampler.set_epoch(self.epoch)
            if hasattr(self.loader.dataset, "set_epoch"):  # image datasets seed augmentation by epoch
                self.loader.dataset.set_epoch(self.epoch)
            self._skip.start = self.position * self.batch_size
            self._gen.manual_seed(stream_seed(self.seed, self.rank, f"loader/{self.epoch}"))
            for batch in self.loader:
                self.position += 1
                yield batch
            self.epoch, self.position = self.epoch + 1, 0


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a nested batch (tensors, mappings, lists, (named)tuples, dataclasses) to ``device``.

    Args:
        batch: what the DataLoader yielded.
        device: target device.

    Returns:
        The same structure with every tensor on ``device``; other leaves unchanged.
    """
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        fields = [f.name for f in dataclasses.fields(batch) if f.init]
        return dataclasses.replace(
            batch, **{name: to_device(getattr(batch, name), device) for name in fields}
        )
    return batch
