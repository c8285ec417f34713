"""HMR training speed: images/s and model FLOPs utilisation at the CPU preset; step time and peak memory of
each paper preset at a small batch.

    python benchmarks/hmr.py                          # every preset, each in its own process (peak memory)
    python benchmarks/hmr.py --presets hmr_cpu --batch 32 --steps 10
    python benchmarks/hmr.py --device cuda            # GPU figures

One training step = forward + backward + AdamW of ``mega.losses.HMRObjective`` on the preset's model (backbone,
conditioning, transformer, heads; untrained weights, random tokenizer of the preset's size: speed only) and a
batch of random images and ground truth in the sample format of CONTRACTS.md. Printed per preset: median step
time, images/s, model FLOPs per image (``torch.utils.flop_counter`` over one step: forward + backward, every
matmul / convolution), achieved GFLOP/s and MFU = achieved / the measured fp32 matmul peak of the same device
and thread count, and peak memory (CUDA: max allocated; CPU: the process's peak RSS, which includes Python
and torch, ~0.3 GB). With ``--data``, the CPU preset also times the data pipeline (decode + crop + augment)
of the synthetic image benchmark, single process, and the end-to-end images/s with ``num_workers=0``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from timing import matmul_gflops, median_seconds
from torch.utils.flop_counter import FlopCounterMode

import mega  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
PRESETS = ["hmr_cpu", "hmr_pose_cpu", "mega_resnet", "mega_hrnet", "mega_vit", "genhmr_vit"]


def random_batch(b: int, size: int, device: str) -> dict[str, torch.Tensor]:
    """Random images and ground truth in the sample format (CONTRACTS.md)."""
    g = torch.Generator().manual_seed(0)
    batch = {
        "img": torch.randn(b, 3, size, size, generator=g),
        "kp2d_coco": torch.cat([torch.rand(b, 17, 2, generator=g) * 2 - 1, torch.ones(b, 17, 1)], -1),
        "kp2d_smpl": torch.cat([torch.rand(b, 24, 2, generator=g) * 2 - 1, torch.ones(b, 24, 1)], -1),
        "global_orient": torch.randn(b, 3, generator=g) * 0.5,
        "body_pose": torch.randn(b, 23, 3, generator=g) * 0.2,
        "betas": torch.randn(b, 10, generator=g),
        "has_smpl": torch.ones(b),
        "joints_3d": torch.cat([torch.randn(b, 24, 3, generator=g), torch.ones(b, 24, 1)], -1),
        # where the crops sit in their images (read by crop-relative heads): off-centre boxes of 2S px images
        "img_size": torch.full((b, 2), 2.0 * size),
        "bbox_center": torch.rand(b, 2, generator=g) * size + size / 2,
        "bbox_size": torch.full((b,), float(size)),
        "cam_int": torch.tensor([[5.0 * size, 0.0, size], [0.0, 5.0 * size, size], [0.0, 0.0, 1.0]]).expand(
            b, 3, 3
        ),
    }
    return {k: v.to(device) for k, v in batch.items()}


def build(preset: str, device: str):
    """(model, objective, cfg) of a preset with a random tokenizer of the preset's vocabulary."""
    from hydra import compose, initialize_config_dir
    from train_hmr import build_model

    from mega.body import load_body_model
    from mega.engine import register_resolvers
    from mega.losses import HMRObjective
    from mega.tokenizers import build_tokenizer

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train_hmr", overrides=[f"experiment={preset}"])
    paper = not preset.endswith("_cpu")
    name = {"mesh": "mesh_vqvae", "pose": "pose_vqvae"}[cfg.tokenizer.kind] + ("" if paper else "_cpu")
    tok_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "tokenizer" / f"{name}.yaml"))
    body = load_body_model("free").to(device)
    if cfg.tokenizer.kind == "mesh":
        tok_cfg["num_vertices"] = body.num_vertices
    torch.manual_seed(0)
    tok = build_tokenizer(**tok_cfg).to(device).eval()
    model, _ = build_model(cfg, tok, body)
    model.to(device).train()
    objective = HMRObjective(
        OmegaConf.to_container(cfg.loss.weights),
        total_steps=1000,
        gumbel=OmegaConf.to_container(cfg.loss.gumbel),
        keypoints=list(cfg.loss.keypoints),
    )
    return model, objective, cfg


def run_preset(preset: str, batch: int, steps: int, device: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    model, objective, cfg = build(preset, device)
    size = model.backbone.input_size
    data = random_batch(batch, size, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(model, data)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()  # also the warm-up
    flops = fc.get_total_flops()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sec = median_seconds(step, device, steps, warmup=0)  # (the FLOP count's run was the warm-up)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 peak, not TF32's
    peak = matmul_gflops(device, n=1024, repeats=5)
    mem = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ) / 2**30
    n_params = sum(p.numel() for p in params)
    return {
        "preset": preset,
        "backbone": cfg.backbone.name,
        "conditioning": cfg.conditioning.name,
        "tokenizer": cfg.tokenizer.kind,
        "batch": batch,
        "crop": size,
        "trainable_M": n_params / 1e6,
        "step_s": sec,
        "images_per_s": batch / sec,
        "gflop_per_image": flops / batch / 1e9,
        "achieved_gflops": flops / sec / 1e9,
        "peak_gflops": peak,
        "mfu": flops / sec / 1e9 / peak,
        "peak_mem_gib": mem,
        "device": device,
        "threads": threads,
    }


def data_throughput(n: int = 64) -> dict:
    """Images/s of the CPU preset's data pipeline (synthetic_images, 128 px, augmented), one process."""
    from hydra import compose, initialize_config_dir

    from mega.data.images import build_image_dataset
    from mega.engine import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train_hmr")
    ds = build_image_dataset(cfg.images, "train", crop_size=cfg.backbone.input_size)
    ds[0]
    t = time.perf_counter()
    for i in range(1, n + 1):
        ds[i % len(ds)]
    return {"data_images_per_s": n / (time.perf_counter() - t)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="*", default=PRESETS)
    parser.add_argument(
        "--batch", type=int, default=None, help="default: 32 for *_cpu presets, 2 for paper ones"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 10 CPU presets, 2 paper)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", action="store_true", help="also time the CPU preset's data pipeline")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: one preset, JSON out
    args = parser.parse_args()
    if args.one:
        cpu = args.one.endswith("_cpu")
        batch = args.batch or (32 if cpu else 2)
        steps = args.steps or (10 if cpu else 2)
        print("RESULT " + json.dumps(run_preset(args.one, batch, steps, args.device, args.threads)))
        return
    rows = []
    for preset in args.presets:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            preset,
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ]
        cmd += [
            *(["--batch", str(args.batch)] if args.batch else []),
            *(["--steps", str(args.steps)] if args.steps else []),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{preset}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(line[7:])
        rows.append(r)
        print(
            f"{r['preset']:<13} {r['backbone']:<9} {r['conditioning']:<15} {r['tokenizer']:<4} B={r['batch']:<3} "
            f"{r['trainable_M']:7.1f} M  step {r['step_s'] * 1000:9.1f} ms  {r['images_per_s']:8.2f} img/s  "
            f"{r['gflop_per_image']:7.2f} GFLOP/img  MFU {100 * r['mfu']:5.1f}% of {r['peak_gflops']:.0f} GFLOP/s  "
            f"peak {r['peak_mem_gib']:6.2f} GiB",
            flush=True,
        )
    if args.data:
        d = data_throughput()
        cpu = next((r for r in rows if r["preset"] == "hmr_cpu"), None)
        line = f"data pipeline (synthetic_images, 128 px, augmented, 1 process): {d['data_images_per_s']:.1f} img/s"
        if cpu:
            e2e = 1 / (1 / d["data_images_per_s"] + 1 / cpu["images_per_s"])
            line += f"; hmr_cpu end to end with num_workers=0: {e2e:.1f} img/s"
        print(line)


if __name__ == "__main__":
    main()
