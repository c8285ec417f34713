"""Tokenizer throughput: encode+decode samples/s and training samples/s, per preset and batch size.

    python benchmarks/tokenizers.py [--threads 2] [--device cpu] [--body free|smpl] [--presets a,b]
    python benchmarks/tokenizers.py --params-only --body smpl     # parameter counts only, no timing

Presets are the YAML files of ``configs/tokenizer`` (the mesh tokenizer gets the body's vertex count).
``encode+decode``: ``decode(encode(x))`` in eval mode without gradients, x = canonical meshes
(B, V, 3) or 6D poses (B, 23, 6). ``train step``: ``tokenizer.loss(batch, body)`` (which runs the
body model on the batch, as the training script does), backward and an AdamW step.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf
from timing import median_seconds

import mega  # noqa: F401
from mega.body import load_body_model
from mega.body.rotations import matrix_to_rot6d
from mega.body.synthetic import write_synthetic_smpl
from mega.tokenizers import build_tokenizer
from mega.tokenizers.base import body_pose_matrices
from mega.tokenizers.mesh_vqvae import canonical_mesh

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"


def _batch(b: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(b)
    pose = torch.randn(b, 23, 3, generator=g) * 0.3
    return {"body_pose": pose.to(device), "betas": torch.randn(b, 10, generator=g).to(device)}


def _inputs(tok, body, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    rot = body_pose_matrices(batch)
    if "num_vertices" in tok.config:
        with torch.no_grad():
            return canonical_mesh(body, rot, batch["betas"])[0]
    return matrix_to_rot6d(rot)


def bench_preset(
    name: str, body, device: str, repeats: int, sizes: list[int], train_sizes: list[int]
) -> None:
    """Print one line per batch size for encode+decode, then for a training step."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{name}.yaml"))
    if "num_vertices" in cfg:
        cfg["num_vertices"] = body.num_vertices
        if cfg.get("level_sizes") and cfg["level_sizes"][0] >= body.num_vertices:  # SMPL's level sizes
            cfg["level_sizes"] = None  # another body: geometric steps of pool_factor
            print(f"{name}: level_sizes are SMPL's; geometric steps of pool_factor on this body")
    tok = build_tokenizer(**cfg).to(device)
    n_params = sum(p.numel() for p in tok.parameters()) / 1e6
    print(f"{name}: L={tok.num_tokens} K={tok.codebook_size} D={tok.code_dim}, {n_params:.3f} M parameters")
    if not sizes and not train_sizes:
        return
    tok.train()
    tok.loss(_batch(max(sizes), device), body)  # data-driven initialisation (stats, codebook)
    tok.eval()
    for b in sizes:
        x = _inputs(tok, body, _batch(b, device))
        with torch.no_grad():
            sec = median_seconds(lambda x=x: tok.decode(tok.encode(x)), device, repeats)
        print(f"  encode+decode B={b:4d}  {sec * 1000:9.2f} ms  {b / sec:10.0f} samples/s")
    opt = torch.optim.AdamW(tok.parameters(), lr=1e-4)
    tok.train()
    for b in train_sizes:
        batch = _batch(b, device)

        def step(batch=batch):
            loss, _ = tok.loss(batch, body)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        sec = median_seconds(step, device, max(2, repeats // 2))
        print(f"  train step    B={b:4d}  {sec * 1000:9.2f} ms  {b / sec:10.0f} samples/s (incl. body model)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--body", default="free", choices=["free", "smpl"])
    parser.add_argument(
        "--presets", default="mesh_vqvae_cpu,mesh_conv_cpu,pose_vqvae_cpu,mesh_vqvae,mesh_conv,pose_vqvae"
    )
    parser.add_argument("--params-only", action="store_true", help="print parameter counts, time nothing")
    parser.add_argument("--sizes", default="1,16,64,256")
    parser.add_argument("--train-sizes", default="32,128")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, body {args.body}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.body == "smpl":  # the synthetic SMPL-format file: SMPL's 6890-vertex topology
            write_synthetic_smpl(tmp, genders=("neutral",))
            body = load_body_model("smpl", path=tmp, gender="neutral")
        else:
            body = load_body_model("free")
    body = body.to(args.device).eval()
    sizes = [] if args.params_only else [int(s) for s in args.sizes.split(",")]
    train_sizes = [] if args.params_only else [int(s) for s in args.train_sizes.split(",")]
    for name in args.presets.split(","):
        bench_preset(name, body, args.device, args.repeats, sizes, train_sizes)


if __name__ == "__main__":
    main()
