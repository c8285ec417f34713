"""Self-supervised pre-training of the masked token transformer on motion data (MEGA section 3.3, supp. B).

    python scripts/pretrain.py                                    # embedded default: CPU preset, synthetic motion
    python scripts/pretrain.py tokenizer.checkpoint=PATH transformer=small engine.max_steps=5000 threads=1
    torchrun --nproc_per_node=4 scripts/pretrain.py experiment=pretrain_paper motion=amass tokenizer.checkpoint=PATH

The frozen tokenizer turns every frame of the motion set into ids once (``mega.data.motion.token_cache``;
with ``body_model.gender=per_sequence`` each frame meshed with its sequence's gender's model). An epoch is
``sampling=frames``: every frame once, or ``sampling=sequences``: one random frame of each sequence
(sequences weighted equally, what MEGA's data loader does and so what its "500 epochs" count). Training predicts randomly masked ids (per-sample cosine ratio) from the visible ones with cross-entropy on
masked positions only. Held-out masked-token accuracy and NLL are measured at fixed mask ratios, next to
two baselines computed from the training ids: the single most frequent code, and the most frequent code
of each position (and that position-wise unigram's NLL). The run directory gets ``pretrained.pt`` (weights,
transformer kwargs, tokenizer path + hash, config: all ``scripts/generate.py`` needs) and ``metrics.json``.

Tokenizer checkpoint rule (``tokenizer.checkpoint=null``, :func:`mega.stage_inputs.find_tokenizer`):
``data/checkpoints/tokenizer_mesh.pt`` if it exists, else the quickstart's, else the newest
``outputs/train_tokenizer/*/tokenizer.pt``; otherwise a one-line error says how to make one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
import torch.distributed as tdist
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

import mega  # noqa: F401  (torchvision shim first)
from mega.atomic import write_json
from mega.body import load_body_model
from mega.data.motion import build_motion_dataset
from mega.data.motion.token_cache import (
    FramePicker,
    SequenceTokenDataset,
    TokenDataset,
    load_or_build_token_ids,
    sequence_layout,
)
from mega.engine import (
    DistInfo,
    RngStreams,
    build_logger,
    cleanup_dist,
    register_resolvers,
    save_checkpoint,
    seed_everything,
    start_run,
    stream_seed,
    train,
)
from mega.errors import entry_point
from mega.stage_inputs import find_tokenizer
from mega.tokenizers import load_tokenizer, tokenizer_hash
from mega.transformer import (
    GlobalBatchMasks,
    MaskedTokenTransformer,
    counts_for_ratio,
    masked_cross_entropy,
    masked_token_stats,
    random_mask,
)

log = logging.getLogger("pretrain")

PRETRAINED_FORMAT = "mega-pretrained/1"


def masked_token_loss(masks: GlobalBatchMasks, world_size: int, frames: FramePicker | None = None):
    """``loss_fn`` for the engine: CE over masked tokens, normalised by the global batch's masked count.

    The local mean is rescaled by (local count * W / global count), so DDP's gradient average equals the
    mean over every masked token of the global batch (what one process with the whole batch computes).
    With ``frames`` the batch holds sequence indices (B,), turned into one random frame's ids each.
    """

    def loss_fn(model: nn.Module, ids: Tensor, rng: RngStreams) -> tuple[Tensor, dict[str, Tensor]]:
        if frames is not None:
            ids = frames(ids)
        mask, global_count = masks.draw(ids.shape[0], ids.shape[1], ids.device)
        inner = model.module if hasattr(model, "module") else model
        logits = model(ids.masked_fill(mask, inner.mask_id), mask)  # (B, L, K)
        scale = mask.sum() * world_size / global_count
        loss = masked_cross_entropy(logits, ids, mask) * scale
        _, correct, count = masked_token_stats(logits, ids, mask)
        return loss, {"acc": correct / count.clamp_min(1), "mask_ratio": mask.float().mean()}

    return loss_fn


def code_baselines(train_ids: Tensor, eval_ids: Tensor, codebook_size: int) -> dict[str, float]:
    """Predictors that ignore the visible tokens, scored on every held-out token.

    Returns:
        ``baseline_acc`` (the most frequent training code everywhere), ``baseline_acc_position`` (the most
        frequent training code of each position) and ``baseline_nll_position`` (NLL of the add-one smoothed
        per-position code frequencies).
    """
    counts = torch.zeros(train_ids.shape[1], codebook_size, dtype=torch.float64)  # (L, K)
    counts.scatter_add_(1, train_ids.T, torch.ones(train_ids.T.shape, dtype=torch.float64))
    mode = int(counts.sum(0).argmax())
    logp = ((counts + 1) / (counts + 1).sum(1, keepdim=True)).log()  # (L, K)
    per_position = logp.gather(1, eval_ids.T)  # (L, M)
    return {
        "baseline_acc": float((eval_ids == mode).double().mean()),
        "baseline_acc_position": float((eval_ids == counts.argmax(1)).double().mean()),
        "baseline_nll_position": float(-per_position.mean()),
    }


def heldout_eval(
    eval_ids: Tensor, ratios: list[float], seed: int, batch_size: int, extra: dict[str, float], step_fn=None
):
    """``eval_fn``: masked-token accuracy and NLL on held-out ids at fixed ratios (fixed masks per ratio).

    Rows are sharded over ranks and the sums all-reduced, so every rank returns the full-set numbers.
    ``eval_fn.history`` keeps every evaluation (with ``step_fn()`` as "step" when given).
    """
    gen = torch.Generator().manual_seed(seed)
    num, length = eval_ids.shape
    masks = {r: random_mask(counts_for_ratio(r, num, length), length, generator=gen) for r in ratios}
    history: list[dict[str, float]] = []

    def eval_fn(model: nn.Module, dist: DistInfo) -> dict[str, float]:
        out = dict(extra)
        for ratio, mask_all in masks.items():
            sums = torch.zeros(3, dtype=torch.float64, device=dist.device)
            rows = torch.arange(dist.rank, num, dist.world_size)
            for chunk in rows.split(batch_size):
                ids, mask = eval_ids[chunk].to(dist.device), mask_all[chunk].to(dist.device)
                logits = model(ids.masked_fill(mask, model.mask_id), mask)
                sums += torch.stack(masked_token_stats(logits, ids, mask))
            if dist.is_distributed:
                tdist.all_reduce(sums)
            out[f"acc@{ratio:g}"] = float(sums[1] / sums[2])
            out[f"nll@{ratio:g}"] = float(sums[0] / sums[2])
        history.append({"step": step_fn(), **out} if step_fn is not None else dict(out))
        return out

    eval_fn.history = history
    return eval_fn


def load_token_ids(cfg: DictConfig, tokenizer, body, device) -> tuple[dict[str, Tensor], tuple | None]:
    """Token ids (M, L) of each split role (``cfg.splits``: train, eval) from the token cache (computed on first
    use), and the training split's sequence layout when ``sampling=sequences`` (else None)."""
    token_ids, layout = {}, None
    for role, split in cfg.splits.items():
        motion = build_motion_dataset(cfg.motion, split)
        token_ids[role] = load_or_build_token_ids(
            tokenizer,
            motion,
            body,
            cache_dir=cfg.token_cache_dir,
            data_name=cfg.motion.name,
            split=split,
            batch_size=cfg.encode_batch_size,
            device=device,
        ).ids
        if role == "train" and cfg.sampling == "sequences":
            layout = sequence_layout(motion)
    return token_ids, layout


def training_set(cfg: DictConfig, train_ids: Tensor, layout: tuple | None, engine, dist):
    """What an epoch goes over: every frame's ids (``sampling=frames``), or one index per sequence with a
    :class:`FramePicker` that draws a random frame of it per step (``sampling=sequences``, MEGA)."""
    if cfg.sampling not in ("frames", "sequences"):
        raise ValueError(f"sampling must be 'frames' or 'sequences', got {cfg.sampling!r}")
    frames = None
    if layout is not None:
        train_set = SequenceTokenDataset(train_ids, *layout)
        seed = stream_seed(engine.seed, 0, "pretrain/frames")
        frames = FramePicker(train_set, seed, dist.rank, dist.world_size)
    else:
        train_set = TokenDataset(train_ids)
    epoch = "one random frame per sequence" if frames else "every frame"
    log.info("epoch = %s: %d items (%d training frames)", epoch, len(train_set), len(train_ids))
    return train_set, frames


def save_pretrained(
    run_dir: Path, model, resolved: dict, tokenizer: dict, result, history, baselines
) -> None:
    """``pretrained.pt`` (weights, the kwargs that rebuild the model, the tokenizer's path and hash, the body
    model, data and splits, the resolved config) and ``metrics.json``; logs the held-out figures."""
    kwargs = dict(resolved["transformer"], num_tokens=model.num_tokens, codebook_size=model.codebook_size)
    record = {
        "format": PRETRAINED_FORMAT,
        "model": model.state_dict(),
        "transformer": kwargs,
        "tokenizer": tokenizer,
        "body_model": resolved["body_model"],
        "data": resolved["motion"],
        "splits": resolved["splits"],
        "step": result.step,
        "metrics": result.metrics,
        "config": resolved,
    }
    save_checkpoint(run_dir / "pretrained.pt", record)
    write_json(
        run_dir / "metrics.json", {"step": result.step, "final": result.metrics, "eval_history": history}
    )
    final = result.metrics
    log.info(
        "held-out: acc@0.5 %.4f (baselines: most frequent code %.4f, per position %.4f); "
        "nll@0.5 %.4f (per-position unigram %.4f)",
        final.get("eval/acc@0.5", float("nan")),
        baselines["baseline_acc"],
        baselines["baseline_acc_position"],
        final.get("eval/nll@0.5", float("nan")),
        baselines["baseline_nll_position"],
    )
    log.info("wrote %s", run_dir / "pretrained.pt")


@hydra.main(version_base="1.3", config_path="../configs", config_name="pretrain")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    engine, dist, run_dir = start_run(cfg)
    try:
        tok_path = find_tokenizer(cfg.tokenizer.checkpoint, kind=None)
        tokenizer = load_tokenizer(tok_path, map_location=dist.device)
        body = load_body_model(**OmegaConf.to_container(cfg.body_model)).to(dist.device)
        token_ids, layout = load_token_ids(cfg, tokenizer, body, dist.device)
        train_set, frames = training_set(cfg, token_ids["train"], layout, engine, dist)
        if cfg.warmup_epochs is not None:  # the paper's warm-up is in epochs; the engine counts updates
            per_epoch = len(train_set) // (engine.batch_size * dist.world_size) // engine.grad_accum
            engine.warmup_steps = max(1, round(cfg.warmup_epochs * per_epoch))
        seed_everything(engine.seed)
        model = MaskedTokenTransformer.from_tokenizer(tokenizer, **cfg.transformer)
        log.info(
            "tokenizer %s (%s); transformer %.2f M parameters",
            tok_path,
            tokenizer_hash(tokenizer)[:12],
            sum(p.numel() for p in model.parameters()) / 1e6,
        )
        masks = GlobalBatchMasks(
            stream_seed(engine.seed, 0, "pretrain/mask"), cfg.mask_schedule, dist.rank, dist.world_size
        )
        baselines = code_baselines(token_ids["train"], token_ids["eval"], tokenizer.codebook_size)
        eval_fn = heldout_eval(
            token_ids["eval"],
            list(cfg.eval_ratios),
            cfg.eval_seed,
            cfg.eval_batch_size,
            baselines,
            step_fn=lambda: masks.draws // engine.grad_accum,
        )
        resolved = OmegaConf.to_container(cfg, resolve=True)
        logger = build_logger(cfg.logger, run_dir=run_dir, config=resolved, is_main=dist.is_main)
        try:
            extra = {"masks": masks, **({"frames": frames} if frames is not None else {})}
            result = train(model, masked_token_loss(masks, dist.world_size, frames), train_set, engine=engine,
                           dist=dist, run_dir=run_dir, config=resolved, eval_fn=eval_fn, logger=logger,
                           extra_state=extra)  # fmt: skip
        finally:
            logger.finish()
        if dist.is_main:
            tok = {"checkpoint": str(tok_path.resolve()), "sha256": tokenizer_hash(tokenizer)}
            save_pretrained(run_dir, model, resolved, tok, result, eval_fn.history, baselines)
    finally:
        cleanup_dist()


if __name__ == "__main__":
    register_resolvers()
    main()
