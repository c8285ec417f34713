"""Image-conditioned masked generative training of the HMR model (MEGA section 3.3; GenHMR training strategy).

    python scripts/train_hmr.py                                         # embedded default: experiment=hmr_cpu
    python scripts/train_hmr.py experiment=hmr_pose_cpu                 # GenHMR-style, pose tokenizer, CPU
    python scripts/train_hmr.py transformer.init=null mask_schedule=linear   # ablations
    torchrun --nproc_per_node=4 scripts/train_hmr.py experiment=mega_hrnet tokenizer.checkpoint=PATH transformer.init=PATH

backbone -> conditioning -> masked token transformer (+ rotation / camera / betas heads); the frozen tokenizer
turns the augmented ground truth into target ids on the training device; the objective is
``mega.losses.HMRObjective`` (masked CE; MEGA's rotation + 2D terms; GenHMR's Gumbel terms). Validation
runs the evaluator in deterministic mode on the held-out split (PVE / MPJPE / PA-MPJPE). At the end the
test split is scored for the model and for the ``mean_pose`` floor and the ``oracle``; the run directory
gets ``hmr.pt`` (weights, kwargs, tokenizer path + hash, config) and ``results.json``.

Inputs (:mod:`mega.stage_inputs`): ``tokenizer.checkpoint=null`` takes ``data/checkpoints/tokenizer_<kind>.pt``,
else the quickstart's, else the newest ``outputs/train_tokenizer/*/tokenizer.pt`` of that kind (mesh | pose);
``transformer.init=auto`` the quickstart's or the newest ``outputs/pretrain/*/pretrained.pt`` made with this
tokenizer. A missing one is a one-line error with the command that makes it (``transformer.init=null``:
from scratch).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import mega  # noqa: F401  (torchvision shim first)
from mega.atomic import write_json
from mega.backbones.feature_cache import FrozenFeatureDataset
from mega.body import load_body_model
from mega.data.benchmarks.eval_views import ImageBenchmarkView
from mega.data.images import build_image_dataset
from mega.engine import (
    WandbLogger,
    build_logger,
    cleanup_dist,
    load_checkpoint,
    register_resolvers,
    seed_everything,
    start_run,
    train,
)
from mega.errors import ConfigError, entry_point
from mega.hmr_checkpoint import build_hmr_model, save_hmr
from mega.inference import model_predictor, recover
from mega.losses import HMRObjective
from mega.metrics.evaluator import Evaluator, format_table, write_results
from mega.metrics.predictors import build_predictor
from mega.metrics.protocols import build_protocol
from mega.model import HMRModel, load_pretrained_transformer
from mega.stage_inputs import find_pretrained, find_tokenizer
from mega.tokenizers import load_tokenizer, tokenizer_hash
from mega.viz.views import save_png

log = logging.getLogger("train_hmr")


def build_model(cfg: DictConfig, tokenizer, body) -> tuple[HMRModel, dict]:
    """The HMR model from the config; returns it and the kwargs that rebuild it (saved in hmr.pt)."""
    tr_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.transformer).items() if k != "init"}
    model, sizes = build_hmr_model(
        OmegaConf.to_container(cfg.backbone),
        tr_kwargs,
        OmegaConf.to_container(cfg.conditioning),
        OmegaConf.to_container(cfg.heads),
        tokenizer,
        body,
    )
    return model, {"transformer": tr_kwargs, "sizes": sizes}


def overlay_panel(model: HMRModel, dataset, count: int = 4, focal: float = 5000.0):
    """(H, W, 3) uint8: the first ``count`` crops with the deterministic prediction rendered over them.

    The crop camera (s, tx, ty) is drawn as a long-focal perspective camera: depth 2 f / (s S), so that
    projection matches ``s * (X[:2] + t)`` in normalised crop coordinates.
    """
    from mega.data.crop import denormalise_image
    from mega.viz.views import hstack, overlay

    items = [dataset[i] for i in range(min(count, len(dataset)))]
    device = next(model.parameters()).device
    img = torch.stack([it["img"] for it in items]).to(device)
    rec = recover(model, img)  # deterministic
    size = img.shape[-1]
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    panels = []
    for i, it in enumerate(items):
        s, tx, ty = rec.cam[i].cpu().tolist()
        shift = torch.tensor([tx, ty, 2 * focal / (max(s, 1e-3) * size)])
        verts = rec.vertices[i, :1].cpu() + shift
        panels.append(overlay(denormalise_image(it["img"]), verts, model.body.faces.cpu(), K, opacity=0.6))
    return hstack(panels)


def evaluate(model: HMRModel, dataset, body, cfg: DictConfig, device, predictor: str = "model"):
    """Score the model (deterministic mode), or a built-in predictor, on an image split; returns the result."""
    evaluator = Evaluator(
        build_protocol(**OmegaConf.to_container(cfg.protocol)),
        lambda gender: body,
        batch_size=cfg.eval_batch_size,
        device=device,
        progress=False,
    )
    fn = model_predictor(model) if predictor == "model" else build_predictor(predictor)
    return evaluator.run(dataset, fn, predictor_name=predictor)


@dataclass
class Prepared:
    """The model to train and where its parts came from (recorded in ``hmr.pt`` and ``results.json``)."""

    model: HMRModel
    kwargs: dict  # rebuilds the model (build_model)
    body: torch.nn.Module
    tok_path: Path
    tok_sha: str
    init: str | None  # the pre-trained transformer (None: from scratch)


def prepare_model(cfg: DictConfig, engine, dist) -> Prepared:
    """The HMR model on the device: the stage inputs (tokenizer, pre-trained transformer; :mod:`mega.stage_inputs`),
    the body model, an optional whole-model start (``init_checkpoint``) and SyncBatchNorm under torchrun on GPUs."""
    tok_path = find_tokenizer(cfg.tokenizer.checkpoint, cfg.tokenizer.kind)
    tokenizer = load_tokenizer(tok_path, map_location=dist.device)
    tok_sha = tokenizer_hash(tokenizer)
    init = find_pretrained(cfg.transformer.init, tok_path, tok_sha)
    body = load_body_model(**OmegaConf.to_container(cfg.body_model)).to(dist.device)
    seed_everything(engine.seed)
    model, kwargs = build_model(cfg, tokenizer, body)
    model.target_cache_items = int(cfg.get("target_id_cache") or 0)
    if init is not None:
        load_pretrained_transformer(model.transformer, init, tok_sha)
    if cfg.init_checkpoint:  # a previous stage's hmr.pt (MEGA: the mix stage starts from the COCO run)
        model.load_state_dict(load_checkpoint(cfg.init_checkpoint)["model"])
        log.info("model initialised from %s", cfg.init_checkpoint)
    if cfg.sync_batchnorm and dist.is_distributed and dist.device.type == "cuda":  # gloo/CPU has none
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(dist.device)
    return Prepared(model, kwargs, body, tok_path, tok_sha, init)


def training_set(cfg: DictConfig, model: HMRModel, engine):
    """The augmented training crops; with ``feature_cache`` the frozen trunk's outputs, computed once per crop."""
    # rank=0 on every rank: augmentation depends on (seed, index) only, not on the rank layout.
    size = model.backbone.input_size
    train_set = build_image_dataset(cfg.images, cfg.splits.train, crop_size=size, seed=engine.seed, rank=0)
    if cfg.feature_cache:  # the frozen trunk runs once per cached crop, not once per step
        if not model.backbone.cacheable:
            raise ConfigError("feature_cache=true needs backbone.freeze=true; or set feature_cache=false")
        t_cache = time.perf_counter()
        train_set = FrozenFeatureDataset(
            train_set, model.backbone, views=int(cfg.feature_cache_views), progress=engine.progress_bar
        )
        log.info(
            "frozen backbone outputs of %d crops cached in %.1f s",
            len(train_set),
            time.perf_counter() - t_cache,
        )
    return train_set


def validation(cfg: DictConfig, val_set, body, objective: HMRObjective, run_dir: Path, dist, logger):
    """The engine's ``eval_fn`` (deterministic PVE / MPJPE / PA-MPJPE on ``val_set``, overlays on rank 0) and
    the list it appends each evaluation to."""
    history: list[dict] = []

    def eval_fn(net: HMRModel, _dist) -> dict[str, float]:
        metrics = evaluate(net, val_set, body, cfg, dist.device).summary["metrics"]
        history.append({"step": objective.step, **metrics})
        if dist.is_main and cfg.overlays:  # validation overlays: a PNG per evaluation and a wandb image
            panel = overlay_panel(net, val_set, cfg.overlays)
            save_png(run_dir / "overlays" / f"val_{objective.step:07d}.png", panel)
            if isinstance(logger, WandbLogger):
                import wandb  # noqa: PLC0415

                logger.log({"val/overlay": wandb.Image(panel)}, objective.step)
        return metrics

    return eval_fn, history


def test_split(cfg: DictConfig, prep: Prepared, run_dir: Path, dist) -> dict[str, dict]:
    """Metrics of the model (deterministic), the ``mean_pose`` floor and the ``oracle`` on the test split;
    rank 0 prints their tables and writes the model's per-sample results into ``test/``."""
    prep.model.eval()
    size = prep.model.backbone.input_size
    test = ImageBenchmarkView(
        build_image_dataset(cfg.images, cfg.splits.test, crop_size=size), cfg.test_limit
    )
    results = {}
    for name in ("model", "mean_pose", "oracle"):
        res = evaluate(prep.model, test, prep.body, cfg, dist.device, predictor=name)
        results[name] = res.summary["metrics"]
        if dist.is_main:
            print(format_table(res.summary))
            if name == "model":
                write_results(res, run_dir / "test")
    return results


def build_objective(cfg: DictConfig, engine, dist, num_train: int) -> HMRObjective:
    """The HMR objective over the run's length in updates (``engine.warmup_steps`` from ``warmup_epochs``)."""
    per_epoch = max(1, num_train // (engine.batch_size * dist.world_size) // engine.grad_accum)
    if cfg.warmup_epochs is not None:  # the papers' warm-up is in epochs; the engine counts updates
        engine.warmup_steps = max(1, round(cfg.warmup_epochs * per_epoch))
    total = engine.max_steps or engine.epochs * per_epoch
    return HMRObjective(
        cfg.loss.weights,
        total_steps=total,
        mask_schedule=cfg.mask_schedule,
        gumbel=cfg.loss.gumbel,
        keypoints=list(cfg.loss.keypoints),
        grad_accum=engine.grad_accum,
        seed=engine.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )


def test_and_save(
    cfg: DictConfig, resolved: dict, prep: Prepared, result, training: dict, run_dir: Path, dist
):
    """Score the test split (the model, the ``mean_pose`` floor, the ``oracle``); rank 0 prints the tables and
    writes ``test/``, ``hmr.pt`` and ``results.json`` (with ``training``: train seconds, validation history,
    the objective's description)."""
    model = prep.model
    results = test_split(cfg, prep, run_dir, dist)
    if not dist.is_main:
        return
    parts = {
        "backbone": resolved["backbone"],
        "transformer": prep.kwargs["transformer"],
        "conditioning": resolved["conditioning"],
        "heads": OmegaConf.to_container(cfg.heads),
    }
    save_hmr(
        run_dir / "hmr.pt",
        model,
        parts,
        prep.kwargs["sizes"],
        prep.tok_path,
        resolved["body_model"],
        transformer_init=prep.init,
        step=result.step,
        config=resolved,
    )
    floor = results["mean_pose"]
    fraction = {k: results["model"][k] / floor[k] for k in ("pve", "mpjpe")}
    summary = {
        "step": result.step,
        "train_seconds": training["train_seconds"],
        "protocol": cfg.protocol.name,
        "split": cfg.splits.test,
        "test": results,
        "fraction_of_floor": fraction,
        "final_train": {k: v for k, v in result.metrics.items() if k.startswith("train/")},
        "val_history": training["val_history"],
        "objective": training["objective"],
        "transformer_init": prep.init,
        "kind": model.kind,
    }
    write_json(run_dir / "results.json", summary)
    log.info(
        "test (%s, %s): PVE %.1f mm, MPJPE %.1f mm (mean_pose floor %.1f / %.1f: %.0f %% / %.0f %%); "
        "wrote %s",
        cfg.protocol.name,
        cfg.splits.test,
        results["model"]["pve"],
        results["model"]["mpjpe"],
        floor["pve"],
        floor["mpjpe"],
        100 * fraction["pve"],
        100 * fraction["mpjpe"],
        run_dir / "hmr.pt",
    )


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_hmr")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    engine, dist, run_dir = start_run(cfg)
    try:
        prep = prepare_model(cfg, engine, dist)
        model = prep.model
        train_set = training_set(cfg, model, engine)
        size = model.backbone.input_size
        val_set = ImageBenchmarkView(
            build_image_dataset(cfg.images, cfg.splits.val, crop_size=size), cfg.eval_limit
        )
        objective = build_objective(cfg, engine, dist, len(train_set))
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info(
            "%s tokenizer %s (%s); transformer init %s; %s conditioning; %.2f M trainable parameters; "
            "%d training / %d validation images",
            model.kind,
            prep.tok_path,
            prep.tok_sha[:12],
            prep.init or "scratch",
            cfg.conditioning.name,
            n_params / 1e6,
            len(train_set),
            len(val_set),
        )
        resolved = OmegaConf.to_container(cfg, resolve=True)
        logger = build_logger(cfg.logger, run_dir=run_dir, config=resolved, is_main=dist.is_main)
        eval_fn, history = validation(cfg, val_set, prep.body, objective, run_dir, dist, logger)
        t0 = time.perf_counter()
        try:
            result = train(model, objective, train_set, engine=engine, dist=dist, run_dir=run_dir, config=resolved,
                           eval_fn=eval_fn, logger=logger, extra_state={"objective": objective},
                           max_bad_fraction=cfg.images.get("max_bad_fraction"))  # fmt: skip
        finally:
            logger.finish()
        seconds = time.perf_counter() - t0
        training = {"train_seconds": seconds, "val_history": history, "objective": objective.describe()}
        test_and_save(cfg, resolved, prep, result, training, run_dir, dist)
    finally:
        cleanup_dist()


if __name__ == "__main__":
    register_resolvers()
    main()
