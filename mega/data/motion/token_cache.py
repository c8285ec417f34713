"""Token ids of a whole motion set, computed once by the frozen tokenizer and cached on disk.

MEGA meshes and tokenises every sample on the fly in every epoch of pre-training. The tokenizer is
frozen there, so the ids of a motion set never change: here they are computed once (body model ->
canonical mesh or 6D pose -> ``tokenizer.encode``, in batches on the training device; a
:class:`mega.body.GenderedBody` meshes each frame with its sequence's gender) and stored as one
``.npz`` per (tokenizer, body model, data set, split). An epoch then costs only transformer compute.

The cache file name carries a key derived from

- the tokenizer's content hash (:func:`mega.tokenizers.tokenizer_hash`, the SHA-256 recorded in its
  checkpoint), so a retrained tokenizer gets a new file and the old ids are never reused;
- the body model's content hash (its buffers: meshes depend on the template and blend shapes);
- the data identity: dataset name, split and the dataset's own cache key (for
  :class:`mega.data.motion.dataset.MotionDataset` the name of its motion cache, a digest of the file list with
  sizes and mtimes and the reader options) and its length.

Files are written atomically (temporary file + ``os.replace``) by rank 0 while the other ranks wait; an
unreadable or inconsistent file is rebuilt. Layout of a cache file: ``ids`` (M, L) int16/int32 and
``meta`` (a JSON string with the key's parts, L, K and M).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from mega.body import sample_genders
from mega.tokenizers import Tokenizer, tokenizer_hash

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class TokenIds:
    """Token ids of a motion set and where they came from.

    Attributes:
        ids: (M, L) int64 ids in [0, K), row i = frame i of the dataset.
        path: the cache file.
        built: True when the ids were computed in this call, False when read from the cache.
        meta: the key's parts (tokenizer and body hashes, data identity) and L, K, M.
    """

    ids: Tensor
    path: Path
    built: bool
    meta: dict[str, Any]


class TokenDataset(Dataset):
    """Map-style dataset over cached token ids: item i is the (L,) int64 ids of frame i.

    Args:
        ids: (M, L) int64.
    """

    def __init__(self, ids: Tensor) -> None:
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"ids must be (M, L) int64, got {tuple(ids.shape)} {ids.dtype}")
        self.ids = ids

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, index: int) -> Tensor:
        """(L,) int64 ids of frame ``index``."""
        return self.ids[index]


class SequenceTokenDataset(Dataset):
    """MEGA's epoch: one item per *sequence* (sequences weighted equally, whatever their length).

    Item i is the sequence index i (a () int64 tensor); :class:`FramePicker` turns a batch of them into
    the ids of one random frame of each (in the training step, from a checkpointed generator).

    Args:
        ids: (M, L) int64 ids of every frame. starts, lengths: (S,) int64 frame range of each sequence
            (:func:`sequence_layout`).
    """

    def __init__(self, ids: Tensor, starts: Tensor, lengths: Tensor) -> None:
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"ids must be (M, L) int64, got {tuple(ids.shape)} {ids.dtype}")
        if starts.shape != lengths.shape or (lengths <= 0).any() or int((starts + lengths).max()) > len(ids):
            raise ValueError("sequence starts/lengths must be (S,) ranges of positive length inside the ids")
        self.ids, self.starts, self.lengths = ids, starts.long(), lengths.long()

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, index: int) -> Tensor:
        """() int64: the sequence index itself."""
        return torch.tensor(index, dtype=torch.long)


def sequence_layout(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """(S,) first frame and (S,) frame count of each sequence of a motion dataset (frames grouped by
    sequence, as :class:`mega.data.motion.dataset.MotionDataset` stores them)."""
    seq_id = getattr(dataset, "tensors", {}).get("seq_id")
    if seq_id is None:
        raise ValueError(
            f"{type(dataset).__name__} has no per-frame seq_id: sampling=sequences needs a MotionDataset"
        )
    seq_id = seq_id.long()
    values, lengths = torch.unique_consecutive(seq_id, return_counts=True)
    if len(values) != len(torch.unique(seq_id)):
        raise ValueError("the motion dataset's frames are not grouped by sequence")
    starts = torch.cumsum(lengths, 0) - lengths
    return starts, lengths


class FramePicker:
    """Turns a batch of sequence indices into the token ids of one uniformly random frame of each.

    One generator shared by all ranks draws the *global* batch's (B * W) uniforms and rank r keeps rows
    r, r + W, ... (the rows its ``DistributedSampler`` share holds), so the frames do not depend on the
    number of ranks; checkpointed through the engine's ``extra_state``.

    Args:
        data: the :class:`SequenceTokenDataset`. seed: generator seed. rank, world_size: this process.
    """

    def __init__(self, data: SequenceTokenDataset, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.data, self.rank, self.world_size = data, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, seq: Tensor) -> Tensor:
        """(B,) sequence indices -> (B, L) int64 ids on ``seq``'s device."""
        u = torch.rand(seq.shape[0] * self.world_size, generator=self.generator, dtype=torch.float64)
        u = u[self.rank :: self.world_size]
        cpu = seq.cpu()
        lengths = self.data.lengths[cpu]
        frame = self.data.starts[cpu] + torch.minimum((u * lengths).long(), lengths - 1)
        return self.data.ids[frame].to(seq.device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


@torch.no_grad()
def encode_motion(
    tokenizer: Tokenizer,
    dataset: Dataset,
    body: nn.Module,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> Tensor:
    """Token ids of every frame of a motion dataset, in dataset order.

    Args:
        tokenizer: frozen tokenizer (put in eval mode here).
        dataset: items with ``body_pose`` and ``betas``; ``dataset[list]`` may return a whole batch
            (:class:`mega.data.motion.dataset.MotionDataset` does), otherwise items are collated.
        body: the body model, on ``device``.
        batch_size: frames per tokenizer call.
        device: where meshes are made and encoded (default: the tokenizer's device).

    Returns:
        (M, L) int64 ids on the CPU.
    """
    device = torch.device(device) if device is not None else next(tokenizer.parameters()).device
    tokenizer.eval()
    chunks = []
    for start in range(0, len(dataset), batch_size):
        index = list(range(start, min(start + batch_size, len(dataset))))
        batch = _fetch(dataset, index)
        gender = batch.get("gender")
        batch = {k: v.to(device) for k, v in batch.items() if k in ("body_pose", "betas", "global_orient")}
        with sample_genders(body, gender):
            chunks.append(tokenizer.encode(tokenizer.inputs(batch, body)).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, tokenizer.num_tokens, dtype=torch.long)


def _fetch(dataset: Dataset, index: list[int]) -> dict[str, Any]:
    try:
        batch = dataset[index]
        if isinstance(batch, Mapping) and batch["body_pose"].shape[0] == len(index):
            return dict(batch)
    except (TypeError, IndexError, KeyError, AttributeError):
        pass
    return default_collate([dataset[i] for i in index])


def module_hash(module: nn.Module, name: str = "") -> str:
    """SHA-256 (hex) of a module's name and state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256(name.encode())
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_identity(dataset: Dataset, name: str, split: str) -> dict[str, Any]:
    """What identifies a motion set's frames: name, split, the dataset's own cache key and length.

    Args:
        dataset: a motion dataset; a ``cache_file`` attribute (MotionDataset) supplies its content key.
        name: the data config's name (``synthetic_motion``, ``amass``, ``bedlam``).
        split: ``train``, ``val`` or ``test``.

    Returns:
        A JSON-serialisable dict.
    """
    source = getattr(dataset, "cache_file", None)
    if source is None:
        raise ValueError(
            f"{type(dataset).__name__} has no 'cache_file' content key; token ids cannot be cached safely "
            "for it (give it a cache_file attribute that changes when its frames change)"
        )
    return {"name": name, "split": split, "source": Path(source).name, "frames": len(dataset)}


def _cache_meta(tokenizer: Tokenizer, body: nn.Module, identity: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "tokenizer_sha256": tokenizer_hash(tokenizer),
        "tokenizer": tokenizer.registry_name,
        "body_sha256": module_hash(body, getattr(body, "name", type(body).__name__)),
        "data": dict(identity),
        "num_tokens": tokenizer.num_tokens,
        "codebook_size": tokenizer.codebook_size,
    }


def cache_path(cache_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    """``<cache_dir>/tokens_<data>_<split>_<key>.npz`` with a 16-hex key over every part of ``meta``."""
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    data = meta["data"]
    return Path(cache_dir) / f"tokens_{data['name']}_{data['split']}_{key}.npz"


def _read(path: Path, meta: Mapping[str, Any]) -> Tensor | None:
    """The cached ids, or None (with a warning) when the file is unreadable or does not match ``meta``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            stored, ids = json.loads(str(f["meta"])), torch.from_numpy(f["ids"].astype(np.int64))
    except (OSError, ValueError, KeyError, EOFError) as err:
        log.warning("unreadable token cache %s (%s); rebuilding it", path, err)
        return None
    expected = (meta["data"]["frames"], meta["num_tokens"])
    if stored != dict(meta) or tuple(ids.shape) != expected:
        log.warning(
            "token cache %s does not match this tokenizer/data (shape %s); rebuilding it",
            path,
            tuple(ids.shape),
        )
        return None
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= meta["codebook_size"]):
        log.warning("token cache %s holds ids outside [0, %d); rebuilding it", path, meta["codebook_size"])
        return None
    return ids


def _write(path: Path, ids: Tensor, meta: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.int16 if meta["codebook_size"] <= np.iinfo(np.int16).max else np.int32
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids.numpy().astype(dtype), meta=np.array(json.dumps(dict(meta), sort_keys=True)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_build_token_ids(
    tokenizer: Tokenizer,
    dataset: Dataset,
    body: nn.Module,
    *,
    cache_dir: str | Path,
    data_name: str,
    split: str,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> TokenIds:
    """The token ids of ``dataset``, from the cache when it matches, else computed and cached.

    Under ``torch.distributed`` rank 0 builds the file while the other ranks wait, then every rank
    reads it. Collective: call it on every rank.

    Args:
        tokenizer: the frozen tokenizer.
        dataset: the motion set (see :func:`data_identity`).
        body: the body model, on ``device``.
        cache_dir: folder of the cache files.
        data_name: data config name (part of the key and of the file name).
        split: split name (part of the key and of the file name).
        batch_size: frames per tokenizer call when building.
        device: where meshes are made and encoded.

    Returns:
        :class:`TokenIds` with ids (M, L) int64 on the CPU.
    """
    meta = _cache_meta(tokenizer, body, data_identity(dataset, data_name, split))
    path = cache_path(cache_dir, meta)
    distributed = tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1
    rank = tdist.get_rank() if distributed else 0
    built = False
    if rank == 0:
        ids = _read(path, meta) if path.is_file() else None
        if ids is None:
            log.info(
                "encoding %d frames of %s/%s with tokenizer %s into %s",
                len(dataset),
                data_name,
                split,
                meta["tokenizer_sha256"][:12],
                path,
            )
            ids = encode_motion(tokenizer, dataset, body, batch_size=batch_size, device=device)
            _write(path, ids, meta)
            built = True
    if distributed:
        tdist.barrier()
    if rank != 0:
        ids = _read(path, meta)
        if ids is None:
            raise RuntimeError(f"rank {rank}: token cache {path} written by rank 0 cannot be read")
    log.info("token ids %s/%s: %d x %d from %s", data_name, split, ids.shape[0], ids.shape[1], path)
    return TokenIds(ids=ids, path=path, built=built, meta=dict(meta))
