"""Example inputs from what the repo already has: held-out synthetic test images (with their labelled
keypoints standing in for a detector) and a frame of a real video (``make media``).

``scripts/quickstart.py`` writes the held-out detections for its demo stages with
:func:`write_heldout_detections`; the web page (``scripts/app.py``) bundles the same images as its
examples with :func:`build_examples`, and finds an example's people again by the content of the image
(:func:`image_key`), whatever name the browser gives the file.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np

from mega.atomic import write_json
from mega.detection import Person, read_detections

log = logging.getLogger("demo")


def write_heldout_detections(root: str | Path, num_images: int, out: Path, margin: float = 1.2) -> list[str]:
    """COCO results JSON ``out`` for ``num_images`` evenly spaced test images of the synthetic image set at
    ``root`` (their labelled keypoints and boxes, with the box shrunk by ``margin`` so the demo's crop is the
    training crop); returns the image paths."""
    root = Path(root)
    with np.load(root / "test.npz", allow_pickle=False) as f:
        names, center, scale, kp = f["imgname"], f["center"], f["scale"], f["j2d_coco"]
    pick = np.linspace(0, len(names) - 1, min(int(num_images), len(names))).round().astype(int)
    dets, paths = [], []
    for i in pick:
        side = float(scale[i]) * 200.0 / margin
        x0, y0 = center[i] - side / 2
        dets.append(
            {
                "image_id": Path(str(names[i])).name,
                "keypoints": kp[i].reshape(-1).tolist(),
                "bbox": [float(x0), float(y0), side, side],
                "score": 1.0,
            }
        )
        paths.append(str(root / str(names[i])))
    write_json(out, dets)
    return paths


def image_key(image: np.ndarray) -> str:
    """A content key of an RGB uint8 image (H, W, 3): the SHA-256 of its shape and pixels."""
    h = hashlib.sha256(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def video_frame(path: Path, index: int) -> tuple[int, np.ndarray] | None:
    """Frame ``index`` of a video (RGB uint8), or the last one if it is shorter, with its index; None if no
    frame reads."""
    cap = cv2.VideoCapture(str(path))
    frame, got = None, -1
    try:
        for i in range(index + 1):
            ok, bgr = cap.read()
            if not ok:
                break
            frame, got = bgr, i
    finally:
        cap.release()
    return None if frame is None else (got, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def build_examples(
    images_root: str | Path | None, num_images: int, video: str | Path | None, frame: int, out_dir: Path
) -> tuple[list[Path], dict[str, list[Person]]]:
    """Copy the example inputs into ``out_dir``: ``num_images`` held-out test images of ``images_root``
    (skipped when it has no ``test.npz``) and frame ``frame`` of ``video`` (skipped when absent).

    Returns the example files and ``{image_key: people}`` of the held-out images (their labels)."""
    from mega.data.crop import decode_image

    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    table: dict[str, list[Person]] = {}
    root = Path(images_root) if images_root else None
    if root is not None and (root / "test.npz").is_file() and num_images > 0:
        dets = out_dir / "heldout_detections.json"
        paths = write_heldout_detections(root, num_images, dets)
        people = read_detections(dets)
        for src in map(Path, paths):
            dst = out_dir / f"heldout_{src.name}"
            shutil.copyfile(src, dst)
            table[image_key(decode_image(dst)[0])] = people[src.stem]
            files.append(dst)
    elif root is not None:
        log.info("no held-out examples: %s/test.npz not found (`make quickstart` makes it)", root)
    if video and Path(video).is_file():
        got = video_frame(Path(video), frame)
        if got is not None:
            dst = out_dir / f"{Path(video).stem}_f{got[0]:06d}.png"
            cv2.imwrite(str(dst), got[1][..., ::-1])
            files.append(dst)
    return files, table
