"""The papers' training ablations at CPU scale: pre-training vs scratch (both tokenizers) and GenHMR
Table 10 (which losses), each a real ``scripts/train_hmr.py`` run scored on the synthetic test split.

    python tools/training_ablations.py                         # every variant below, into outputs/ablations/
    python tools/training_ablations.py --only mesh mesh_scratch --out outputs/ablations

A variant whose ``<out>/<name>/results.json`` exists is not trained again (delete it to redo). Each run
is ``train_hmr.py experiment=<preset> <overrides>``; the table reads the run's own test evaluation
(``<run>/test/summary.json``: the whole test split, deterministic decoding, rotation from the heads).
The pose-tokenizer variants with pre-training need a masked-token pre-training run on the pose tokenizer
(``scripts/pretrain.py tokenizer.checkpoint=<pose tokenizer>``): pass it as ``--pose-pretrained``.
Prints a Markdown table and writes it to ``<out>/ablations.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The larger synthetic set (generated on first use, about 3 CPU-minutes with 2 workers); its test split is the
#: same 500 images as the presets' (``data/synthetic_images_cpu``).
_MORE_DATA = ["images.root=data/synthetic_images_12k", "images.generate.sizes.train=12000",
              "+images.generate.workers=2", "engine.max_steps=6000", "threads=2"]  # fmt: skip

#: Fine-tune the end of BlazePose (mega/backbones/blazepose.py: the last 41 convolutions; the cache keeps
#: the 16 x 16 x 88 map before them), at a tenth of the lr of the new parts.
_TUNED = ["backbone.freeze=false", "backbone.trainable_blocks=41", "engine.lr_scales={backbone.net.:0.1}"]

#: name -> (experiment preset, overrides, what it shows). GenHMR's losses (Table 10): L_mask, L_theta,
#: L_3D, L_2D through the straight-through Gumbel-softmax tokens (the pose preset's objective).
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "mesh": ("hmr_cpu", [], "MEGA (mesh tokens), pre-trained transformer"),
    "mesh_scratch": ("hmr_cpu", ["transformer.init=null"], "MEGA, transformer from scratch"),
    "pose": ("hmr_pose_cpu", [], "GenHMR (pose tokens), all losses, transformer from scratch"),
    "pose_pretrained": (
        "hmr_pose_cpu",
        ["transformer.init=${POSE_PRETRAINED}"],
        "GenHMR, pre-trained transformer",
    ),
    "pose_no_3d": ("hmr_pose_cpu", ["loss.weights.joints_3d=0"], "GenHMR without L_3D"),
    "pose_no_2d": ("hmr_pose_cpu", ["loss.weights.kp2d=0"], "GenHMR without L_2D"),
    "pose_mask_only": (
        "hmr_pose_cpu",
        ["loss.weights.theta=0", "loss.weights.joints_3d=0", "loss.weights.kp2d=0"],
        "GenHMR without the differentiable-sampling losses (L_mask + betas only)",
    ),
    # 4x the images and 4x the updates (the same 16 passes over 2 cached views): does more data help?
    "mesh_12k": ("hmr_cpu", [*_MORE_DATA], "MEGA, 12,000 training images, 6000 updates"),
    "pose_12k": ("hmr_pose_cpu", [*_MORE_DATA], "GenHMR, 12,000 training images, 6000 updates"),
    # BlazePose's 8 x 8 stage and regression branch fine-tuned at 0.1x the lr (the 16 x 16 map is cached)
    "mesh_tuned": ("hmr_cpu", [*_TUNED], "MEGA, BlazePose's last stage + regression branch fine-tuned"),
    "mesh_tuned_12k": ("hmr_cpu", [*_TUNED, *_MORE_DATA], "MEGA, fine-tuned last stage, 12,000 images"),
    "mesh_tuned_slow": (
        "hmr_cpu",
        [*_TUNED[:2], "engine.lr_scales={backbone.net.:0.03}"],
        "MEGA, fine-tuned last stage at 0.03x the lr",
    ),  # fmt: skip
    "mesh_tuned_branch": (
        "hmr_cpu",
        ["backbone.freeze=false", "backbone.trainable_blocks=29", _TUNED[2]],
        "MEGA, BlazePose's regression branch fine-tuned (the 8 x 8 map cached)",
    ),  # fmt: skip
}


def run_variant(name: str, out: Path, python: str, pose_pretrained: str | None) -> Path:
    """Train one variant (unless done) and return its run directory."""
    preset, overrides, _ = VARIANTS[name]
    run = out / name
    if (run / "results.json").exists():
        return run
    if any("${POSE_PRETRAINED}" in o for o in overrides):
        if not pose_pretrained:
            raise SystemExit(
                f"variant {name}: pass --pose-pretrained PATH (a pose-tokenizer pretrain.py checkpoint)"
            )
        overrides = [o.replace("${POSE_PRETRAINED}", pose_pretrained) for o in overrides]
    cmd = [python, str(ROOT / "scripts" / "train_hmr.py"), f"experiment={preset}", "logger=none",
           f"hydra.run.dir={run}", *overrides]  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(run / "ablation.log", "w") as log:
        print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if rc != 0:
        raise SystemExit(f"variant {name} failed (exit {rc}); see {run / 'ablation.log'}")
    print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def row(name: str, run: Path) -> str:
    """One Markdown row: the run's test figures (mm, degrees) and its training time."""
    summary = json.loads((run / "test" / "summary.json").read_text())
    results = json.loads((run / "results.json").read_text())
    m, o = summary["metrics"], summary.get("orientation", {})
    rot = f"{o['rot_err_deg']:.1f} / {o['rot_err_deg_median']:.1f}" if o else "-"
    return (f"| {name} | {VARIANTS[name][2]} | {m['pve']:.1f} | {m['mpjpe']:.1f} | {m['pa_mpjpe']:.1f} | {rot} "
            f"| {results['train_seconds']:.0f} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="variants to run (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablations")
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the runs")
    ap.add_argument("--pose-pretrained", help="a pose-tokenizer pre-training checkpoint (pose_pretrained)")
    args = ap.parse_args(argv)
    names = args.only or [n for n in VARIANTS if n != "pose_pretrained" or args.pose_pretrained]
    runs = {n: run_variant(n, args.out, args.python, args.pose_pretrained) for n in names}
    lines = ["| variant | what | PVE | MPJPE | PA-MPJPE | rotation mean / median (deg) | train s |",
             "|---|---|---|---|---|---|---|", *(row(n, r) for n, r in runs.items())]  # fmt: skip
    table = "\n".join(lines)
    print(table)
    (args.out / "ablations.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
