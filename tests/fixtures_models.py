"""A tiny randomly initialised HMR model saved as a self-describing hmr.pt (no training), and a small held-out
synthetic image set, for the demo's and the web page's tests."""

from __future__ import annotations

from pathlib import Path

import torch

from mega.hmr_checkpoint import build_hmr_model, save_hmr
from mega.tokenizers import build_tokenizer, save_tokenizer


def tiny_mesh_tokenizer(
    body, codebook_size: int = 8, code_dim: int = 2, hidden_dim: int = 16, name: str = "mesh_mlp", **kwargs
):
    """An untrained MLP mesh tokenizer of 6 tokens over ``body``'s vertices, one residual block (seed torch
    first); ``name`` ``mesh_vqvae`` is the same class under the default variant's name."""
    sizes = dict(
        num_tokens=6, codebook_size=codebook_size, code_dim=code_dim, hidden_dim=hidden_dim, num_blocks=1
    )
    return build_tokenizer(name, num_vertices=body.num_vertices, **sizes, **kwargs)


def save_tiny_hmr(folder: Path, body) -> Path:
    """A tiny random HMR model (mesh tokenizer, 48 px tiny CNN) as a self-describing hmr.pt."""
    torch.manual_seed(0)
    tok = tiny_mesh_tokenizer(body)
    with torch.no_grad():
        tok.quantizer.load_codebook(torch.randn(tok.codebook_size, tok.code_dim) * 0.5)
        for p in tok.decoder_parameters() if hasattr(tok, "decoder_parameters") else tok.parameters():
            if not p.any():  # zero-initialised output layers: make different codes decode differently
                p.normal_(0.0, 0.02)
    tok_path = folder / "tokenizer.pt"
    save_tokenizer(tok_path, tok)
    parts = {
        "backbone": {
            "name": "tiny_cnn",
            "input_size": 48,
            "widths": [8, 16, 32],
            "depths": [1, 1],
            "pyramid_scales": [],
        },
        "transformer": {"dim": 32, "encoder_depth": 1, "decoder_depth": 2, "num_heads": 2},
        "conditioning": {"name": "prefix"},
        "heads": {"head_hidden": 32, "init_scale": 0.9},
    }
    model, sizes = build_hmr_model(**parts, tokenizer=tok, body=body)
    path = save_hmr(folder / "hmr.pt", model, parts, sizes, tok_path, body_model={"name": "free"})
    return path


def heldout_set(root: Path) -> Path:
    """A small synthetic image set with only a held-out test split (3 images of 128 x 112 px)."""
    from mega.data.images.synthetic import ensure_synthetic_images

    motion = {"root": str(root / "motion"), "seed": 0, "sequences": {"train": 2, "val": 1, "test": 2}}
    return ensure_synthetic_images(
        root / "images",
        sizes={"test": 3},
        motion=motion,
        progress=False,
        width=128,
        height=112,
        box_px=[70.0, 100.0],
    )
