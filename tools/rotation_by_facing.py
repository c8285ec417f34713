"""Where a model's global-rotation errors are: split by how the person faces the camera.

Reads an evaluation's ``per_sample.csv`` (``scripts/eval.py`` or a ``train_hmr.py`` run's ``test/``: columns
``index`` and ``rot_err_deg``) and the split's npz (``pose``: the true global orientation, axis-angle in the
camera frame; ``S``: 3D joints in the camera frame, the pelvis first, for the direction to the camera),
and prints the error per facing bucket: the angle between the body's forward axis (SMPL's +z) and the
direction from the pelvis to the camera, 0 = facing the camera, 180 = seen from behind.

    python tools/rotation_by_facing.py outputs/quickstart/eval/deterministic/per_sample.csv \\
        data/synthetic_images_cpu/test.npz
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from mega.body.rotations import axis_angle_to_matrix


def facing_angles(global_orient: np.ndarray, pelvis: np.ndarray | None) -> np.ndarray:
    """(N, 3) axis-angle orientations (camera frame), (N, 3) pelvis positions or None (the optical axis)
    -> (N,) degrees between the body's forward axis and the direction to the camera."""
    rot = axis_angle_to_matrix(torch.as_tensor(global_orient, dtype=torch.float64)).numpy()
    forward = rot[:, :, 2]
    to_camera = -pelvis if pelvis is not None else np.tile([0.0, 0.0, -1.0], (len(forward), 1))
    to_camera = to_camera / np.linalg.norm(to_camera, axis=1, keepdims=True)
    cos = (forward * to_camera).sum(1) / np.linalg.norm(forward, axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def breakdown(err: np.ndarray, facing: np.ndarray, edges: tuple[float, ...] = (60.0, 120.0)) -> list[dict]:
    """Per bucket of ``facing`` (split at ``edges``): n, mean and median error, share above 90 degrees."""
    bounds = [0.0, *edges, 180.0 + 1e-9]
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        e = err[(facing >= lo) & (facing < hi)]
        rows.append({"from": lo, "to": min(hi, 180.0), "n": len(e),
                     "mean": float(e.mean()) if len(e) else float("nan"),
                     "median": float(np.median(e)) if len(e) else float("nan"),
                     "flips": float((e > 90).mean() * 100) if len(e) else float("nan")})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("per_sample", type=Path, help="an evaluation's per_sample.csv (with rot_err_deg)")
    ap.add_argument("npz", type=Path, help="the evaluated split's npz (pose, S)")
    ap.add_argument("--edges", type=float, nargs="+", default=[60.0, 120.0], help="bucket edges (degrees)")
    args = ap.parse_args(argv)
    with open(args.per_sample, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "rot_err_deg" not in rows[0]:
        raise SystemExit(
            f"{args.per_sample}: no rot_err_deg column (evaluate a model whose heads give the rotation)"
        )
    index = np.array([int(r["index"]) for r in rows])
    err = np.array([float(r["rot_err_deg"]) for r in rows])
    with np.load(args.npz) as data:
        if "pose" not in data:
            raise SystemExit(f"{args.npz}: no 'pose' key (the true global orientation)")
        orient = data["pose"][index, :3]
        pelvis = data["S"][index, 0, :3] if "S" in data else None
    facing = facing_angles(orient, pelvis)
    print(
        f"{len(err)} samples of {args.per_sample}: rotation error (degrees) by facing (0 = towards the camera)\n"
    )
    print("| facing (deg) | n | mean | median | > 90 deg |")
    print("|---|---|---|---|---|")
    for b in breakdown(err, facing, tuple(args.edges)):
        print(
            f"| {b['from']:.0f}-{b['to']:.0f} | {b['n']} | {b['mean']:.1f} | {b['median']:.1f} | {b['flips']:.1f} % |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
