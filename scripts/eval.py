"""Score a predictor on a prepared benchmark under a named protocol.

    python scripts/prepare_data.py dataset=3dpw root=/path/to/3DPW     # once
    python scripts/evaluate.py dataset=3dpw protocol=3dpw_spin14 predictor=mean_pose
    python scripts/evaluate.py dataset=emdb protocol=emdb24 predictor=oracle batch_size=7

Writes ``per_sample.csv`` and ``summary.json`` into the run directory and prints a table; every
result carries the protocol's name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.data.benchmark import BenchmarkDataset, make_body_factory
from mega.engine.dist import cleanup_dist, setup_dist
from mega.errors import entry_point
from mega.metrics.evaluator import Evaluator, format_table, write_results
from mega.metrics.predictors import build_predictor
from mega.metrics.protocols import build_protocol

log = logging.getLogger("eval")


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    dist = setup_dist(cfg.device)
    try:
        dataset = BenchmarkDataset(cfg.dataset.index, root=cfg.root or cfg.dataset.root)
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
            cfg.predictor,
            dataset.name,
            len(dataset),
            protocol.name,
        )
        result = evaluator.run(dataset, build_predictor(cfg.predictor), predictor_name=cfg.predictor)
        if dist.is_main:  # every rank holds the gathered rows; one writes them
            csv_path, json_path = write_results(result, Path(cfg.out_dir))
            print(format_table(result.summary))
            print(f"per-sample CSV: {csv_path}\nsummary JSON:   {json_path}")
    finally:
        cleanup_dist()


if __name__ == "__main__":
    main()
