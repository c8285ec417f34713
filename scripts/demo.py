"""Meshes of the people in images, folders or video frames: crop -> model -> any sampler -> pictures + files.

    python scripts/demo.py inputs=[photo.jpg]                          # whole image as one person (warning)
    python scripts/demo.py inputs=[data/media/sports2d_demo.mp4] detector=blazepose \\
        sampler=uncertainty_guided refiner=pose_guided compare=deterministic                        # real people, refined on their keypoints
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
The code path is :mod:`mega.demo` (shared with the web page, ``scripts/app.py``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.atomic import write_json
from mega.demo import DemoInputError, People, decoding_label, find_checkpoint, frames, list_inputs, process
from mega.errors import entry_point
from mega.export import plain
from mega.hmr_checkpoint import load_hmr
from mega.samplers import SAMPLERS
from mega.viz.views import save_png, vstack

log = logging.getLogger("demo")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def sampler_preset(name: str) -> dict:
    """The sampler config ``configs/sampler/<name>.yaml`` (``compare`` names a preset)."""
    path = CONFIGS / "sampler" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise DemoInputError(f"compare={name}: no sampler preset {path}; known: {known}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def write_summary(
    path: Path, cfg: DictConfig, ckpt: Path, pictures: list[str], rows: list, seconds: float
) -> None:
    """``summary.json``: the model and decoding settings, the pictures, every person's row, the time taken."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    summary = {
        "checkpoint": str(ckpt),
        "sampler": resolved["sampler"],
        "refiner": resolved.get("refiner"),
        "num_samples": int(cfg.num_samples),
        "compare": resolved["compare"],
        "pictures": pictures,
        "people": plain(rows),
        "seconds": seconds,
    }
    write_json(path, summary)


@hydra.main(config_path="../configs", config_name="demo", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if int(cfg.num_samples) < 1:
        raise DemoInputError(f"num_samples={cfg.num_samples}: must be >= 1")
    if cfg.compare and cfg.compare not in SAMPLERS:  # a preset's name: its settings
        cfg.compare = sampler_preset(str(cfg.compare))
    items = list_inputs(list(cfg.inputs))
    device = torch.device(cfg.device)
    ckpt = find_checkpoint(cfg.checkpoint)
    model = load_hmr(ckpt, device=device, compile=bool(cfg.compile))
    people_of = People(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "model %s (%s tokenizer, %d px crops); sampler %s, Q = %d%s",
        ckpt,
        model.kind,
        model.backbone.input_size,
        decoding_label(cfg.sampler, cfg.get("refiner")),
        cfg.num_samples,
        f"; compared with {cfg.compare}" if cfg.compare else "",
    )
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
    write_summary(out_dir / "summary.json", cfg, ckpt, pictures, rows, time.perf_counter() - t0)
    n_images = len(pictures) - (1 if cfg.sheet and len(pictures) > 1 else 0)
    log.info(
        "%d images, %d people in %.1f s: pictures %s/*.png, meshes %s/people/, summary %s",
        n_images,
        len(rows),
        time.perf_counter() - t0,
        out_dir,
        out_dir,
        out_dir / "summary.json",
    )


if __name__ == "__main__":
    main()
