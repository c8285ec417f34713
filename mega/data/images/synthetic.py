"""The embedded image benchmark ``synthetic_images``: the free body rendered into full images with GT.

Written on first use (:func:`ensure_synthetic_images`) or by ``python scripts/prepare_data.py
benchmark=synthetic_images``, deterministically from a seed, into ``root``::

    root/MANIFEST.json                  generator version and every option (checked on reuse)
    root/{train,val,test}.npz           labels in the SPIN / BEDLAM-CLIFF npz format (CONTRACTS.md)
    root/images/<split>/000123.jpg      256 x 256 RGB frames (``imgname`` is relative to ``root``)

Splits follow the procedural motion data's own train / val / test sequences
(:func:`mega.data.motion.dataset.synthetic_motion`), so test poses come from held-out sequences. Per image:

- a random frame of the split's motion, 10 random betas ~ N(0, 1) clipped to +-2.5, one neutral body;
- a perspective camera: focal length ``focal * max(W, H)``, all-round yaw about the person (or within
  ``facing_deg`` of the person's front), elevation and a small roll; principal point at the frame centre;
- the person's projected extent (longer side) ``box_px`` pixels, at a random place in the frame,
  fully inside it or (``truncated`` of the images) cut by a border by 15-50 % of the extent;
- "clothing": per-region colours (skin, hair, top, trousers, shoes; sleeve and leg lengths vary;
  left and right always alike) under Lambert shading from a random light, with a colour tint;
- a procedural background (:mod:`mega.data.images.procedural`), and in ``occluded`` of the images one or two
  textured shapes over the body; pixel noise and JPEG compression.

Labels (N images): ``imgname``; ``pose`` (N, 72) axis-angle with the global orientation in the
camera frame (OpenCV); ``shape`` (N, 10); ``trans`` (N, 3) so that ``body(pose, shape, trans)`` is the
camera-frame mesh; ``cam_int`` (N, 3, 3); ``S`` (N, 24, 4) camera-frame joints + 1; ``j2d_smpl``
(N, 24, 3) and ``j2d_coco`` (N, 17, 3) projected keypoints (pixels, continuous coordinates with the
origin at the image corner) + visibility (1 inside the frame and not under an occluder, else 0; body
self-occlusion does not count); ``center`` (N, 2) and ``scale`` (N,) = side / 200 of the square box
``bbox_margin`` x the in-frame extent of the projected mesh; ``has_smpl``; ``gender`` (neutral);
``img_size`` (N, 2) = (W, H); ``sequence`` / ``frame`` (the motion frame); ``truncation`` (N,) fraction
of vertices outside the frame; ``occlusion`` (N,) fraction of body pixels hidden by occluders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mega.atomic import read_json_object
from mega.data.errors import BenchmarkError
from mega.data.images.scene import (  # noqa: F401  (re-exported: the scene is part of this benchmark)
    SceneOptions,
    SceneRenderer,
    camera_rotation,
    heading,
)

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST = "MANIFEST.json"
DEFAULT_SIZES = {"train": 20000, "val": 1000, "test": 1000}
DEFAULT_MOTION = {
    "root": "data/synthetic_motion",
    "seed": 0,
    "sequences": {"train": 200, "val": 20, "test": 20},
}
BATCH = 64  # images drawn per random stream: the output depends on it, so it is not an option


def _seed(seed: int, split: str, stream: int) -> int:
    digest = hashlib.sha256(f"synthetic_images/{seed}/{split}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _motion_split(motion: Mapping[str, Any], split: str, create: bool = False):
    """The motion frames of ``split`` (a :class:`mega.data.motion.dataset.MotionDataset`).

    With ``create``, a missing motion folder is generated first (``ensure_synthetic_motion``). An
    existing folder is read as it is, whatever version of the motion generator wrote it, as long as
    its seed and sequence counts are the ones asked for: the images depend on the motion files, and
    a motion-code change must not stop a running image generation (nor invalidate a finished set).
    """
    from mega.data.motion import MotionDataset, ensure_synthetic_motion  # noqa: PLC0415
    from mega.data.motion.synth import MANIFEST as MOTION_MANIFEST  # noqa: PLC0415

    root = Path(motion["root"])
    wanted = {"seed": motion.get("seed", 0), "sequences": dict(motion.get("sequences") or {})}
    if not (root / MOTION_MANIFEST).is_file():
        if not create:
            raise FileNotFoundError(f"motion data {root} is missing (no {MOTION_MANIFEST})")
        ensure_synthetic_motion(root, seed=wanted["seed"], sequences=wanted["sequences"] or None)
    found = read_json_object(root / MOTION_MANIFEST, BenchmarkError)
    made = {"seed": found.get("seed"), "sequences": found.get("sequences")}
    if wanted["sequences"] and made != wanted:
        raise ValueError(f"{root} holds motion made with {made}, not {wanted}: pick another motion.root")
    return MotionDataset(root, split=split, split_protocol="folders")


def _motion_version(motion: Mapping[str, Any]) -> Any:
    from mega.data.motion.synth import MANIFEST as MOTION_MANIFEST  # noqa: PLC0415

    found = read_json_object(Path(motion["root"]) / MOTION_MANIFEST, BenchmarkError)
    return {k: found[k] for k in ("version", "fingerprint") if k in found}


def _encode(image: np.ndarray, opts: SceneOptions) -> bytes:
    bgr = np.ascontiguousarray(image[..., ::-1])
    if opts.image_format == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, opts.jpeg_quality])
    if not ok:
        raise RuntimeError("synthetic_images: image encoding failed")
    return buf.tobytes()


_WORKER: dict[str, Any] = {}  # per-process state of the batch workers


def _init_worker(
    root: str, split: str, seed: int, opts: SceneOptions, motion: Mapping[str, Any], threads: int
) -> None:
    torch.set_num_threads(threads)
    data = _motion_split(motion, split)
    renderer = _WORKER["renderer"] if _WORKER.get("opts") == opts else SceneRenderer(opts)
    _WORKER.update(root=Path(root), split=split, seed=seed, opts=opts, data=data,
                   seq_start=torch.as_tensor(data.seq_start), renderer=renderer)  # fmt: skip


def _render_batch(task: tuple[int, int, np.ndarray]) -> dict[str, np.ndarray]:
    """Batch ``k`` (its first image is number ``start``) of motion frames ``idx``: writes its images and
    returns its label arrays (with ``imgname``)."""
    k, start, idx = task
    w = _WORKER
    data, opts, split = w["data"], w["opts"], w["split"]
    idx = torch.as_tensor(idx)
    item = data[idx]
    gen = torch.Generator().manual_seed(_seed(w["seed"], split, k))
    out = w["renderer"].render(gen, item["global_orient"], item["body_pose"])
    names = []
    for j, image in enumerate(out.pop("images")):
        name = f"images/{split}/{start + j:06d}.{opts.image_format}"
        (w["root"] / name).write_bytes(_encode(image, opts))
        names.append(name)
    seq = item["seq_id"]
    out["imgname"] = np.array(names)
    out["sequence"] = np.array([data.seq_names[i] for i in seq.tolist()])
    out["frame"] = (idx - w["seq_start"][seq]).numpy().astype(np.int64)
    return out


def generate_split(
    root: str | Path,
    split: str,
    count: int,
    seed: int = 0,
    opts: SceneOptions | None = None,
    motion: Mapping[str, Any] | None = None,
    progress: bool = True,
    workers: int = 1,
    threads: int = 1,
) -> Path:
    """Render ``count`` images of ``split`` into ``root/images/<split>/`` and write ``root/<split>.npz``.

    The images of batch k (of :data:`BATCH`) come from the random stream ``(seed, split, k)`` and the
    motion frames from the stream ``(seed, split, -1)``, so a split is reproducible on its own and the
    result does not depend on ``workers`` (processes rendering batches in parallel) or ``threads``.
    Returns:
        the npz path (written atomically, after every image).
    """
    import multiprocessing  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    from mega.atomic import write_npz  # noqa: PLC0415

    opts = opts or SceneOptions()
    motion = dict(motion or DEFAULT_MOTION)
    root = Path(root)
    n_frames = len(_motion_split(motion, split, create=True))  # generates the motion data first if needed
    g = torch.Generator().manual_seed(_seed(seed, split, -1))
    frames = (
        torch.randperm(n_frames, generator=g)[:count]
        if count <= n_frames
        else torch.randint(0, n_frames, (count,), generator=g)
    )
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    tasks = [
        (k, start, frames[start : start + BATCH].numpy()) for k, start in enumerate(range(0, count, BATCH))
    ]
    init = (str(root), split, seed, opts, motion, threads)
    parts: dict[str, list[np.ndarray]] = {}
    bar = tqdm(total=count, desc=f"synthetic_images {split}", unit="img", disable=not progress)
    if (
        workers > 1
    ):  # a failing worker start raises BrokenProcessPool here (multiprocessing.Pool would retry forever)
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=init)
        results = pool.map(_render_batch, tasks)
    else:
        pool = None
        _init_worker(*init)
        results = map(_render_batch, tasks)
    try:
        for out in results:
            for key, value in out.items():
                parts.setdefault(key, []).append(value)
            bar.update(len(out["imgname"]))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    n = len(arrays["imgname"])
    arrays.update(
        has_smpl=np.ones(n, np.float32),
        gender=np.array(["neutral"] * n),
        img_size=np.tile(np.array([[opts.width, opts.height]], np.int64), (n, 1)),
    )
    arrays = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in arrays.items()}
    path = root / f"{split}.npz"
    write_npz(path, **arrays)
    return path


def _options(kwargs: Mapping[str, Any]) -> SceneOptions:
    fields = SceneOptions.__dataclass_fields__
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise TypeError(f"synthetic_images: unknown option(s) {unknown}; known: {sorted(fields)}")
    return SceneOptions(**{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in kwargs.items()})


def plain_options(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: PLC0415

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def ensure_synthetic_images(
    root: str | Path | Mapping[str, Any] = "data/synthetic_images",
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    motion: Mapping[str, Any] | None = None,
    threads: int = 1,
    progress: bool = True,
    workers: int = 1,
    **scene: Any,
) -> Path:
    """Generate the image benchmark into ``root`` unless it is already there (then return at once).

    Args:
        root: target folder, or a config: a dataset / data config (its ``root`` and ``generate``
            sub-mapping are used, other keys ignored) or a flat mapping of ``root`` and the options below.
        seed: generator seed. sizes: images per split (default 20000 / 1000 / 1000).
        motion: kwargs of :func:`mega.data.motion.dataset.synthetic_motion` (``root``, ``seed``, ``sequences``).
        threads: torch threads per process while generating. progress: tqdm bars.
        workers: processes rendering in parallel (the images do not depend on it, nor on ``threads``).
        **scene: :class:`SceneOptions` fields (``width``, ``height``, ``box_px`` ...).
    Returns:
        ``root``.
    Raises:
        ValueError: ``root`` holds images made with other options (delete it or pick another root).

    Concurrent callers (DDP ranks, two scripts) are safe: one generates into a temporary sibling
    folder and renames it into place; a caller that finds another's lock file waits for it.
    """
    if isinstance(root, Mapping) or hasattr(root, "keys"):
        cfg = dict(plain_options(root))
        if "generate" in cfg:  # a dataset / data config: its root and generator options, nothing else
            cfg = {"root": cfg.get("root", "data/synthetic_images"), **dict(cfg["generate"] or {})}
        return ensure_synthetic_images(**{"root": "data/synthetic_images", **cfg})
    root = Path(root)
    opts = _options(plain_options(scene))
    sizes = dict(plain_options(sizes) or DEFAULT_SIZES)
    motion = {**DEFAULT_MOTION, **dict(plain_options(motion) or {})}
    # What the images depend on. The motion folder's location is not part of it (a copy elsewhere
    # holds the same motions); the motion generator's version is recorded but not compared.
    content = {k: v for k, v in motion.items() if k != "root"}
    wanted = {"version": GENERATOR_VERSION, "seed": seed, "sizes": sizes, "scene": json.loads(json.dumps(asdict(opts))),
              "motion": json.loads(json.dumps(content))}  # fmt: skip

    if _made(root, wanted):
        return root
    if root.exists() and any(root.iterdir()):
        raise BenchmarkError(f"{root} exists but has no {MANIFEST}: it is not a generated image set; delete it "
                         "or choose another root")  # fmt: skip
    lock = root.parent / f".{root.name}.lock"
    root.parent.mkdir(parents=True, exist_ok=True)
    if not _take_lock(lock, root, lambda: _made(root, wanted)):
        return root  # another process generated it while this one waited
    try:
        if not _made(root, wanted):
            _generate(root, wanted, opts, motion, progress, workers, threads)
    finally:
        lock.unlink(missing_ok=True)
    return root


def _made(root: Path, wanted: dict[str, Any]) -> bool:
    """Whether ``root`` holds the image set ``wanted`` describes (its manifest); a set made with other options
    is a :class:`BenchmarkError`."""
    if not (root / MANIFEST).is_file():
        return False
    found = read_json_object(root / MANIFEST, BenchmarkError)
    made = {k: found.get(k) for k in wanted}
    if isinstance(made["scene"], dict):  # sets written before an option existed used its default
        made["scene"] = {**json.loads(json.dumps(asdict(SceneOptions()))), **made["scene"]}
    if made != wanted:
        raise BenchmarkError(
            f"{root} holds synthetic images made with {made} (its {MANIFEST}), not {wanted}: delete the "
            "folder or choose another root"
        )
    return True


def _take_lock(lock: Path, root: Path, done: Callable[[], bool]) -> bool:
    """Create ``lock`` (True), or wait while a live process holds it; False when ``done()`` turns true meanwhile.
    A lock whose process is gone is removed."""
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        except FileExistsError:
            if done():
                return False
            if not _lock_alive(lock):
                lock.unlink(missing_ok=True)
                continue
            log.info("waiting for another process generating %s (lock %s)", root, lock)
            time.sleep(5)


def _generate(
    root: Path,
    wanted: dict[str, Any],
    opts: SceneOptions,
    motion: dict,
    progress: bool,
    workers: int,
    threads: int,
) -> None:
    """Render every split of ``wanted`` into a temporary sibling folder, then rename it to ``root``."""
    for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by a killed generator
        if not _lock_alive_pid(stale.name.split("-")[-2]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    seed, sizes = wanted["seed"], wanted["sizes"]
    log.info("generating synthetic images into %s (seed %d, sizes %s)", root, seed, sizes)
    old_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        for split, count in sizes.items():
            generate_split(tmp, split, count, seed, opts, motion, progress, workers, threads)
        manifest = {**wanted, "motion_root": str(motion["root"]), "motion_version": _motion_version(motion),
                    "seconds": round(time.perf_counter() - t0, 1), "workers": workers}  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if root.is_dir():
            root.rmdir()
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(old_threads)


def _lock_alive(lock: Path) -> bool:
    try:
        pid = lock.read_text()
    except OSError:
        return True  # being written right now
    return _lock_alive_pid(pid) if pid else True


def _lock_alive_pid(pid: str) -> bool:
    """Whether process ``pid`` (a string) still runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, OverflowError):
        return False
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid) > 0
