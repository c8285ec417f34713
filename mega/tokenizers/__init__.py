"""Tokenizers: ids (B, L) <-> canonical mesh (B, V, 3) or body pose (B, 23, 6).

``TOKENIZERS`` maps a name (== the Hydra ``tokenizer`` config's ``name`` key) to a class;
``build_tokenizer(**cfg.tokenizer)`` builds one. A tokenizer checkpoint is self-describing
(registry name, constructor kwargs, state dict and a SHA-256 of all three), so
``load_tokenizer(path)`` rebuilds it with nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mega.errors import UserError
from mega.registry import Registry
from mega.tokenizers.base import Tokenizer
from mega.tokenizers.mesh_vqvae import MeshConvVQVAE, MeshMLP, MeshTokenizer, MeshVQVAE
from mega.tokenizers.pose_vqvae import PoseVQVAE
from mega.tokenizers.quantizer import VectorQuantizer

__all__ = [
    "TOKENIZERS",
    "MeshConvVQVAE",
    "MeshMLP",
    "MeshTokenizer",
    "MeshVQVAE",
    "PoseVQVAE",
    "Tokenizer",
    "VectorQuantizer",
    "build_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_hash",
]

logger = logging.getLogger(__name__)


class TokenizerFileError(UserError, ValueError):
    """A tokenizer checkpoint that is missing, unreadable or damaged (the message names the file and the fix)."""


class TokenizerNotFoundError(TokenizerFileError, FileNotFoundError):
    """No tokenizer checkpoint at the given path."""


TOKENIZERS = Registry("tokenizer")
TOKENIZERS.register(MeshConvVQVAE.registry_name)(MeshConvVQVAE)
TOKENIZERS.register(MeshMLP.registry_name)(MeshMLP)
# The default mesh tokenizer. The MLP for now: within the CPU presets' budget the convolutional mesh_conv
# (tokens = body regions, MEGA's design) ends with about twice its held-out error (51.5 vs 25.1 mm PVE). Checkpoints
# record the variant's own name, so switching this alias never changes what an old file loads as
# (files written before the variants had names say mesh_vqvae with the MLP's kwargs: the MLP).
TOKENIZERS.register("mesh_vqvae")(MeshMLP)
TOKENIZERS.register(PoseVQVAE.registry_name)(PoseVQVAE)

CHECKPOINT_FORMAT = "mega-tokenizer-v1"


def build_tokenizer(name: str, **kwargs: Any) -> Tokenizer:
    """Build the tokenizer registered as ``name`` with its constructor ``kwargs``.

    Example: ``build_tokenizer(**cfg.tokenizer)`` where the config holds ``name`` plus the kwargs.
    """
    return TOKENIZERS.build(name, **kwargs)


def _hash(name: str, kwargs: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(name.encode())
    h.update(json.dumps(kwargs, sort_keys=True).encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tokenizer_hash(tok: Tokenizer) -> str:
    """SHA-256 (hex) of a tokenizer's name, constructor kwargs and state dict."""
    return _hash(tok.registry_name, tok.config, tok.state_dict())


def save_tokenizer(path: str | os.PathLike, tok: Tokenizer) -> str:
    """Write a self-describing tokenizer checkpoint atomically (temp file in the same folder + rename).

    Args:
        path: destination file; parent folders are created.
        tok: a registered tokenizer.
    Returns:
        The checkpoint's content hash (hex), to be recorded by anything that depends on it.
    """
    if tok.registry_name not in TOKENIZERS:
        raise KeyError(f"{type(tok).__name__} is not a registered tokenizer; known: {TOKENIZERS.names()}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in tok.state_dict().items()}
    digest = _hash(tok.registry_name, tok.config, state)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "name": tok.registry_name,
        "kwargs": dict(tok.config),
        "state_dict": state,
        "sha256": digest,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("saved tokenizer %s (%s) to %s", tok.registry_name, digest[:12], path)
    return digest


def load_tokenizer(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Tokenizer:
    """Rebuild a tokenizer from a checkpoint written by :func:`save_tokenizer`.

    Args:
        path: the checkpoint file.
        map_location: device of the returned module.
    Returns:
        The tokenizer in eval mode (frozen use is the common case; call ``.train()`` to fine-tune).
    Raises:
        TokenizerNotFoundError (a FileNotFoundError): no such file. TokenizerFileError (a ValueError): not
        a readable tokenizer checkpoint, or its content does not match its hash. Both are user errors.
    """
    path = Path(path)
    if not path.is_file():
        raise TokenizerNotFoundError(
            f"tokenizer checkpoint not found: {path}; train one with scripts/train_tokenizer.py "
            "(it writes <run_dir>/tokenizer.pt) or give the path of an existing one"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types on truncated/garbage files
        raise TokenizerFileError(
            f"{path}: not a readable tokenizer checkpoint ({type(e).__name__}: {e}); "
            "the file is corrupt or truncated: re-train or re-copy it"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TokenizerFileError(
            f"{path}: not a mega tokenizer checkpoint (expected format '{CHECKPOINT_FORMAT}'); "
            "write tokenizers with mega.tokenizers.save_tokenizer"
        )
    missing = [k for k in ("name", "kwargs", "state_dict", "sha256") if k not in payload]
    if missing:
        raise TokenizerFileError(f"{path}: tokenizer checkpoint lacks {missing}; the file is damaged")
    name, kwargs, state = payload["name"], payload["kwargs"], payload["state_dict"]
    try:
        digest = _hash(name, kwargs, state)
        if digest != payload["sha256"]:
            raise TokenizerFileError(
                f"{path}: content hash {digest[:12]} != recorded {payload['sha256'][:12]}; the file is damaged"
            )
        tok = build_tokenizer(name, **kwargs)
        tok.load_state_dict(state, strict=True)
    except (TypeError, KeyError, AttributeError, ValueError, RuntimeError) as err:
        if isinstance(err, TokenizerFileError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise TokenizerFileError(
            f"{path}: holds a tokenizer this code cannot rebuild ({type(err).__name__}: {first[:300]}); "
            "re-train it or use the code version that wrote it"
        ) from err
    logger.info("loaded tokenizer %s (%s) from %s", name, digest[:12], path)
    return tok.to(map_location).eval()
