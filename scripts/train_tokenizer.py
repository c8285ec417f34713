"""Train a body tokenizer (MEGA's mesh VQ-VAE or GenHMR's pose VQ-VAE) on motion data.

    python scripts/train_tokenizer.py                                   # mesh tokenizer, CPU preset, synthetic motion
    python scripts/train_tokenizer.py tokenizer=pose_vqvae experiment=pose_tokenizer_cpu
    torchrun --nproc_per_node=8 scripts/train_tokenizer.py experiment=mesh_tokenizer_paper motion=bedlam

Meshes and joints are computed in the step, in batches, by the body model on the training device;
with ``body_model=smpl body_model.gender=per_sequence`` each frame is meshed with its sequence's
gender's model (as Mesh-VQ-VAE), neutral otherwise.
Writes ``<run_dir>/tokenizer.pt`` (self-describing: ``mega.tokenizers.load_tokenizer`` rebuilds it)
and ``<run_dir>/tokenizer_metrics.json``: held-out reconstruction PVE and MPJPE (mm), codebook usage
and training throughput.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.atomic import write_json
from mega.body import load_body_model, sample_genders
from mega.data.motion import build_motion_dataset
from mega.engine import (
    DistInfo,
    build_logger,
    cleanup_dist,
    register_resolvers,
    seed_everything,
    start_run,
    train,
)
from mega.errors import entry_point
from mega.tokenizers import Tokenizer, build_tokenizer, save_tokenizer

log = logging.getLogger("train_tokenizer")
register_resolvers()


class TokenizerObjective(nn.Module):
    """The trainable tokenizer plus its loss, so that DDP wraps (and syncs) the tokenizer only.

    The body model is held outside the module tree: it is frozen and never broadcast by DDP.
    """

    def __init__(self, tokenizer: Tokenizer, body: nn.Module) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        object.__setattr__(self, "body", body)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        with sample_genders(self.body, batch.get("gender")):
            return self.tokenizer.loss(batch, self.body)


@torch.no_grad()
def evaluate(
    tokenizer: Tokenizer, body: nn.Module, dataset, dist: DistInfo, batch_size: int
) -> dict[str, float]:
    """Held-out reconstruction through ids, sharded over ranks and summed per sample.

    Returns:
        ``pve_mm``, ``mpjpe_mm`` (means over every held-out frame), ``code_usage`` (fraction of the
        K codes used by the held-out ids) and ``num_samples``.
    """
    tokenizer.eval()
    indices = torch.arange(len(dataset))[dist.rank :: dist.world_size]
    sums = torch.zeros(3, dtype=torch.float64, device=dist.device)  # pve, mpjpe, count
    used = torch.zeros(tokenizer.codebook_size, dtype=torch.float64, device=dist.device)
    for chunk in indices.split(batch_size):
        batch = dataset[chunk.tolist()]
        gender = batch.get("gender")
        batch = {k: v.to(dist.device) for k, v in batch.items() if isinstance(v, Tensor)}
        with sample_genders(body, gender):
            err = tokenizer.errors(batch, body)
        sums += torch.stack(
            [err["pve"].sum(), err["mpjpe"].sum(), err["pve"].new_tensor(len(chunk))]
        ).double()
        ids = err["ids"]
        used += torch.bincount(ids.flatten(), minlength=tokenizer.codebook_size).double()
    if dist.is_distributed:
        torch.distributed.all_reduce(sums)
        torch.distributed.all_reduce(used)
    n = float(sums[2])
    return {
        "pve_mm": float(sums[0]) / n,
        "mpjpe_mm": float(sums[1]) / n,
        "code_usage": float((used > 0).double().mean()),
        "num_samples": n,
    }


def save_and_report(
    cfg: DictConfig,
    tokenizer,
    body,
    final: dict,
    result,
    seconds: float,
    samples_per_step: int,
    run_dir: Path,
) -> None:
    """Rank 0: ``tokenizer.pt`` and ``tokenizer_metrics.json`` (the held-out ``final`` figures, training speed)."""
    samples = (result.step - result.start_step) * samples_per_step  # only the updates this process ran
    summary = {
        "tokenizer": cfg.tokenizer["name"],
        "body_model": body.name,
        "data": cfg.motion.name,
        "eval_split": cfg.eval_split,
        **final,
        "train_code_usage": float(tokenizer.quantizer.usage()),
        "steps": result.step,
        "steps_this_run": result.step - result.start_step,
        "train_seconds": seconds,
        "train_samples_per_s": samples / max(seconds, 1e-9),
    }
    summary["sha256"] = save_tokenizer(run_dir / "tokenizer.pt", tokenizer)
    write_json(run_dir / "tokenizer_metrics.json", summary)
    log.info(
        "held-out (%s, %d frames): PVE %.2f mm, MPJPE %.2f mm, codes used %.1f %% (train window %.1f %%)",
        cfg.eval_split,
        int(final["num_samples"]),
        final["pve_mm"],
        final["mpjpe_mm"],
        100 * final["code_usage"],
        100 * summary["train_code_usage"],
    )
    log.info(
        "%d steps (%d in this run) in %.0f s (%.0f samples/s); tokenizer -> %s",
        result.step,
        summary["steps_this_run"],
        seconds,
        summary["train_samples_per_s"],
        run_dir / "tokenizer.pt",
    )


@hydra.main(config_path="../configs", config_name="train_tokenizer", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    engine, dist, run_dir = start_run(cfg)
    body = load_body_model(**OmegaConf.to_container(cfg.body_model)).to(dist.device).eval()
    for p in body.parameters():
        p.requires_grad_(False)
    tok_cfg = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    if "num_vertices" in tok_cfg:  # the mesh tokenizer's size comes from the body, never typed twice
        tok_cfg["num_vertices"] = body.num_vertices
    cfg.tokenizer = tok_cfg
    resolved = OmegaConf.to_container(cfg, resolve=True)

    train_set = build_motion_dataset(cfg.motion, "train")
    eval_set = build_motion_dataset(cfg.motion, cfg.eval_split)
    seed_everything(engine.seed)
    tokenizer = build_tokenizer(**tok_cfg)
    objective = TokenizerObjective(tokenizer, body)
    if dist.is_main:
        n_params = sum(p.numel() for p in tokenizer.parameters())
        log.info(
            "%s: %d tokens x %d codes, %.2f M parameters; %d training / %d held-out frames",
            tok_cfg["name"],
            tokenizer.num_tokens,
            tokenizer.codebook_size,
            n_params / 1e6,
            len(train_set),
            len(eval_set),
        )

    def loss_fn(model, batch, rng):
        return model(batch)

    def eval_fn(model, dist_info):
        return evaluate(model.tokenizer, body, eval_set, dist_info, cfg.eval_batch_size)

    logger = build_logger(cfg.logger, run_dir=run_dir, config=resolved, is_main=dist.is_main)
    try:
        start = time.perf_counter()
        result = train(
            objective,
            loss_fn,
            train_set,
            engine=engine,
            dist=dist,
            run_dir=run_dir,
            config=resolved,
            eval_fn=eval_fn,
            logger=logger,
        )
        seconds = time.perf_counter() - start
        final = evaluate(tokenizer, body, eval_set, dist, cfg.eval_batch_size)
        if dist.is_main:
            samples_per_step = engine.batch_size * engine.grad_accum * dist.world_size
            save_and_report(cfg, tokenizer, body, final, result, seconds, samples_per_step, run_dir)
    finally:
        logger.finish()
        cleanup_dist()


if __name__ == "__main__":
    main()
