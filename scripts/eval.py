"""Score a trained model (any sampler) or a built-in predictor on a benchmark under a named protocol.

    python scripts/eval.py benchmark=synthetic_images protocol=smpl24 body_model=free checkpoint=outputs/train_hmr/<run>/hmr.pt
    python scripts/eval.py ... checkpoint=... sampler=stochastic num_samples=10        # MEGA's stochastic mode
    python scripts/eval.py ... checkpoint=... sampler=uncertainty_guided sampler.steps=10
    python scripts/eval.py ... checkpoint=... sampler=uncertainty_guided refiner=pose_guided keypoints.noise_px=3 keypoints.drop=0.1
    python scripts/prepare_data.py benchmark=3dpw root=/path/to/3DPW     # once, then:
    python scripts/eval.py benchmark=3dpw protocol=3dpw_spin14 predictor=mean_pose
    torchrun --nproc_per_node=8 scripts/eval.py benchmark=3dpw protocol=3dpw_spin14 checkpoint=...

Writes ``per_sample.csv`` and ``summary.json`` into the run directory and prints a table; every result
carries the protocol's name, and the summary records the checkpoint, sampler, Q and the speed (images/s
over the run; seconds per image at batch 1 and per decoding iteration, GenHMR's AITI). The synthetic
benchmark is read through its image dataset (crops and 2D keypoints included); 3DPW / EMDB through
their prepared index, cropped around each person's box. Under ``torchrun`` the ranks split the
samples and rank 0 writes the gathered rows in dataset order (the files equal a one-process run's).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.data.benchmarks.eval_views import build_eval_dataset
from mega.data.benchmarks.index import make_body_factory
from mega.data.images import IMAGE_DATASETS
from mega.engine.dist import cleanup_dist, setup_dist
from mega.errors import entry_point
from mega.metrics.evaluator import Evaluator, format_table, write_results
from mega.metrics.predictors import build_predictor
from mega.metrics.protocols import build_protocol
from mega.stage_inputs import find_hmr

log = logging.getLogger("eval")


def batch1_timing(
    model: Any, dataset: Any, sampler: Any, refiner: Any, cfg: DictConfig, device: torch.device
) -> dict[str, float]:
    """Seconds per image at batch 1 (median over ``cfg.timing.images`` images after one warm-up)."""
    from mega.inference import KeypointSource, recover

    kp_source = KeypointSource(**cfg.keypoints)
    needs_kp = refiner is not None or cfg.rotation == "keypoints"
    times = []
    for i in range(min(cfg.timing.images + 1, len(dataset))):
        batch = torch.utils.data.default_collate([dataset[i]])
        kp = kp_source(batch) if needs_kp else None
        t0 = time.perf_counter()
        recover(
            model,
            batch["img"].to(device),
            sampler,
            cfg.num_samples,
            refiner=refiner,
            keypoints=kp,
            seed=i,
            rotation=cfg.rotation,
            precision=cfg.precision,
        )
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    sec = float(np.median(times)) if times else float("nan")
    steps = sampler.steps + (refiner.iterations if refiner is not None else 0)
    return {
        "seconds_per_image_batch1": sec,
        "iterations": steps,
        "seconds_per_iteration_batch1": sec / max(1, steps),
    }


def eval_root(cfg: DictConfig, model: Any) -> str | None:
    """``root``: as given, else, for the image benchmark the model was trained on, the images it was
    trained with (after ``make quickstart``: its test split), else the dataset config's."""
    if cfg.root or model is None or cfg.benchmark.name not in IMAGE_DATASETS:
        return cfg.root
    trained = model.training_config or {}
    data = trained.get("images") or trained.get("data") or {}  # "data": hmr.pt files before the rename
    return data.get("root") if data.get("name") == cfg.benchmark.name else None


def model_under_test(cfg: DictConfig, device):
    """The trained model (``checkpoint``; null: the quickstart's, else the newest run's), its sampler and
    refiner, the evaluator's predictor and the row label: ``(checkpoint, model, sampler, refiner, predictor,
    label)``."""
    from mega.hmr_checkpoint import load_hmr
    from mega.inference import KeypointSource, build_sampler, decoding_label, model_predictor
    from mega.refiners import build_refiner

    checkpoint = find_hmr(cfg.checkpoint)
    model = load_hmr(checkpoint, device, compile=bool(cfg.compile))
    sampler = build_sampler(OmegaConf.to_container(cfg.sampler, resolve=True))
    refiner = build_refiner(OmegaConf.to_container(cfg.refiner, resolve=True))
    keypoints = KeypointSource(**cfg.keypoints)
    predictor = model_predictor(
        model,
        sampler,
        cfg.num_samples,
        keypoints,
        cfg.seed,
        cfg.rotation,
        refiner=refiner,
        precision=cfg.precision,
    )
    label = f"model[{decoding_label(cfg.sampler, cfg.refiner)}, Q={cfg.num_samples}]"
    return checkpoint, model, sampler, refiner, predictor, label


def write_and_print(result, cfg: DictConfig) -> None:
    """The per-sample CSV and the summary JSON into ``out_dir``; the table and the speed line on stdout."""
    csv_path, json_path = write_results(result, Path(cfg.out_dir))
    print(format_table(result.summary))
    speed = result.summary["speed"]
    line = f"speed: {speed['images_per_second']:.1f} images/s at batch {cfg.batch_size}"
    if "seconds_per_image_batch1" in speed:
        line += (
            f"; {speed['seconds_per_image_batch1'] * 1e3:.1f} ms/image at batch 1 "
            f"({speed['seconds_per_iteration_batch1'] * 1e3:.1f} ms per iteration)"
        )
    print(f"{line}\nper-sample CSV: {csv_path}\nsummary JSON:   {json_path}")


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = setup_dist(cfg.device)
    try:
        name = cfg.predictor or "model"
        model = sampler = refiner = checkpoint = None
        if name == "model":
            checkpoint, model, sampler, refiner, predictor, label = model_under_test(cfg, dist.device)
        else:
            predictor, label = build_predictor(name), name
        crop = model.backbone.input_size if model is not None else None
        dataset = build_eval_dataset(cfg.benchmark, crop, root=eval_root(cfg, model), limit=cfg.limit)
        bodies = make_body_factory(cfg.body_model.name, cfg.body_model.path)
        protocol = build_protocol(**OmegaConf.to_container(cfg.protocol))
        evaluator = Evaluator(
            protocol,
            bodies,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            device=dist.device,
            progress=cfg.progress,
        )
        log.info(
            "evaluating %s on %s (%d samples) under protocol %s",
            label,
            cfg.benchmark.name,
            len(dataset),
            protocol.name,
        )
        t0 = time.perf_counter()
        result = evaluator.run(dataset, predictor, predictor_name=label)
        seconds = time.perf_counter() - t0
        result.summary["run"] = {
            "checkpoint": str(checkpoint) if checkpoint is not None else None,
            "sampler": OmegaConf.to_container(cfg.sampler),
            "refiner": OmegaConf.to_container(cfg.refiner),
            "num_samples": cfg.num_samples,
            "rotation": cfg.rotation,
            "precision": cfg.precision,
            "keypoints": OmegaConf.to_container(cfg.keypoints),
            "seed": cfg.seed,
            "world_size": dist.world_size,
        }
        result.summary["speed"] = {
            "images_per_second": len(dataset) / seconds,
            "batch_size": cfg.batch_size,
            "seconds": seconds,
        }
        if model is not None and cfg.timing.images > 0 and dist.is_main:
            result.summary["speed"].update(batch1_timing(model, dataset, sampler, refiner, cfg, dist.device))
        if dist.is_main:  # every rank holds the gathered rows; one writes them
            write_and_print(result, cfg)
    finally:
        cleanup_dist()


if __name__ == "__main__":
    main()
