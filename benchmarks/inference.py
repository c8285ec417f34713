"""Inference speed of every decoding mode (MEGA supp. speed figures; GenHMR's AITI per iteration).

    python benchmarks/inference.py                                   # the hmr_cpu architecture, random weights
    python benchmarks/inference.py --checkpoint outputs/train_hmr/<run>/hmr.pt
    python benchmarks/inference.py --overrides experiment=mega_resnet --batch 8   # a paper architecture

Prints median milliseconds per image at batch 1 for: deterministic; stochastic (T = 5) with Q = 1 and
Q = 16 (the Q samples run as one batch: the ratio must be far below 16; MEGA reports 5.75x); UGS (T = 5);
pose-guided refinement per iteration; throughput (images/s) of the deterministic mode at a large
batch; and the backbone alone (ms/image at batch 1 and at the large batch). Speed does not depend on the weights, so a random model of the right shape measures the same.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import mega  # noqa: F401  (torchvision shim)
from mega.hmr_checkpoint import build_hmr_model, load_hmr
from mega.inference import build_sampler, recover
from mega.refiners import build_refiner

REPO = Path(__file__).resolve().parents[1]


def random_model(overrides: list[str]):
    """The architecture of ``scripts/train_hmr.py`` with these overrides, random weights, random tokenizer."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mega.body import load_body_model
    from mega.tokenizers import build_tokenizer

    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train_hmr", overrides=overrides)
        tok_cfg = compose("train_tokenizer", overrides=["experiment=mesh_tokenizer_cpu"])
    body = load_body_model(**OmegaConf.to_container(cfg.body_model))
    tok_kwargs = OmegaConf.to_container(tok_cfg.tokenizer)
    tok_kwargs["num_vertices"] = body.num_vertices
    tokenizer = build_tokenizer(**tok_kwargs)
    if hasattr(tokenizer, "attach"):  # the convolutional mesh tokenizer builds its hierarchy from the body
        tokenizer.attach(body)
    model, _ = build_hmr_model(
        OmegaConf.to_container(cfg.backbone),
        OmegaConf.to_container(cfg.transformer),
        OmegaConf.to_container(cfg.conditioning),
        OmegaConf.to_container(cfg.heads),
        tokenizer,
        body,
    )
    return model.eval()


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sampler_preset(name: str):
    """The sampler of the preset ``configs/sampler/<name>.yaml``."""
    from omegaconf import OmegaConf

    return build_sampler(
        OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "sampler" / f"{name}.yaml"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--overrides", nargs="*", default=["experiment=hmr_cpu"])
    parser.add_argument("--batch", type=int, default=64, help="batch of the throughput figure")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_hmr(args.checkpoint) if args.checkpoint else random_model(args.overrides)
    size = model.backbone.input_size
    one = torch.randn(1, 3, size, size)
    kp = torch.cat([torch.rand(1, 17, 2) * 1.6 - 0.8, torch.ones(1, 17, 1)], dim=-1)
    backbone_calls = []
    model.backbone.register_forward_hook(lambda *a: backbone_calls.append(1))

    def run(preset, q: int = 1, keypoints=None, img=one, rotation="head", refiner=None):
        sampler, refine = sampler_preset(preset), build_refiner(refiner)
        return lambda: recover(model, img, sampler, q, refiner=refine, keypoints=keypoints, rotation=rotation)

    rows = []
    det = timed(run("deterministic"), args.repeats)
    rows.append(("deterministic (1 pass)", 1, det))
    rows.append(
        (
            "deterministic + kp rotation",
            1,
            timed(run("deterministic", keypoints=kp, rotation="keypoints"), args.repeats),
        )
    )
    sto1 = timed(run("stochastic", 1), args.repeats)
    sto16 = timed(run("stochastic", 16), args.repeats)
    rows += [("stochastic T=5, Q=1", 1, sto1), ("stochastic T=5, Q=16", 16, sto16)]
    ugs = timed(run("uncertainty_guided"), args.repeats)
    rows.append(("uncertainty-guided T=5", 1, ugs))
    pgr_cfg = {"name": "pose_guided", "iterations": 10}
    pgr = timed(run("uncertainty_guided", keypoints=kp, refiner=pgr_cfg), max(3, args.repeats // 3))
    rows.append(("UGS T=5 + pose-guided P=10", 1, pgr))
    backbone_calls.clear()
    run("stochastic", 16)()
    calls_q16 = len(backbone_calls)
    big = torch.randn(args.batch, 3, size, size)
    thr = timed(run("deterministic", img=big), max(2, args.repeats // 5))
    kp_big = kp.expand(args.batch, -1, -1)
    thr_kp = timed(
        run("deterministic", img=big, keypoints=kp_big, rotation="keypoints"), max(2, args.repeats // 5)
    )

    backbone_ms = {}
    for b in (1, args.batch):
        crops = torch.randn(b, 3, size, size)
        with torch.inference_mode():
            backbone_ms[b] = (
                timed(lambda crops=crops: model.backbone(crops), max(2, args.repeats // b)) * 1e3 / b
            )

    print(
        f"model: {args.checkpoint or ' '.join(args.overrides)} | crop {size} | {torch.get_num_threads()} threads"
    )
    print(
        f"backbone {model.backbone.registry_name}: {backbone_ms[1]:.2f} ms/image at batch 1, "
        f"{backbone_ms[args.batch]:.2f} ms/image at batch {args.batch}"
    )
    print(f"{'mode':<32}{'Q':>4}{'ms/image (batch 1)':>22}")
    for name, q, sec in rows:
        print(f"{name:<32}{q:>4}{sec * 1e3:>22.2f}")
    print(f"stochastic Q=16 / Q=1: {sto16 / sto1:.2f}x (16 samples in one batch; MEGA reports 5.75x)")
    print(f"pose-guided refinement: {(pgr - ugs) / 10 * 1e3:.2f} ms per iteration (GenHMR's AITI unit)")
    print(
        f"UGS per iteration: {ugs / 5 * 1e3:.2f} ms; backbone passes for one stochastic Q=16 call: {calls_q16}"
    )
    print(
        f"deterministic throughput at batch {args.batch}: {args.batch / thr:.1f} images/s "
        f"({args.batch / thr_kp:.1f} with rotation=keypoints)"
    )


if __name__ == "__main__":
    main()
