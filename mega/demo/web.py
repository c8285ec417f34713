"""One request of the web page (``scripts/app.py``), with no Gradio in it: a checked upload -> the demo's
code path (:mod:`mega.demo.run`) -> pictures, a 3D scene and per-person files in a temporary folder.

Every problem a visitor can cause or meet is a :class:`PageError` whose message the page shows as it is:
an empty, huge or undecodable file, a video OpenCV cannot read, no person found, a sampler that needs
keypoints when none were found, a model checkpoint that does not load.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from mega.data.crop import decode_image
from mega.demo.examples import image_key
from mega.demo.inputs import IMAGE_SUFFIXES, VIDEO_SUFFIXES, DemoInputError, People, video_frames
from mega.demo.pictures import panels
from mega.demo.run import decode, export_people, person_mesh
from mega.detection import Person
from mega.errors import UserError
from mega.export import write_glb
from mega.inference import build_sampler
from mega.viz.views import PALETTE, save_png

log = logging.getLogger("demo")
ROTATIONS = ("head", "keypoints")
VIEWER_FOV = 0.8  # rad: the vertical field of view of the page's 3D view (Babylon.js's default camera)


class PageError(UserError, ValueError):
    """A problem with the visitor's input or the app's model; the message is shown in the page."""


@dataclass
class Limits:
    """What one request may cost: upload size, decoded image area, picture size, video frames."""

    max_upload_mb: float = 25.0
    max_pixels: int = 40_000_000  # larger decoded images are refused (a decompression bomb, or a huge scan)
    max_side: int = 1920  # larger images are scaled down to this longer side before anything else
    max_frames: int = 4  # video frames decoded per request
    every_n: int = 15  # of a video, every n-th frame
    keep_runs: int = 8  # older request folders are deleted


def check_upload(path: str | Path | None, limits: Limits) -> str:
    """``"image"`` or ``"video"`` for an uploaded file, or a :class:`PageError` naming what is wrong."""
    if not path:
        raise PageError("no input: drop a photo or a short clip, paste an image, or take a webcam snapshot")
    path = Path(path)
    if not path.is_file():
        raise PageError(f"the upload {path.name} is gone; upload it again")
    size = path.stat().st_size
    if size == 0:
        raise PageError(f"{path.name} is an empty file (0 bytes)")
    if size > limits.max_upload_mb * 2**20:
        raise PageError(
            f"{path.name} is too large: {size / 2**20:.1f} MB, the limit is {limits.max_upload_mb:g} MB"
        )
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix not in IMAGE_SUFFIXES and suffix:
        raise PageError(
            f"{path.name} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a video "
            f"({', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    return "image"


def read_image(path: Path, limits: Limits) -> tuple[np.ndarray, list[str]]:
    """An uploaded image as RGB uint8 (H, W, 3), scaled down to ``limits.max_side``; and notices."""
    from PIL import Image

    try:
        with Image.open(path) as im:  # the header only: refuse huge images before decoding them
            w, h = im.size
    except (OSError, SyntaxError, ValueError) as err:
        raise PageError(
            f"{path.name} is not an image that can be read (a broken file, or not an image)"
        ) from err
    if w * h > limits.max_pixels:
        raise PageError(
            f"{path.name} is too large: {w} x {h} pixels, the limit is {limits.max_pixels / 1e6:.0f} megapixels"
        )
    try:
        image = decode_image(path, name=path.name)[0]
    except Exception as err:  # noqa: BLE001  the decoders' errors name the file
        raise PageError(f"{path.name} is not an image that can be read: {err}") from err
    return fit(image, limits.max_side)


def fit(image: np.ndarray, max_side: int) -> tuple[np.ndarray, list[str]]:
    """Scale an RGB image down so its longer side is at most ``max_side``; returns it and notices."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, []
    k = max_side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return small, [f"scaled down from {w} x {h} to {small.shape[1]} x {small.shape[0]} pixels"]


def read_video(path: Path, limits: Limits) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """At most ``limits.max_frames`` frames (every ``limits.every_n``-th) of an uploaded clip; and notices."""
    try:
        out = [
            (stem, fit(rgb, limits.max_side)[0])
            for stem, rgb in video_frames(path, limits.every_n, limits.max_frames)
        ]
    except DemoInputError as err:
        raise PageError(
            f"{path.name}: OpenCV cannot read this video (unsupported codec, or not a video)"
        ) from err
    return out, [f"video: {len(out)} frames (every {limits.every_n}th, at most {limits.max_frames})"]


@dataclass
class FrameResult:
    """What the page shows of one image: panel PNGs by kind (input, overlay, side, sd), the GLB scene and
    the 3D view's camera distance from its centre (:func:`view_distance`), the files to download and one row
    per person (for the table)."""

    stem: str
    panels: dict[str, Path]
    glb: Path
    files: list[Path]
    rows: list[dict[str, Any]]
    view_distance: float = 3.0


def view_distance(meshes: list[np.ndarray], fov: float = VIEWER_FOV, spare: float = 1.1) -> float:
    """How far from the centre of the meshes' bounding box the 3D view's camera must be for all of them to
    be seen whole (from any direction): the box's bounding sphere fits the vertical field of view ``fov``,
    with ``spare`` to spare. The viewer's own framing (1.1 box diagonals) cuts off the head of a standing
    body. ``meshes``: per person (V, 3) vertices; the distance is in their unit."""
    points = np.concatenate([np.asarray(m, np.float64).reshape(-1, 3) for m in meshes])
    half_diagonal = float(np.linalg.norm(points.max(0) - points.min(0))) / 2
    return spare * max(half_diagonal, 1e-3) / float(np.sin(fov / 2))


@dataclass
class Session:
    """The app's state across requests: the model (loaded once), the people source, the example table.

    Args:
        checkpoint: ``hmr.pt`` to load (on the first request; a failure is a :class:`PageError`).
        work_dir: the temporary folder; each request writes into ``work_dir/runs/<id>/`` only.
        decodings: the page's sampler choices, ``{name: {"sampler": config, "refiner": config or None}}``
            (configs as ``configs/sampler/`` and ``configs/refiner/`` hold them; ``scripts/app.py`` reads them).
        detector: ``blazepose`` (people and keypoints; ``make detector``) or None (the whole image).
        examples: ``{image_key: people}`` of the bundled held-out images (their labelled keypoints).
        pictures: the demo's picture and export options (``panel_height``, ``zoom``, ``side_view``,
            ``sd_max_mm``, ``bbox_margin``, ``export``, ``max_people``).
    """

    checkpoint: Path
    work_dir: Path
    decodings: dict[str, dict[str, Any]]
    detector: str | None = None
    examples: dict[str, list[Person]] = field(default_factory=dict)
    pictures: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    device: str = "cpu"
    _model: Any = None
    _people: People | None = None

    def model(self):
        """The model, loaded on first use; a checkpoint that does not load is a :class:`PageError`."""
        if self._model is None:
            from mega.hmr_checkpoint import load_hmr

            try:
                self._model = load_hmr(self.checkpoint, device=torch.device(self.device))
            except Exception as err:  # noqa: BLE001  any load failure is shown in the page
                raise PageError(
                    f"the model checkpoint {self.checkpoint} does not load ({err}). Start the app with "
                    "checkpoint=PATH/hmr.pt, or train one with `make quickstart`"
                ) from err
        return self._model

    def people(self, image: np.ndarray) -> tuple[list[Person], str]:
        """The people of an image and where they come from (a line for the page)."""
        known = self.examples.get(image_key(image))
        if known is not None:
            return known, "held-out example: its labelled keypoints stand in for a detector"
        if self._people is None:
            cfg = OmegaConf.create(
                {
                    "max_people": self.pictures.get("max_people", 4),
                    "detections": None,
                    "detector": self.detector,
                }
            )
            self._people = People(cfg)
        h, w = image.shape[:2]
        found = self._people("upload", image)
        if self.detector is None:
            return found, (
                "no person detector installed (`make detector`): the whole image is taken as one "
                "person, without 2D keypoints"
            )
        if not found:
            raise PageError(f"no person found in the {w} x {h} image")
        return found, f"{len(found)} {'person' if len(found) == 1 else 'people'} found by BlazePose"

    def run(
        self, upload: str | Path | None, decoding: str, num_samples: int, rotation: str, seed: int = 0
    ) -> tuple[list[FrameResult], list[str]]:
        """One request: the upload (image or clip) through the demo's code path with the named decoding (a
        key of ``decodings``; Q samples when its sampler draws at random, else one). Returns one result per image
        (a clip: per frame) and the notices for the page."""
        if decoding not in self.decodings:
            raise PageError(f"sampler {decoding!r}: choose one of {', '.join(self.decodings)}")
        if rotation not in ROTATIONS:
            raise PageError(f"rotation {rotation!r}: choose one of {', '.join(ROTATIONS)}")
        chosen = self.decodings[decoding]
        if not 1 <= int(num_samples) <= 20:
            raise PageError(f"Q = {num_samples}: choose 1 to 20 samples")
        random = build_sampler(chosen["sampler"]).draws_at_random  # else Q samples would be Q copies
        q = int(num_samples) if random else 1
        kind = check_upload(upload, self.limits)
        path = Path(upload)
        if kind == "video":
            images, notices = read_video(path, self.limits)
        else:
            image, notices = read_image(path, self.limits)
            images = [(_stem(path), image)]
        if not random and int(num_samples) > 1 and chosen["sampler"]["name"] != "deterministic":
            notices.append(
                f"{decoding} decodes without drawing at random: one sample (Q does not apply, no SD map)"
            )
        model = self.model()
        run_dir = self._new_run_dir()
        cfg = OmegaConf.create(
            {
                **self.pictures,
                "sampler": chosen["sampler"],
                "refiner": chosen.get("refiner"),
                "num_samples": q,
                "rotation": rotation,
                "seed": int(seed),
                "compare": None,
            }
        )
        results = []
        for stem, image in images:
            people, source = self.people(image)
            if source not in notices:
                notices.append(source)
            try:
                batch, decoded = decode(image, people, model, cfg, torch.device(self.device))
            except DemoInputError as err:  # e.g. pose_guided / rotation=keypoints without keypoints
                raise PageError(
                    str(err).replace(
                        "pass detections=FILE or detector=blazepose",
                        "it works on the held-out examples, or with `make detector`",
                    )
                ) from err
            results.append(self._write(run_dir, stem, image, people, batch, decoded, model, cfg))
        return results, notices

    def _write(self, run_dir, stem, image, people, batch, decoded, model, cfg) -> FrameResult:
        shown = {
            p.kind: save_png(run_dir / f"{stem}_{p.kind}.png", p.image)
            for p in panels(image, stem, people, batch, model, decoded, cfg)
        }
        rows = export_people(stem, people, batch, model, decoded, cfg, run_dir)
        meshes = [person_mesh(decoded, i)[0] for i in range(len(people))]
        colors = [PALETTE[i % len(PALETTE)] for i in range(len(people))]
        glb = write_glb(
            run_dir / f"{stem}.glb",
            meshes,
            model.body.faces.numpy(),
            colors,
            [f"person_{i}" for i in range(len(people))],
        )
        files = [Path(f) for row in rows for f in row["files"].values()] + [glb]
        return FrameResult(stem, shown, glb, files, rows, view_distance(meshes))

    def _new_run_dir(self) -> Path:
        runs = self.work_dir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        old = sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime)
        for stale in old[: max(0, len(old) - self.limits.keep_runs + 1)]:
            shutil.rmtree(stale, ignore_errors=True)
        run = runs / f"{time.strftime('%H%M%S')}_{uuid.uuid4().hex[:8]}"
        run.mkdir()
        return run


def _stem(path: Path) -> str:
    """A file-name-safe stem of an uploaded file."""
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem)[:40]
    return keep or "image"


def person_table(results: list[FrameResult]) -> list[list[Any]]:
    """Rows of the page's table: image, person, where they came from, 2D error (px), before refinement,
    mean vertex SD (mm)."""
    out = []
    for res in results:
        for r in res.rows:
            fmt = lambda v: None if v is None else round(float(v), 1)  # noqa: E731
            out.append(
                [
                    res.stem,
                    r["person"],
                    r["source"],
                    fmt(r["reprojection_px"]),
                    fmt(r["reprojection_px_before_refinement"]),
                    fmt(r["mean_vertex_sd_mm"]),
                ]
            )
    return out
