"""The papers' decoding tables on a trained model, in one process (the backbone's data read once).

    python scripts/sampler_tables.py                     # the quickstart's model (else the newest train_hmr run)
    python scripts/sampler_tables.py checkpoint=... limit=200 tables=[mega_q,ugs_iterations]

Tables (protocol ``smpl24`` on the synthetic test split, the same evaluator as ``scripts/eval.py``):

- ``mega_q`` (MEGA supp. Table 4): stochastic mode, Q in {1, 5, 10, 25}: mean-of-Q PVE / MPJPE / PA-MPJPE,
  distance of the mean-of-Q mesh to the deterministic one, per-vertex SD, best-of-Q; deterministic row.
- ``ugs_iterations`` (GenHMR Table 2): UGS with T in {1, 3, 5, 10, 20}: errors and seconds per image.
- ``ugs_schedules`` (GenHMR Table 11): the four gamma functions at T = 5 and 10.
- ``pgr_iterations`` (GenHMR Table 3): pose-guided refinement, P in {0, 1, 3, 5, 10, 20}, from exact
  keypoints and from noisy detector-like ones (``noise_px``, ``drop``).

Writes ``tables.md`` and ``tables.json`` into the run directory.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import mega  # noqa: F401  (torchvision shim first)
from mega.atomic import write_json, write_text
from mega.data.benchmarks.eval_views import build_eval_dataset
from mega.data.benchmarks.index import make_body_factory
from mega.errors import ConfigError, entry_point
from mega.hmr_checkpoint import load_hmr
from mega.inference import KeypointSource, build_sampler, model_predictor
from mega.metrics.evaluator import Evaluator
from mega.metrics.protocols import build_protocol
from mega.refiners import build_refiner
from mega.stage_inputs import find_hmr

log = logging.getLogger("sampler_tables")
METRICS = ("pve", "mpjpe", "pa_mpjpe")


def score(
    evaluator: Evaluator,
    dataset: Any,
    model: Any,
    sampler: dict,
    q: int = 1,
    kp: dict | None = None,
    refiner: dict | None = None,
) -> dict:
    """Summary of one decoding setting plus its seconds per image (whole split, evaluation batch)."""
    predictor = model_predictor(
        model, build_sampler(sampler), q, KeypointSource(**(kp or {})), seed=0, refiner=build_refiner(refiner)
    )
    t0 = time.perf_counter()
    summary = evaluator.run(dataset, predictor, predictor_name=str(sampler)).summary
    summary["seconds_per_image"] = (time.perf_counter() - t0) / len(dataset)
    return summary


def row(label: str, summary: dict, keys: tuple[str, ...] = METRICS, section: str = "metrics") -> str:
    vals = " | ".join(f"{summary[section][k]:.1f}" for k in keys)
    return f"| {label} | {vals} | {summary['seconds_per_image'] * 1e3:.1f} |"


HEAD = "| setting | PVE | MPJPE | PA-MPJPE | ms/image |\n|---|---|---|---|---|"


def mega_q_table(cfg: DictConfig, run: Callable[..., dict], out: dict, det: dict) -> list[str]:
    """MEGA supp. Table 4: the deterministic row, then the stochastic mode's mean of Q samples per Q."""
    md = [
        "## MEGA supp. Table 4: stochastic mode, mean of Q samples",
        "",
        "| setting | PVE | MPJPE | PA-MPJPE | dist. to det. (mm) | vertex SD (mm) | best-of-Q PVE | best-of-Q MPJPE | ms/image |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| deterministic | {det['metrics']['pve']:.1f} | {det['metrics']['mpjpe']:.1f} | {det['metrics']['pa_mpjpe']:.1f} | 0 | 0 | - | - | {det['seconds_per_image'] * 1e3:.1f} |",
    ]
    for q in cfg.q_values:
        s = run(OmegaConf.to_container(cfg.stochastic, resolve=True), q)
        out[f"stochastic_q{q}"] = s
        m, d, b = s.get("mean_of_q", s["metrics"]), s.get("diversity", {}), s.get("best_of_q", s["metrics"])
        md.append(
            f"| Q = {q} | {m['pve']:.1f} | {m['mpjpe']:.1f} | {m['pa_mpjpe']:.1f} | "
            f"{d.get('dist_to_det_mm', float('nan')):.1f} | {d.get('vertex_std_mm', 0.0):.1f} | "
            f"{b['pve']:.1f} | {b['mpjpe']:.1f} | {s['seconds_per_image'] * 1e3:.1f} |"
        )
    return md + [""]


def ugs_iterations_table(cfg: DictConfig, run: Callable[..., dict], out: dict, det: dict) -> list[str]:
    """GenHMR Table 2: uncertainty-guided sampling with T iterations."""
    md = ["## GenHMR Table 2: uncertainty-guided sampling, T iterations", "", HEAD]
    for t in cfg.ugs_steps:
        s = out[f"ugs_t{t}"] = run({"name": "uncertainty_guided", "steps": t})
        md.append(row(f"UGS T = {t}", s))
    return md + [""]


def ugs_schedules_table(cfg: DictConfig, run: Callable[..., dict], out: dict, det: dict) -> list[str]:
    """GenHMR Table 11: the four mask schedules at T = 5 and 10 (GenHMR's "cosine" is our raised_cosine)."""
    md = ["## GenHMR Table 11: UGS mask schedules", "", HEAD]
    for paper, sched in (
        ("cosine", "raised_cosine"),
        ("linear", "linear"),
        ("cubic", "cubic"),
        ("sqrt", "sqrt"),
    ):
        for t in (5, 10):
            s = out[f"ugs_{paper}_t{t}"] = run(
                {"name": "uncertainty_guided", "steps": t, "mask_schedule": sched}
            )
            md.append(row(f"{paper}, T = {t}", s))
    return md + [""]


def pgr_iterations_table(cfg: DictConfig, run: Callable[..., dict], out: dict, det: dict) -> list[str]:
    """GenHMR Table 3: pose-guided refinement after UGS (T = 5), P iterations, exact and noisy keypoints."""
    md = ["## GenHMR Table 3: 2D pose-guided refinement after UGS (T = 5), P iterations", "", HEAD]
    noisy = {"noise_px": cfg.noise_px, "drop": cfg.drop}
    for label, kp in (("exact keypoints", {}), (f"noisy ({cfg.noise_px} px, drop {cfg.drop})", noisy)):
        for p in cfg.pgr_iterations:
            refiner = {"name": "pose_guided", "iterations": p, "step_size": cfg.step_size}
            s = run({"name": "uncertainty_guided"}, kp=kp, refiner=refiner)
            out[f"pgr_{'noisy' if kp else 'exact'}_p{p}"] = s
            md.append(row(f"{label}, P = {p}", s))
    return md + [""]


TABLES = {
    "mega_q": mega_q_table,
    "ugs_iterations": ugs_iterations_table,
    "ugs_schedules": ugs_schedules_table,
    "pgr_iterations": pgr_iterations_table,
}


@hydra.main(config_path="../configs", config_name="sampler_tables", version_base="1.3")
@entry_point
def main(cfg: DictConfig) -> None:
    unknown = sorted(set(cfg.tables) - set(TABLES))
    if unknown:
        raise ConfigError(f"tables: no table {unknown}; known: {list(TABLES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    checkpoint = find_hmr(cfg.checkpoint)
    model = load_hmr(checkpoint)
    dataset = build_eval_dataset(cfg.benchmark, model.backbone.input_size, root=cfg.root, limit=cfg.limit)
    evaluator = Evaluator(
        build_protocol(**OmegaConf.to_container(cfg.protocol)),
        make_body_factory(cfg.body_model.name, cfg.body_model.path),
        batch_size=cfg.batch_size,
        progress=False,
    )
    run = functools.partial(score, evaluator, dataset, model)
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "num_samples": len(dataset)}
    md = [f"# Decoding tables: {checkpoint} ({len(dataset)} test images, protocol {cfg.protocol.name})", ""]
    det = out["deterministic"] = run({"name": "deterministic"})
    for name, table in TABLES.items():  # in this order, whatever the order of cfg.tables
        if name in cfg.tables:
            md += table(cfg, run, out, det)
    run_dir = Path(cfg.out_dir)
    write_text(run_dir / "tables.md", "\n".join(md) + "\n")
    write_json(run_dir / "tables.json", out)
    print("\n".join(md))
    print(f"wrote {run_dir / 'tables.md'}")


if __name__ == "__main__":
    main()
