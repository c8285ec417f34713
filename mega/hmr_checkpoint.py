"""The HMR checkpoint ``hmr.pt``: build the model from its parts' configs, save it, load it.

``hmr.pt`` is self-describing: the weights of what trains (:class:`mega.model.HMRModel`'s state dict),
the configs that rebuild the network (backbone, transformer, conditioning, heads, body model), the
frozen tokenizer's path and content hash (ids must keep meaning the same codes), and whatever the writer
adds (step, config, ...). It is written atomically with its content hash (:mod:`mega.engine`).

    model, sizes = build_hmr_model(backbone, transformer, conditioning, heads, tokenizer, body)
    save_hmr(run_dir / "hmr.pt", model, parts, sizes, tokenizer_path, body_model={"name": "free"})
    model = load_hmr(run_dir / "hmr.pt")        # eval mode; CheckpointError names what is wrong
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mega.engine.checkpoint_file import CheckpointError
from mega.errors import is_user_error
from mega.model import HMRModel

logger = logging.getLogger(__name__)

HMR_FORMAT = "mega-hmr/1"

__all__ = ["HMR_FORMAT", "CheckpointError", "build_hmr_model", "load_hmr", "save_hmr"]


def build_hmr_model(
    backbone: dict[str, Any],
    transformer: dict[str, Any],
    conditioning: dict[str, Any],
    heads: dict[str, Any],
    tokenizer: Any,
    body: Any,
) -> tuple[HMRModel, dict[str, Any]]:
    """The HMR model from its parts' configs (what ``scripts/train_hmr.py`` trains and ``hmr.pt`` records).

    Args:
        backbone: ``name`` + kwargs of :func:`mega.backbones.build_backbone`.
        transformer: kwargs of :class:`mega.transformer.MaskedTokenTransformer` (no ``init``).
        conditioning: ``name`` + kwargs of :func:`mega.conditioning.build_conditioning`.
        heads: kwargs of the rotation / camera / betas heads.
        tokenizer, body: the frozen tokenizer and the body model.
    Returns:
        the model and the sizes the conditioning was built with.
    """
    from mega.backbones import build_backbone
    from mega.conditioning import build_conditioning
    from mega.transformer import MaskedTokenTransformer

    net = build_backbone(**backbone)
    tr = {k: v for k, v in transformer.items() if k != "init"}
    trans = MaskedTokenTransformer.from_tokenizer(tokenizer, **tr)
    sizes = {
        "decoder_dim": tr.get("decoder_dim") or tr["dim"],
        "decoder_depth": tr["decoder_depth"],
        "image_dim": net.dim,
        "num_image_tokens": net.num_tokens,
        "pyramid_dims": list(net.pyramid_dims),
        "num_body_tokens": tokenizer.num_tokens,
    }
    cond = build_conditioning(**conditioning, **sizes)
    return HMRModel(net, trans, cond, tokenizer, body, **heads), sizes


def save_hmr(
    path: str | Path,
    model: HMRModel,
    parts: dict[str, Any],
    sizes: dict[str, Any],
    tokenizer_path: str | Path,
    body_model: dict[str, Any],
    **extra: Any,
) -> Path:
    """Write ``hmr.pt`` atomically (temporary file + rename, with its content hash).

    Args:
        model: the trained model (its state dict is saved; the frozen tokenizer is referenced, not copied).
        parts: the configs :func:`build_hmr_model` takes: ``backbone``, ``transformer`` (no ``init``),
            ``conditioning``, ``heads``.
        sizes: what :func:`build_hmr_model` returned next to the model.
        tokenizer_path: the tokenizer checkpoint the model was trained with (recorded with its hash).
        body_model: kwargs of :func:`mega.body.load_body_model`.
        extra: anything else to record (``step``, ``config``, ``transformer_init`` ...).
    """
    from mega.engine import save_checkpoint
    from mega.tokenizers import tokenizer_hash

    missing = {"backbone", "transformer", "conditioning", "heads"} - set(parts)
    if missing:
        raise ValueError(f"save_hmr: parts lacks {sorted(missing)}")
    tokenizer = {
        "checkpoint": str(Path(tokenizer_path).resolve()),
        "sha256": tokenizer_hash(model.tokenizer),
        "kind": model.kind,
    }
    record = {
        "format": HMR_FORMAT,
        "model": model.state_dict(),
        **parts,
        "sizes": sizes,
        "body_model": body_model,
        "tokenizer": tokenizer,
        **extra,
    }
    save_checkpoint(path, record)
    return Path(path)


def load_hmr(
    path: str | Path, device: str | torch.device = "cpu", inference: bool = True, compile: bool = False
) -> HMRModel:
    """Rebuild a trained model from its self-describing ``hmr.pt`` (eval mode, on ``device``).

    ``inference=True`` (the default) also folds the backbone's BatchNorms into its convolutions
    (:meth:`mega.backbones.base.Backbone.fuse_for_inference`): the same outputs, faster, but the model
    cannot train; pass False to fine-tune it. ``compile=True`` (with ``inference``) also compiles a CNN
    backbone with ``torch.compile`` (:meth:`mega.backbones.base.Backbone.compile_for_inference`; the
    first call per batch size compiles, then HRNet-W48 runs about 15 % faster on a CPU); other
    backbones run eagerly, with a log line.

    The tokenizer is loaded from the path recorded at training time and must have the same hash.
    ``model.training_config`` is the training run's resolved config (None when the file has none).

    Raises:
        CheckpointError: the file is missing, not an ``hmr.pt``, or its tokenizer is missing or changed.
    """
    from mega.body import load_body_model
    from mega.engine import load_checkpoint
    from mega.tokenizers import load_tokenizer, tokenizer_hash

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"model checkpoint not found: {path}; train one with `python scripts/train_hmr.py`"
        )
    record = load_checkpoint(path)
    if record.get("format") != HMR_FORMAT:
        raise CheckpointError(
            f"{path} is not an HMR checkpoint of scripts/train_hmr.py (format {record.get('format')!r})"
        )
    try:
        tok_info = record["tokenizer"]
        tok_path = Path(tok_info["checkpoint"])
        if not tok_path.is_file():
            raise CheckpointError(
                f"{path}: its tokenizer {tok_path} is missing; put it back or retrain the model"
            )
        tokenizer = load_tokenizer(tok_path, map_location=device)
        if tokenizer_hash(tokenizer) != tok_info["sha256"]:
            raise CheckpointError(
                f"{path}: the tokenizer at {tok_path} changed since training (hash {tokenizer_hash(tokenizer)[:12]} "
                f"!= {tok_info['sha256'][:12]}); token ids would decode to other bodies"
            )
        body = load_body_model(**record["body_model"])
        parts = (record["backbone"], record["transformer"], record["conditioning"], record["heads"])
        model, _ = build_hmr_model(*parts, tokenizer, body)
        model.load_state_dict(record["model"])
    except (
        TypeError,
        KeyError,
        AttributeError,
        ValueError,
        RuntimeError,
    ) as err:  # a damaged or foreign record
        if is_user_error(err):
            raise
        first = str(err).strip().splitlines()
        raise CheckpointError(
            f"{path}: holds a model this code cannot rebuild ({type(err).__name__}: "
            f"{' '.join(line.strip() for line in first[:2])[:300]}); retrain it or use the code version that wrote it"
        ) from err
    model.training_config = record.get("config")  # the training run's resolved config (its data), or None
    model = model.to(device).eval()
    if inference:
        model.backbone.fuse_for_inference()
        if compile and not model.backbone.compile_for_inference():
            name = model.backbone.registry_name
            logger.info("backbone %s is not compiled (compile: the CNN backbones only)", name)
    elif compile:
        raise ValueError("load_hmr: compile=True needs inference=True (the compiled backbone cannot train)")
    return model
