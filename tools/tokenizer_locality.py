"""How local are a mesh tokenizer's tokens? Change one token, decode, measure where the mesh moved.

    python tools/tokenizer_locality.py outputs/a/tokenizer.pt outputs/b/tokenizer.pt \
        [--data-root data/synthetic_motion] [--split val] [--meshes 32] [--out outputs/locality]

For every token position and each of ``--meshes`` held-out meshes, one token is replaced by another
code and the displacement of every vertex is recorded (:mod:`mega.tokenizers.locality`). Reported
per tokenizer: ``in_region`` (share of the area-weighted displacement inside the token's region: its
own for the convolutional tokenizer, the best of the same template's region partition for one without
regions, e.g. ``mesh_mlp``), ``area90`` (smallest share of the body surface holding 90 % of it) and
the region's area. Writes ``locality.json`` and ``locality.png`` (per tokenizer: the regions, then
the displacement of three tokens on the first mesh, brighter = moved more).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

import mega  # noqa: F401
from mega.atomic import write_json
from mega.body import load_body_model
from mega.body.rotations import axis_angle_to_matrix
from mega.data.motion import MotionDataset, build_motion_dataset
from mega.tokenizers import MeshConvVQVAE, load_tokenizer
from mega.tokenizers.locality import token_locality
from mega.tokenizers.mesh_hierarchy import build_hierarchy, level_sizes
from mega.tokenizers.mesh_vqvae import canonical_mesh
from mega.viz import rasterize, scalar_to_colors, shade, to_uint8

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("tokenizer_locality")


def held_out_meshes(body, data_root: str | None, split: str, count: int, as_is: bool = False) -> torch.Tensor:
    """(count, V, 3) canonical meshes of frames spread evenly over a synthetic motion split.

    ``as_is``: read the folder's files whatever generator state wrote them (no manifest check), e.g.
    to measure on the very data a tokenizer was trained on after the generator changed.
    """
    cfg = OmegaConf.load(ROOT / "configs" / "motion" / "synthetic_motion.yaml")
    if data_root:
        cfg.root = data_root
    if as_is:
        keys = ("target_fps", "trim", "hand_joints", "min_frames", "cache_dir")
        data = MotionDataset(cfg.root, split=split, split_protocol="folders", **{k: cfg[k] for k in keys})
    else:
        data = build_motion_dataset(cfg, split)
    idx = np.linspace(0, len(data) - 1, count).round().astype(int).tolist()
    batch = data[idx]
    betas = batch.get("betas", torch.zeros(count, 10))
    with torch.no_grad():
        return canonical_mesh(body, axis_angle_to_matrix(batch["body_pose"].float()), betas.float())[0]


def render(vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, size: int = 240) -> np.ndarray:
    """Front view of one mesh (V, 3) with per-vertex colours (V, 3) -> (size, size, 3) uint8."""
    v = vertices - vertices.mean(0)
    extent = float((v.max(0).values - v.min(0).values)[:2].max())
    focal = size * 3.0 / (extent * 1.15)
    cam = torch.stack([v[:, 0], -v[:, 1], 3.0 - v[:, 2]], -1)  # camera looks at the body's front
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])  # noqa: N806
    frags = rasterize(cam[None], faces, K, size, size)
    rgb, alpha = shade(frags, cam[None], faces, colors[None], torch.tensor([0.3, -0.3, -1.0]))
    img = rgb[0] * alpha[0, ..., None] + (1 - alpha[0, ..., None])
    return to_uint8(img)


def palette(n: int) -> torch.Tensor:
    """n distinct-ish colours (golden-angle hues), deterministic."""
    h = (torch.arange(n) * 0.618034) % 1.0
    k = (torch.tensor([5.0, 3.0, 1.0])[None] + h[:, None] * 6) % 6
    return 0.85 - 0.6 * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--body", default="free", help="body model name (free | smpl)")
    parser.add_argument("--body-path", default=None)
    parser.add_argument("--data-root", default=None, help="synthetic motion root (default: the config's)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--as-is", action="store_true", help="read --data-root without the generator check")
    parser.add_argument("--meshes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="outputs/locality")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    body = load_body_model(args.body, **({"path": args.body_path} if args.body_path else {})).eval()
    meshes = held_out_meshes(body, args.data_root, args.split, args.meshes, args.as_is)
    results, rows = {}, []
    for path in args.checkpoints:
        tok = load_tokenizer(path)
        if isinstance(tok, MeshConvVQVAE):
            tok.attach(body)
            h, own = tok.hierarchy, True
        else:  # no regions of its own: the partition the convolutional tokenizer would use
            h, own = (
                build_hierarchy(
                    body.v_template, body.faces, level_sizes(body.num_vertices, tok.num_tokens, 3.0)
                ),
                False,
            )
        regions, area = h.regions(), h.area[0]
        res = token_locality(
            tok, meshes, regions, area, torch.Generator().manual_seed(args.seed), own_regions=own
        )
        res.update(
            tokenizer=tok.registry_name,
            checkpoint=str(path),
            parameters=sum(p.numel() for p in tok.parameters()),
        )
        results[f"{tok.registry_name}:{path}"] = res
        log.info(
            "%s (%s): in_region %.3f  area90 %.3f  region area %.4f m^2 (%.1f %% of the body)",
            tok.registry_name,
            path,
            res["in_region"],
            res["area90"],
            res["region_area_m2"],
            100 * res["region_share"],
        )
        # figure row: regions, then three tokens' displacement on the first mesh
        with torch.no_grad():
            ids = tok.encode(meshes[:1])
            base = tok.decode(ids)[0]
            shown = meshes[0]  # the input mesh: the geometry stays readable whatever the decoder does
            panels = [render(shown, body.faces, palette(int(regions.max()) + 1)[regions])]
            order = sorted(range(tok.num_tokens), key=lambda t: -res["per_token_in_region"][t])
            for t in (order[0], order[len(order) // 2], order[-1]):
                changed = ids.clone()
                changed[0, t] = (ids[0, t] + tok.codebook_size // 2) % tok.codebook_size
                disp = (tok.decode(changed)[0] - base).norm(dim=-1)
                panels.append(
                    render(shown, body.faces, scalar_to_colors(disp, 0.0, float(disp.max()) + 1e-9))
                )
        rows.append(np.concatenate(panels, 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "locality.json", results)
    from PIL import Image

    Image.fromarray(np.concatenate(rows, 0)).save(out / "locality.png")
    log.info("wrote %s and %s", out / "locality.json", out / "locality.png")
    print(
        json.dumps(
            {k: {m: v[m] for m in ("in_region", "area90", "region_share")} for k, v in results.items()}
        )
    )


if __name__ == "__main__":
    main()
