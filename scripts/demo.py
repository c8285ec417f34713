"""Meshes of the people in images, folders or video frames: crop -> model -> any sampler -> pictures + files.

    python scripts/demo.py inputs=[photo.jpg]                          # whole image as one person (warning)
    python scripts/demo.py inputs=[data/media/sports2d_demo.mp4] detector=blazepose \\
        sampler=pose_guided compare=deterministic                        # real people, refined on their keypoints
    python scripts/demo.py inputs=[imgs/] detections=coco.json sampler=stochastic num_samples=10

People (boxes + COCO-17 keypoints) come from a detections file (COCO or OpenPose JSON), the offline
BlazePose extra (``detector=blazepose``; ``make detector``), or else the whole image with a warning.
Each person is cropped square (HMR2/CLIFF conventions, :mod:`mega.data.crop`), decoded by the model
with the sampler (:mod:`mega.inference`), and placed in the full image with CLIFF's default camera
(focal ``sqrt(w^2 + h^2)``). Per image ``<out_dir>/<stem>.png`` shows the detected keypoints, the
mesh over the image (and the ``compare`` sampler's), a side view, and with ``num_samples`` > 1 the
per-vertex standard deviation of the Q samples in mm (MEGA supplementary D). The 2D reprojection error
(full-image pixels, confidence-weighted mean over COCO-17) of each result against the keypoints is
written on its panel. ``<out_dir>/people/`` gets ``.obj`` / ``.ply`` / ``.npz`` / ``.json`` per person
(:mod:`mega.export`) and ``<out_dir>/summary.json`` one row per person. Nothing is downloaded.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.atomic import write_json
from mega.data.crop import (
    crop_matrix,
    decode_image,
    default_intrinsics,
    keypoints_to_crop,
    normalise_image,
    warp_crop,
)
from mega.detection import Person, read_detections, whole_image
from mega.errors import UserError, entry_point
from mega.export import export_person, plain
from mega.inference import build_sampler, load_hmr, recover
from mega.samplers.pose_guided import coco17_keypoints
from mega.viz import draw_keypoints, scalar_to_colors
from mega.viz.views import colormap_view, hstack, label, overlay, save_png, side_view, vstack

log = logging.getLogger("demo")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
COMPARE_COLOR = (0.82, 0.82, 0.78)  # the compare sampler's meshes: one warm grey (people keep the palette)


class DemoInputError(UserError, ValueError):
    """An input path, detections file, checkpoint or option of the demo is unusable."""


# ------------------------------------------------------------------------------------------ inputs
def find_checkpoint(path: str | None) -> Path:
    """``checkpoint``: the path given, else the quickstart's model, else the newest train_hmr run's."""
    if path:
        return Path(path)  # load_hmr names a missing file
    quick = Path("outputs/quickstart/train_hmr/hmr.pt")
    if quick.is_file():
        return quick
    runs = sorted(Path().glob("outputs/train_hmr/*/hmr.pt"), key=lambda p: p.stat().st_mtime)
    if runs:
        return runs[-1]
    raise DemoInputError(
        "no trained model: pass checkpoint=PATH/hmr.pt, or train one with `make quickstart` "
        "(or `python scripts/train_hmr.py`)"
    )


def list_inputs(inputs: list[str]) -> list[tuple[str, Path]]:
    """``("image" | "video", path)`` for every input; folders expand to their images (sorted)."""
    if not inputs:
        raise DemoInputError("no inputs: pass inputs=[image.jpg,folder/,video.mp4]")
    out = []
    for raw in inputs:
        path = Path(str(raw))
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise DemoInputError(
                    f"inputs: folder {path} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            out += [("image", p) for p in images]
        elif not path.is_file():
            raise DemoInputError(f"inputs: {path} does not exist")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            out.append(("image", path))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            out.append(("video", path))
        else:
            raise DemoInputError(
                f"inputs: {path} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a video "
                f"({', '.join(sorted(VIDEO_SUFFIXES))})"
            )
    return out


def video_frames(path: Path, every_n: int, max_frames: int | None):
    """Yield ``(stem, RGB uint8 frame)`` for every ``every_n``-th frame of a video (OpenCV)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DemoInputError(f"inputs: OpenCV cannot open video {path} (unsupported codec or not a video)")
    index = kept = 0
    try:
        while max_frames is None or kept < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every_n == 0:
                kept += 1
                yield f"{path.stem}_f{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
    if kept == 0:
        raise DemoInputError(f"inputs: no frame could be read from video {path}")


def frames(items: list[tuple[str, Path]], cfg: DictConfig):
    """Yield ``(stem, RGB uint8 image)`` over all inputs."""
    for kind, path in items:
        if kind == "video":
            yield from video_frames(path, max(1, int(cfg.every_n)), cfg.max_frames)
        else:
            yield path.stem, decode_image(path)[0]


class People:
    """``people(stem, image) -> list[Person]`` from a detections file, BlazePose, or the whole image."""

    def __init__(self, cfg: DictConfig) -> None:
        self.max_people = int(cfg.max_people)
        self.table = read_detections(cfg.detections) if cfg.detections else None
        self.detector = None
        self.warned = False
        if cfg.detector not in (None, "none", "blazepose"):
            raise DemoInputError(
                f"detector={cfg.detector!r}: use null (detections file / whole image) or blazepose"
            )
        if cfg.detector == "blazepose":
            from mega.detection.blazepose import BlazePoseDetector

            self.detector = BlazePoseDetector(max_people=self.max_people)  # one line naming `make detector`

    def __call__(self, stem: str, image: np.ndarray) -> list[Person]:
        h, w = image.shape[:2]
        if self.table is not None:
            if stem not in self.table:
                log.warning("%s: not in the detections file; using the whole image", stem)
                return [whole_image(w, h)]
            people = self.table[stem]
        elif self.detector is not None:
            people = self.detector(image)
        else:
            if not self.warned:
                log.warning("no detections file and no detector: each image is one person (whole image); "
                            "pass detections=FILE or detector=blazepose (`make detector`) for real people")  # fmt: skip
                self.warned = True
            return [whole_image(w, h)]
        people = sorted(people, key=lambda p: -p.score)[: self.max_people]
        return sorted(people, key=lambda p: float(p.box[0]))

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()


# ------------------------------------------------------------------------------------------- model
def crops(image: np.ndarray, people: list[Person], size: int, margin: float) -> dict[str, Any]:
    """Square crops and their geometry: img (N, 3, S, S), bbox_center (N, 2), bbox_size (N,), keypoints
    (N, 17, 3) normalised crop coordinates (None when a person has none), cam_int (N, 3, 3), img_size (N, 2)."""
    h, w = image.shape[:2]
    imgs, centers, sizes, kps = [], [], [], []
    for p in people:
        c, b = p.center_scale(margin)
        imgs.append(normalise_image(warp_crop(image, crop_matrix(c, b, size), size)))
        centers.append(c)
        sizes.append(b)
        kps.append(None if p.keypoints is None else keypoints_to_crop(p.keypoints, c, b))
    n = len(people)
    return {
        "img": torch.stack(imgs),
        "bbox_center": torch.tensor(np.array(centers), dtype=torch.float32),
        "bbox_size": torch.tensor(sizes, dtype=torch.float32),
        "keypoints": None if any(k is None for k in kps) else torch.tensor(np.stack(kps)),
        "cam_int": torch.tensor(default_intrinsics(np.array([w, h])), dtype=torch.float32).expand(n, 3, 3),
        "img_size": torch.tensor([[w, h]], dtype=torch.float32).expand(n, 2),
    }


def reprojection_px(model, rec_vertices, rec_joints, cam, batch, people) -> list[float | None]:
    """Confidence-weighted mean distance (full-image px) between the model's COCO-17 keypoints, projected by
    the crop camera, and each person's keypoints (None without keypoints). vertices (N, V, 3), joints (N, 24, 3)."""
    kp, valid = coco17_keypoints(model.body, rec_vertices, rec_joints)
    xy = model.project(kp, cam)  # (N, 17, 2) normalised crop coordinates
    px = batch["bbox_center"][:, None] + xy * batch["bbox_size"][:, None, None] / 2
    out = []
    for i, p in enumerate(people):
        if p.keypoints is None:
            out.append(None)
            continue
        target = torch.from_numpy(p.keypoints).float()
        w = target[:, 2] * valid * (target[:, 2] >= 0.1)
        err = (px[i] - target[:, :2]).norm(dim=-1)
        out.append(float((w * err).sum() / w.sum()) if float(w.sum()) > 0 else None)
    return out


def run_sampler(
    model, batch, sampler_cfg, num_samples: int, seed: int, device, rotation: str = "head"
) -> tuple[Any, Any]:
    sampler = build_sampler(
        OmegaConf.to_container(sampler_cfg) if isinstance(sampler_cfg, DictConfig) else sampler_cfg
    )
    kp = batch["keypoints"]
    if getattr(sampler, "refiner", None) is not None and kp is None:
        raise DemoInputError(
            "the pose_guided sampler needs 2D keypoints: pass detections=FILE or detector=blazepose"
        )
    if rotation == "keypoints" and kp is None:
        raise DemoInputError(
            "rotation=keypoints needs 2D keypoints: pass detections=FILE or detector=blazepose"
        )
    rec = recover(model, batch["img"].to(device), sampler, num_samples,
                  keypoints=None if kp is None else kp.to(device), seed=seed, rotation=rotation)  # fmt: skip
    return sampler, rec


def _err_text(errors: list[float | None]) -> str:
    vals = [e for e in errors if e is not None]
    return f"\n2D err {np.mean(vals):.1f} px" if vals else ""


# ---------------------------------------------------------------------------------------- pictures
def zoom_box(image: np.ndarray, people: list[Person], enabled: bool) -> tuple[int, int, int, int]:
    """Pixel region ``x0, y0, x1, y1`` of the pictures: the people's boxes with a margin (or all)."""
    h, w = image.shape[:2]
    if not enabled or not people or all(p.source == "whole_image" for p in people):
        return 0, 0, w, h
    boxes = np.stack([p.box for p in people])
    lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    pad = 0.25 * (hi - lo).max()
    x0, y0 = (max(0, int(v)) for v in lo - pad)
    x1, y1 = int(min(w, hi[0] + pad)), int(min(h, hi[1] + pad))
    return x0, y0, max(x1, x0 + 8), max(y1, y0 + 8)


def picture(image, stem, people, batch, model, results, cfg) -> np.ndarray:
    """One image's panels: keypoints, overlays (compare, then main), side view, SD map (Q > 1).

    The zoomed region is resampled to ``panel_height`` first and the meshes are rendered at that size
    (the intrinsics follow the crop and the scale), so panels are sharp whatever the input's size.
    """
    x0, y0, x1, y1 = zoom_box(image, people, cfg.zoom)
    h = int(cfg.panel_height)
    k = h / (y1 - y0)
    w = max(1, round((x1 - x0) * k))
    region = cv2.resize(
        image[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    )
    faces = model.body.faces
    K = batch["cam_int"][0].clone()  # noqa: N806
    K[:2, 2] -= torch.tensor([x0, y0], dtype=K.dtype)  # the zoomed region as its own image ...
    K[:2] *= k  # ... at the panel's scale
    to_panel = lambda xy: (xy - np.array([x0, y0])) * k  # noqa: E731  image px -> panel px
    shown = region.copy()
    thick = max(1, round(h / 250))
    for p in people:
        (bx0, by0), (bx1, by1) = to_panel(p.box[:2]), to_panel(p.box[2:])
        cv2.rectangle(shown, (int(bx0), int(by0)), (int(bx1), int(by1)), (255, 255, 0), thick)
        if p.keypoints is not None:
            kp = p.keypoints.copy()
            kp[:, :2] = to_panel(kp[:, :2])
            kp[:, 2] = np.where(kp[:, 2] >= 0.1, kp[:, 2], 0.0)
            shown = draw_keypoints(
                shown, kp, "coco17", radius=1.5 * thick + 0.5, thickness=thick, draw_hidden=False
            )
    src = people[0].source if people else "none"
    panels = [(shown, f"{stem}\n{len(people)} {'person' if len(people) == 1 else 'people'} ({src})")]
    main = results["main"]
    for key in ("compare", "main"):
        if key not in results:
            continue
        res = results[key]
        colors = None
        if key == "compare":
            colors = torch.tensor(COMPARE_COLOR)[None, None].expand(len(people), 1, 3)
        text = f"{res['name']}{_err_text(res['errors'])}"
        if res.get("initial_errors") is not None:
            text += (
                _err_text(res["initial_errors"]).replace("2D err", " before refinement", 1).replace("\n", "")
            )
        panels.append((overlay(region, res["placed"][:, 0], faces, K, colors=colors), text))
    if cfg.side_view:
        panels.append((side_view(main["placed"][:, 0], faces, h, round(0.6 * h)), "side view"))
    if main["sd_mm"] is not None:
        sd = main["sd_mm"]
        top = torch.quantile(sd.flatten(), 0.98)
        vmax = float(cfg.sd_max_mm) if cfg.sd_max_mm else max(1.0, math.ceil(float(top)))
        sd_map = colormap_view(
            main["placed"].mean(1), faces, sd, h, h, vmax, "SD mm", bar_width=max(48, h // 5)
        )
        panels.append((sd_map, f"vertex SD\nQ={main['placed'].shape[1]}"))
    scale = min(0.7, max(0.3, h / 650))
    return hstack([label(img, text, scale) for img, text in panels], h)


def process(stem, image, people, model, cfg, device, out_dir: Path) -> list[dict[str, Any]]:
    """Recover, draw and export the people of one image; returns their summary rows."""
    size = int(model.backbone.input_size)
    batch = crops(image, people, size, float(cfg.bbox_margin))
    q = int(cfg.num_samples)
    results: dict[str, dict[str, Any]] = {}
    runs = [("main", cfg.sampler, q)] + ([("compare", cfg.compare, 1)] if cfg.compare else [])
    geo = {k: batch[k].to(device) for k in ("bbox_center", "bbox_size", "cam_int", "img_size")}
    for key, sampler_cfg, n in runs:
        _, rec = run_sampler(model, batch, sampler_cfg, n, int(cfg.seed), device, str(cfg.rotation))
        transl = model.full_image_translation(rec.cam, geo).cpu()  # (N, 3)
        verts, joints, cam = rec.vertices.cpu(), rec.joints.cpu(), rec.cam.cpu()
        name = sampler_cfg if isinstance(sampler_cfg, str) else sampler_cfg.get("name", "sampler")
        res = {"name": f"{name}" + (f" Q={n}" if n > 1 else ""), "rec": rec, "transl": transl,
               "placed": verts + transl[:, None, None],
               "errors": reprojection_px(model, verts[:, 0], joints[:, 0], cam, batch, people),
               "sd_mm": None, "initial_errors": None}  # fmt: skip
        if n > 1:
            res["sd_mm"] = (
                1000 * (verts - verts.mean(1, keepdim=True)).square().sum(-1).mean(1).sqrt()
            )  # (N, V)
        if rec.initial_vertices is not None:
            init = rec.initial_vertices.cpu()[:, 0]
            j_init = torch.einsum("jv,nvc->njc", model.body.J_regressor.to(init), init)
            res["initial_errors"] = reprojection_px(model, init, j_init, cam, batch, people)
        results[key] = res
    save_png(out_dir / f"{stem}.png", picture(image, stem, people, batch, model, results, cfg))
    rows = []
    main = results["main"]
    rec = main["rec"]
    faces = model.body.faces.numpy()
    for i, p in enumerate(people):
        name = f"{stem}_p{i}"
        placed = main["placed"][i]  # (Q, V, 3)
        sd = None if main["sd_mm"] is None else main["sd_mm"][i]
        colors = None
        if sd is not None:
            colors = scalar_to_colors(sd, 0.0, max(1.0, float(sd.max()))).numpy()
        params = {"vertices": placed, "joints": rec.joints.cpu()[i] + main["transl"][i], "transl": main["transl"][i],
                  "global_rot": rec.global_rot.cpu()[i], "cam": rec.cam.cpu()[i],
                  "betas": None if rec.betas is None else rec.betas.cpu()[i],
                  "body_pose": None if rec.body_pose is None else rec.body_pose.cpu()[i],
                  "ids": rec.ids.cpu()[i], "vertex_sd_mm": sd, "box": p.box,
                  "keypoints": p.keypoints, "bbox_center": batch["bbox_center"][i], "bbox_size": batch["bbox_size"][i],
                  "cam_int": batch["cam_int"][i]}  # fmt: skip
        row = {"image": stem, "person": i, "box": p.box, "score": p.score, "source": p.source,
               "sampler": main["name"], "num_samples": int(placed.shape[0]), "kind": model.kind,
               "reprojection_px": main["errors"][i],
               "reprojection_px_before_refinement": None if main["initial_errors"] is None else main["initial_errors"][i],
               "mean_vertex_sd_mm": None if sd is None else float(sd.mean())}  # fmt: skip
        if "compare" in results:
            row["compare"] = {
                "sampler": results["compare"]["name"],
                "reprojection_px": results["compare"]["errors"][i],
            }
        mesh = placed.mean(0) if placed.shape[0] > 1 else placed[0]
        paths = export_person(out_dir / "people", name, mesh.numpy(), faces, params, row, colors, cfg.export)
        row["files"] = {k: str(v) for k, v in paths.items()}
        rows.append(row)
    return rows


@hydra.main(config_path="../configs", config_name="demo", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if int(cfg.num_samples) < 1:
        raise DemoInputError(f"num_samples={cfg.num_samples}: must be >= 1")
    items = list_inputs(list(cfg.inputs))
    device = torch.device(cfg.device)
    ckpt = find_checkpoint(cfg.checkpoint)
    model = load_hmr(ckpt, device=device)
    people_of = People(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("model %s (%s tokenizer, %d px crops); sampler %s, Q = %d%s", ckpt, model.kind,
             model.backbone.input_size, cfg.sampler if isinstance(cfg.sampler, str) else cfg.sampler.name,
             cfg.num_samples, f"; compared with {cfg.compare}" if cfg.compare else "")  # fmt: skip
    rows, pictures, t0 = [], [], time.perf_counter()
    try:
        for stem, image in tqdm(frames(items, cfg), desc="demo", unit="img", disable=not cfg.progress):
            people = people_of(stem, image)
            if not people:
                log.warning("%s: no person found", stem)
                continue
            rows += process(stem, image, people, model, cfg, device, out_dir)
            pictures.append(str(out_dir / f"{stem}.png"))
    finally:
        people_of.close()
    if cfg.sheet and len(pictures) > 1:  # all pictures in one, one row per image
        sheet = vstack([cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in pictures[: int(cfg.sheet)]])
        pictures.insert(0, str(save_png(out_dir / "sheet.png", sheet)))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    write_json(out_dir / "summary.json", {"checkpoint": str(ckpt), "sampler": resolved["sampler"],
                                          "num_samples": int(cfg.num_samples), "compare": resolved["compare"], "pictures": pictures,
                                          "people": plain(rows), "seconds": time.perf_counter() - t0})  # fmt: skip
    n_images = len(pictures) - (1 if cfg.sheet and len(pictures) > 1 else 0)
    log.info("%d images, %d people in %.1f s: pictures %s/*.png, meshes %s/people/, summary %s",
             n_images, len(rows), time.perf_counter() - t0, out_dir, out_dir, out_dir / "summary.json")  # fmt: skip


if __name__ == "__main__":
    main()
