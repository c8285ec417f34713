"""4D-Humans webdataset tar shards, streamed (training sets too large for one disk or one machine).

A shard holds samples ``<key>.jpg`` + ``<key>.data.pyd`` (a pickled *list* of per-person dicts; one
training sample per person). Per person (HMR 2.0's training tars):
``center`` (2,) px, ``scale`` (2,) ``(w, h) / 200``, ``keypoints_2d`` (44, 3) px + conf (OpenPose-25 then
the first 19 SPIN joints), ``keypoints_3d`` (44, 4), ``body_pose`` (72,) axis-angle with the camera-frame
global orientation first, ``betas`` (10,), ``has_body_pose``, ``has_betas``, ``extra_info`` (dict).

COCO-17 keypoints come from the OpenPose slots, falling back to the SPIN slots where OpenPose has no
confidence. The 44-joint 3D keypoints are not SMPL joints, so ``joints_3d`` has conf 0 (as for SPIN
files); there is no translation and no intrinsics (CLIFF's default camera). Items are the same sample
dicts as :class:`mega.data.images.dataset.ImageNpzDataset` (one code path: :func:`make_sample`).

Order and randomness: each epoch the shard list is shuffled by ``(seed, epoch)``, split over ranks
(``webdataset.split_by_node``) and DataLoader workers, and samples pass a shuffle buffer seeded by
``(seed, rank, epoch, worker)``; a sample's augmentation is seeded by ``(seed, rank, epoch, index)`` with
``index`` a stable hash of ``<shard key>/<person>`` (also the sample's ``index``). Give at least
``world_size x num_workers`` shards (a rank or worker without a shard yields nothing).

This is an ``IterableDataset``: use it with a plain ``DataLoader`` (no sampler). The engine's
resumable batches (:mod:`mega.engine.batches`) need a map-style dataset, so ``train_hmr.py`` does not
stream shards yet.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from mega.data.crop import ImageDataError, box_size, decode_image, reduction_for
from mega.data.images.augment import Augmenter, AugmentParams, SharedEpoch, sample_rng
from mega.data.images.dataset import OPENPOSE25_TO_COCO17, SPIN24_TO_COCO17, make_sample
from mega.safe_pickle import UnsafePickleError, load_pickle

# COCO-17 keypoint k in the 44-joint layout: OpenPose slot, and the SPIN slot (25 + SPIN index) or -1.
_SPIN_FALLBACK = [25 + j if j < 19 else -1 for j in SPIN24_TO_COCO17]


def coco_from_44(kp: np.ndarray) -> np.ndarray:
    """(44, 3) 4D-Humans keypoints -> (17, 3) COCO-17 (OpenPose slots, else the SPIN slots)."""
    out = kp[OPENPOSE25_TO_COCO17].astype(np.float64)
    for k, j in enumerate(_SPIN_FALLBACK):
        if out[k, 2] <= 0 and j >= 0 and kp[j, 2] > 0:
            out[k] = kp[j]
    return out


def _field(person: Mapping[str, Any], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if key not in person:
        raise ImageDataError(f"{where}: person has no '{key}' (keys: {', '.join(sorted(person))})")
    arr = np.asarray(person[key], dtype=np.float64)
    if arr.shape != shape:
        raise ImageDataError(f"{where}: '{key}' has shape {arr.shape}, expected {shape}")
    return arr


def person_record(person: Mapping[str, Any], key: str, where: str, aspect: float = 1.0) -> dict[str, Any]:
    """One person dict of a ``data.pyd`` -> the record :func:`make_sample` takes."""
    scale = np.asarray(person.get("scale", np.zeros(2)), dtype=np.float64).reshape(-1)
    if scale.shape not in ((1,), (2,)):
        raise ImageDataError(f"{where}: 'scale' has shape {scale.shape}, expected (2,)")
    kp = _field(person, "keypoints_2d", (44, 3), where)
    has_pose = float(person.get("has_body_pose", 0.0)) > 0 and "body_pose" in person
    has_betas = float(person.get("has_betas", 0.0)) > 0 and "betas" in person
    pose = _field(person, "body_pose", (72,), where).reshape(24, 3) if has_pose else np.zeros((24, 3))
    betas = _field(person, "betas", (10,), where) if has_betas else np.zeros(10)
    return {
        "center": _field(person, "center", (2,), where),
        "bbox_size": float(box_size(scale[None], aspect=aspect)[0]),
        "kp_coco": coco_from_44(kp),
        "kp_smpl": np.zeros((24, 3)),
        "pose": pose,
        "betas": betas,
        "has_smpl": float(has_pose and has_betas),
        "joints_3d": np.zeros((24, 4)),
        "transl": np.zeros(3),
        "has_transl": 0.0,
        "cam_int": None,
        "gender": "neutral",
        "imgname": key,
    }


def stable_index(key: str, person: int) -> int:
    """A stable non-negative id of one person of one shard sample (CRC-32 of ``key/person``)."""
    return zlib.crc32(f"{key}/{person}".encode())


class ImageShardDataset(IterableDataset):
    """Streams 4D-Humans shards as cropped (and augmented) samples.

    Args:
        urls: shard paths / URLs, brace patterns allowed (``.../{000000..000017}.tar``), or a list.
        crop_size, bbox_aspect, augment, seed, rank, max_reduce: as :class:`ImageNpzDataset`.
        shuffle_buffer: samples held for shuffling (0: stream order).
        shuffle_shards: shuffle the shard list each epoch.
        min_keypoints: drop people with fewer confident 2D keypoints (HMR 2.0 drops <= 4).
        epoch_size: stop after this many samples per rank and epoch (None: one pass over the shards).
        name: label for messages.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        crop_size: int = 224,
        bbox_aspect: float = 1.0,
        augment: Mapping[str, Any] | None = None,
        seed: int = 0,
        rank: int = 0,
        shuffle_buffer: int = 100,
        shuffle_shards: bool = True,
        min_keypoints: int = 5,
        epoch_size: int | None = None,
        max_reduce: int = 8,
        name: str = "shards",
    ) -> None:
        super().__init__()
        pattern = [urls] if isinstance(urls, str) else list(urls)
        self.urls = [u for p in pattern for u in wds.shardlists.expand_urls(str(p))]
        if not self.urls:
            raise ImageDataError(f"{name}: no shards in {urls!r}")
        self.crop_size, self.bbox_aspect, self.seed, self.rank = int(crop_size), bbox_aspect, seed, rank
        self.augmenter = Augmenter(**dict(augment)) if augment is not None else None
        self.shuffle_buffer, self.shuffle_shards = shuffle_buffer, shuffle_shards
        self.min_keypoints, self.epoch_size, self.max_reduce, self.name = (
            min_keypoints,
            epoch_size,
            max_reduce,
            name,
        )
        self._epoch = SharedEpoch()

    @property
    def epoch(self) -> int:
        """The epoch of the augmentation seeds (shared with DataLoader workers)."""
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; call before creating the epoch's iterator (persistent workers see it)."""
        self._epoch.set(epoch)

    def _raw(self) -> Iterator[dict[str, Any]]:
        urls, epoch = list(self.urls), self.epoch
        if self.shuffle_shards:
            random.Random(f"{self.seed}/{epoch}").shuffle(urls)
        stream = wds.WebDataset(
            urls,
            shardshuffle=False,
            nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker,
            empty_check=False,
        )
        worker = get_worker_info()
        rng = random.Random(f"{self.seed}/{self.rank}/{epoch}/{worker.id if worker else 0}")
        buffer: list[dict[str, Any]] = []
        for raw in stream:
            if self.shuffle_buffer <= 0:
                yield raw
                continue
            buffer.append(raw)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        count, epoch = 0, self.epoch
        for raw in self._raw():
            key, url = raw.get("__key__", "?"), raw.get("__url__", "?")
            where = f"{url}: sample '{key}'"
            if "jpg" not in raw or "data.pyd" not in raw:
                have = ", ".join(k for k in raw if not k.startswith("__"))
                raise ImageDataError(f"{where} lacks '<key>.jpg' or '<key>.data.pyd' (has: {have})")
            try:
                persons = load_pickle(raw["data.pyd"], name=f"{where}: 'data.pyd'")  # restricted: data only
            except UnsafePickleError:
                raise
            except Exception as err:  # noqa: BLE001 (any unpickling failure is a corrupt file)
                raise ImageDataError(f"{where}: 'data.pyd' cannot be unpickled ({err})") from err
            if isinstance(persons, Mapping):
                persons = [persons]
            decoded: dict[int, tuple] = {}
            for p, person in enumerate(persons):
                rec = person_record(person, key, f"{where} person {p}", self.bbox_aspect)
                if (rec["kp_coco"][:, 2] > 0).sum() < self.min_keypoints or rec["bbox_size"] <= 0:
                    continue
                index = stable_index(key, p)
                rec["index"] = index
                rng, params = None, AugmentParams()
                if self.augmenter is not None:
                    rng = sample_rng(self.seed, self.rank, epoch, index)
                    params = self.augmenter.sample(rng)
                reduce = reduction_for(rec["bbox_size"] * params.scale, self.crop_size, self.max_reduce)
                if reduce not in decoded:
                    decoded[reduce] = decode_image(raw["jpg"], reduce=reduce, name=f"{url}: {key}.jpg")
                img, full, factor = decoded[reduce]
                yield make_sample(rec, img, factor, full, params, self.crop_size, rng)
                count += 1
                if self.epoch_size is not None and count >= self.epoch_size:
                    return


def shard_dataset(split: str, splits: Mapping[str, Any], **kwargs: Any) -> ImageShardDataset:
    """Shards from a config: ``splits`` maps split names to shard patterns (or lists of them)."""
    urls = splits.get(split) if splits else None
    if not urls:
        raise KeyError(f"image data 'shards' has no '{split}' split; set images.splits.{split}=PATTERN")
    return ImageShardDataset(urls, name=f"shards/{split}", **kwargs)
