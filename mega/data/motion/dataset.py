"""Motion data as a torch Dataset of per-frame SMPL parameters (tokenizer training, pre-training).

Items are body *parameters*, never meshes: the training step turns a batch into vertices and joints
with the body model on the training device (per-item meshes in ``__getitem__`` were a CPU bottleneck
in prior code). One item::

    {"global_orient": (3,), "body_pose": (23, 3), "betas": (10,), "transl": (3,),  # float32
     "gender": str, "seq_id": int64 ()}

and a default-collated batch has the same keys with a leading (B,) dim (``gender`` a list of str).
``dataset[list_of_B_indices]`` returns that batch directly (no per-item collation), for
``DataLoader(ds, sampler=BatchSampler(RandomSampler(ds, generator=g), B, drop_last=True), batch_size=None)``.

Four registered datasets (:data:`mega.data.motion.MOTION_DATASETS`), all the same class over AMASS-format
files (:mod:`mega.data.motion.amass`), differing in their defaults:

- ``synthetic_motion``: the embedded default, generated on first use into ``data/synthetic_motion``
  (:func:`ensure_synthetic_motion`); splits are the folders ``train/``, ``val/``, ``test/``;
- ``amass``: ``AMASS_ROOT/<SubDataset>/<Subject>/*.npz``; splits by sub-dataset (:data:`SPLITS`);
- ``bedlam``: BEDLAM's SMPL animation files (``<group>/<sequence>/motion_seq.npz``, y-up, 30 fps);
  splits by a stable hash of the top folder.

The first use of a (files, options, split) combination reads every file and writes one compact
``.npz`` cache (atomic write); later runs load that alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
import zlib
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from mega.data.motion.amass import GENDERS, MotionFileError, list_motion_files, load_motion_npz
from mega.data.motion.synth import ensure_synthetic_motion

log = logging.getLogger(__name__)

# Standard sub-dataset splits (names as in each source; matched through ``canonical_subset``).
_SPLIT_LISTS = {
    # Official AMASS / VPoser split (nghorbani/amass, prepare_data.py).
    "amass": {
        "train": "CMU MPI_Limits TotalCapture Eyes_Japan_Dataset KIT BML EKUT TCD_handMocap",
        "val": "HumanEva MPI_HDM05 SFU MPI_mosh",
        "test": "Transitions_mocap SSM_synced",
    },
    # HuMoR (davrempe/humor, amass_utils.py).
    "humor": {
        "train": "CMU MPI_Limits TotalCapture Eyes_Japan_Dataset KIT BioMotionLab_NTroje BMLmovi EKUT ACCAD",
        "val": "MPI_HDM05 SFU MPI_mosh",
        "test": "Transitions_mocap HumanEva",
    },
    # TokenHMR's pose-tokenizer split (saidwivedi/TokenHMR; newer folder names).
    "tokenhmr": {
        "train": "CMU KIT BMLrub DanceDB EyesJapan BMLmovi BMLhandball TotalCapture EKUT ACCAD TCDHands "
        "MPI-Limits",
        "val": "HumanEva HDM05 SFU MPI-Mosh",
        "test": "Transitions SSM",
    },
}
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    protocol: {split: tuple(names.split()) for split, names in table.items()}
    for protocol, table in _SPLIT_LISTS.items()
}
# Renamed AMASS folders: every name of a group maps to the first. "BML" (VPoser's list), "PosePrior",
# "MoSh" and "EyesJapanDataset" are inferred from later AMASS releases.
SUBSET_ALIASES: tuple[tuple[str, ...], ...] = (
    ("BMLrub", "BioMotionLab_NTroje", "BML"),
    ("EyesJapan", "Eyes_Japan_Dataset", "EyesJapanDataset"),
    ("HDM05", "MPI_HDM05"),
    ("Transitions", "Transitions_mocap"),
    ("SSM", "SSM_synced"),
    ("TCDHands", "TCD_handMocap"),
    ("MPI-Limits", "MPI_Limits", "PosePrior"),
    ("MPI-Mosh", "MPI_mosh", "MoSh"),
    ("DFaust", "DFaust_67"),
)
PROTOCOLS = (*SPLITS, "folders", "hash", "all")
_SPLIT_NAMES = {
    "train": "train",
    "val": "val",
    "vald": "val",
    "validation": "val",
    "test": "test",
    "all": "all",
}
_FIELDS = ("global_orient", "body_pose", "betas", "transl")
CACHE_VERSION = 1


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_CANONICAL = {_norm(alias): group[0] for group in SUBSET_ALIASES for alias in group}


def canonical_subset(name: str) -> str:
    """One name per AMASS sub-dataset across releases, e.g. ``MPI_HDM05`` -> ``HDM05`` (case, ``-`` and
    ``_`` insensitive; unknown names come back unchanged)."""
    return _CANONICAL.get(_norm(name), name)


def subset_split(subset: str, protocol: str) -> str | None:
    """``"train"``, ``"val"``, ``"test"`` or None (not in the protocol) for an AMASS sub-dataset folder."""
    key = _norm(canonical_subset(subset))
    for split, names in SPLITS[protocol].items():
        if key in {_norm(canonical_subset(n)) for n in names}:
            return split
    return None


def hash_split(group: str, val_fraction: float, test_fraction: float) -> str:
    """Stable split of a folder name by CRC32: test if h < test_fraction, val if h < test + val."""
    h = zlib.crc32(group.encode()) / 2**32
    return "test" if h < test_fraction else "val" if h < test_fraction + val_fraction else "train"


def split_files(
    root: str | Path, split: str, protocol: str, val_fraction: float = 0.05, test_fraction: float = 0.05
) -> list[Path]:
    """The motion files of ``split`` under ``root``.

    Args:
        root: data root. split: ``train``/``val``/``test``/``all``.
        protocol: a key of :data:`SPLITS` (by the top folder = sub-dataset), ``folders`` (the top folder
            is the split name), ``hash`` (by :func:`hash_split` of the top folder) or ``all``.
    Returns:
        sorted file paths.
    """
    root, split = Path(root), _SPLIT_NAMES.get(split, split)
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"unknown split {split!r}: use train, val, test or all")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; known: {PROTOCOLS}")
    if not root.is_dir():
        raise FileNotFoundError(f"motion data folder {root} does not exist (see data/README.md)")
    if protocol == "folders" and split != "all":
        return list_motion_files(root / split) if (root / split).is_dir() else []
    files = list_motion_files(root)
    if split == "all" or protocol in ("all", "folders"):
        return files
    top = [f.relative_to(root).parts[0] for f in files]
    if protocol == "hash":
        return [f for f, g in zip(files, top) if hash_split(g, val_fraction, test_fraction) == split]
    unknown = sorted({g for g in top if subset_split(g, protocol) is None})
    if unknown:
        log.info("%s: sub-datasets outside the '%s' split, ignored: %s", root, protocol, unknown)
    return [f for f, g in zip(files, top) if subset_split(g, protocol) == split]


def _read_one(path: Path, options: dict, skip_bad_files: bool):
    try:
        return load_motion_npz(path, **options)
    except MotionFileError as err:
        if not skip_bad_files:
            raise
        log.warning("skipped: %s", err)
        return None


def build_motion_arrays(
    files: list[Path],
    options: dict,
    min_frames: int = 1,
    num_workers: int = 0,
    skip_bad_files: bool = False,
    root: Path | None = None,
) -> dict[str, np.ndarray]:
    """Read ``files`` (see :func:`mega.data.motion.amass.load_motion_npz` for ``options``) into flat arrays.

    Returns:
        ``global_orient`` (M, 3), ``body_pose`` (M, 23, 3), ``betas`` (M, 10), ``transl`` (M, 3) float32,
        ``gender_id`` (M,) uint8 (index into ``GENDERS``), ``seq_id`` (M,) int32, and per sequence
        ``seq_names`` (S,) str (relative to ``root`` if given), ``seq_fps`` (S,) float32 and
        ``seq_start`` (S + 1,) int64 offsets.
    """
    read = partial(_read_one, options=options, skip_bad_files=skip_bad_files)
    if num_workers > 0:
        with ProcessPoolExecutor(num_workers) as pool:
            seqs = list(pool.map(read, files, chunksize=16))
    else:
        seqs = [read(f) for f in files]
    seqs = [s for s in seqs if s is not None and len(s) >= max(1, min_frames)]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    out = {
        k: np.concatenate([getattr(s, k) for s in seqs]) if seqs else np.zeros((0,) + shape, np.float32)
        for k, shape in zip(_FIELDS, ((3,), (23, 3), (10,), (3,)))
    }
    out["gender_id"] = np.repeat(np.array([GENDERS.index(s.gender) for s in seqs], np.uint8), lengths)
    out["seq_id"] = np.repeat(np.arange(len(seqs), dtype=np.int32), lengths)
    names = [Path(s.path).relative_to(root).as_posix() if root else s.path for s in seqs]
    out["seq_names"] = np.array(names, dtype=str)
    out["seq_fps"] = np.array([s.fps for s in seqs], dtype=np.float32)
    out["seq_start"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return out


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _rank() -> tuple[bool, int]:
    on = dist.is_available() and dist.is_initialized()
    return on, dist.get_rank() if on else 0


class MotionDataset(Dataset):
    """Per-frame SMPL parameters of AMASS-format files, held in memory (see the module docstring).

    Args:
        root: data folder. split: ``train``/``val``/``test``/``all``.
        split_protocol: see :func:`split_files`. val_fraction, test_fraction: for ``hash``.
        target_fps, trim, hand_joints, z_up, default_fps, fix_framerate: reader options
            (:func:`mega.data.motion.amass.load_motion_npz`).
        min_frames: drop sequences shorter than this after subsampling.
        cache_dir: where the cache goes (None: ``<root>/.cache``).
        num_workers: processes reading files when building the cache (0: this process).
        skip_bad_files: log and skip unreadable files instead of raising.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        split_protocol: str = "folders",
        target_fps: float | None = 30.0,
        trim: float = 0.0,
        hand_joints: str = "zeros",
        z_up: bool = True,
        default_fps: float | None = None,
        fix_framerate: bool = False,
        min_frames: int = 1,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        skip_bad_files: bool = False,
    ) -> None:
        self.root, self.split = Path(root), split
        files = split_files(root, split, split_protocol, val_fraction, test_fraction)
        if not files:
            raise FileNotFoundError(
                f"no motion files for split '{split}' (protocol '{split_protocol}') under {self.root}; "
                "check motion.root and motion.split_protocol"
            )
        options = {
            "target_fps": target_fps,
            "trim": trim,
            "hand_joints": hand_joints,
            "z_up": z_up,
            "default_fps": default_fps,
            "fix_framerate": fix_framerate,
        }
        stats = [(f.relative_to(self.root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        key = json.dumps(
            [CACHE_VERSION, options, min_frames, skip_bad_files, split_protocol, stats], sort_keys=True
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        cache = Path(cache_dir) if cache_dir is not None else self.root / ".cache"
        self.cache_file = cache / f"motion_{_SPLIT_NAMES.get(split, split)}_{digest}.npz"

        distributed, rank = _rank()
        if distributed and rank != 0:
            dist.barrier()  # rank 0 builds the cache first
        arrays = self._load_cache()
        if arrays is None:
            log.info("building the motion cache %s from %d files", self.cache_file, len(files))
            arrays = build_motion_arrays(files, options, min_frames, num_workers, skip_bad_files, self.root)
            _save_atomic(self.cache_file, arrays)
        if distributed and rank == 0:
            dist.barrier()
        self.tensors = {k: torch.from_numpy(arrays[k]) for k in (*_FIELDS, "gender_id", "seq_id")}
        self.seq_names = [str(s) for s in arrays["seq_names"]]
        self.seq_fps = arrays["seq_fps"]
        self.seq_start = arrays["seq_start"]
        if len(self) == 0:
            raise ValueError(
                f"{self.root} split '{split}': every sequence is shorter than min_frames={min_frames}"
            )
        log.info("motion %s/%s: %d sequences, %d frames", self.root, split, len(self.seq_names), len(self))

    def _load_cache(self) -> dict[str, np.ndarray] | None:
        if not self.cache_file.is_file():
            return None
        try:
            with np.load(self.cache_file, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as err:
            log.warning("unreadable motion cache %s (%s); rebuilding it", self.cache_file, err)
            return None

    def __len__(self) -> int:
        return int(self.tensors["global_orient"].shape[0])

    def __getitem__(self, index: int | list[int] | torch.Tensor) -> dict[str, Any]:
        """One frame, or a whole batch when ``index`` is a list / 1-D tensor of B indices.

        The batched form serves ``DataLoader(ds, sampler=BatchSampler(...), batch_size=None)``, which
        skips per-item collation: fields get a leading (B,) dim and ``gender`` is a list of B str.
        """
        if not isinstance(index, int):
            index = torch.as_tensor(index, dtype=torch.long)
        item: dict[str, Any] = {k: self.tensors[k][index] for k in _FIELDS}
        gender_id, seq_id = self.tensors["gender_id"][index], self.tensors["seq_id"][index].long()
        item["gender"] = (
            GENDERS[int(gender_id)] if gender_id.ndim == 0 else [GENDERS[g] for g in gender_id.tolist()]
        )
        item["seq_id"] = seq_id
        return item


def synthetic_motion(
    split: str = "train",
    root: str | Path = "data/synthetic_motion",
    seed: int = 0,
    sequences: Mapping[str, int] | None = None,
    activities: Mapping[str, float] | None = None,
    **kwargs: Any,
) -> MotionDataset:
    """The embedded default: generated on first use, splits are its ``train/val/test`` folders."""
    ensure_synthetic_motion(root, seed=seed, sequences=sequences, activities=activities)
    return MotionDataset(root, split=split, split_protocol="folders", **kwargs)


def amass(
    split: str = "train",
    root: str | Path = "data/datasets/amass",
    split_protocol: str = "tokenhmr",
    **kwargs: Any,
) -> MotionDataset:
    """AMASS (``root/<SubDataset>/<Subject>/*.npz``, Z-up) with a standard sub-dataset split."""
    _require(root, "AMASS", "https://amass.is.tue.mpg.de (SMPL+H G), unpacked as <root>/<SubDataset>/...")
    return MotionDataset(root, split=split, split_protocol=split_protocol, **kwargs)


def moyo(
    split: str = "train",
    root: str | Path = "data/datasets/moyo",
    split_protocol: str = "folders",
    **kwargs: Any,
) -> MotionDataset:
    """MOYO's AMASS-format release (``root/{train,val}/**/*.npz``, Z-up SMPL-X; see :mod:`mega.data.motion.amass`)."""
    from mega.data.motion.amass import check_moyo_folder

    check_moyo_folder(root)
    return MotionDataset(root, split=split, split_protocol=split_protocol, **kwargs)


def bedlam(
    split: str = "train",
    root: str | Path = "data/datasets/bedlam_animations",
    split_protocol: str = "hash",
    z_up: bool = False,
    default_fps: float | None = 30.0,
    **kwargs: Any,
) -> MotionDataset:
    """BEDLAM's SMPL animation files (y-up, 30 fps, no frame-rate key): what MEGA pre-trains on."""
    _require(root, "BEDLAM animation files", "https://bedlam.is.tue.mpg.de (SMPL neutral ground truth)")
    return MotionDataset(
        root, split=split, split_protocol=split_protocol, z_up=z_up, default_fps=default_fps, **kwargs
    )


def _require(root: str | Path, what: str, where: str) -> None:
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{what} not found at {root}: download from {where}, or set motion.root=PATH")
