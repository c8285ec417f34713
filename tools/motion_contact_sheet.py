"""Look at the procedural motion: a contact sheet per activity, ground contact and joint-angle coverage.

    python tools/motion_contact_sheet.py                         # outputs/motion/contact_sheet.png + stats
    python tools/motion_contact_sheet.py --coverage data/synthetic_motion --split train

The sheet has one row per activity (:data:`mega.data.motion.synth.ACTIVITY_NAMES`) and ``--columns``
samples (frames spread over several sequences, subjects of random shape), each drawn with the free
body as a shaded orthographic mesh seen from the front-left and above, on the floor grid (y = 0);
vertices within 2 cm of the floor are red (the body's contacts). Small inline renderer (painter's
algorithm with PIL), so the script needs nothing beyond the package.

``--coverage ROOT`` reads an AMASS-format folder (any generator version) and writes the joint-angle
coverage against :mod:`mega.data.motion.joint_limits`: per joint and Euler angle the 1st / 99th percentile,
the extremes and the fraction of 5-degree bins of the limit range that hold at least 0.05 % of frames.
Writes are atomic (mega.atomic).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import mega  # noqa: F401  (torchvision shim)
from mega.atomic import atomic_path, write_json
from mega.body import load_body_model
from mega.body.rotations import axis_angle_to_matrix
from mega.data.motion.joint_limits import BODY_JOINT_NAMES, EULER_LIMITS, EULER_ORDERS, body_pose_to_euler
from mega.data.motion.synth import ACTIVITY_NAMES, DURATION_S, generate_motion, posed_vertices, vertex_parts

CONTACT_M = 0.02


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def render(
    verts: np.ndarray,
    faces: np.ndarray,
    size: tuple[int, int],
    scale: float,
    view: np.ndarray,
    centre: np.ndarray,
) -> Image.Image:
    """Shaded orthographic view of one mesh on a floor grid.

    Args:
        verts: (V, 3) world vertices, y up, floor at y = 0. faces: (F, 3).
        size: (width, height) px. scale: px per metre. view: (3, 3) world -> camera (camera looks
            along -z, y up). centre: (3,) world point drawn at the middle, floor level kept.
    """
    w, h = size
    img = Image.new("RGB", size, (250, 250, 247))
    draw = ImageDraw.Draw(img)
    floor_row = h - 0.1 * h

    def project(p: np.ndarray) -> np.ndarray:
        q = (p - centre * np.array([1, 0, 1])) @ view.T
        return np.stack([w / 2 + q[..., 0] * scale, floor_row - q[..., 1] * scale, q[..., 2]], -1)

    grid = np.arange(-1.5, 1.51, 0.25)
    for g in grid:  # floor grid lines, both directions
        for a, b in (
            (np.array([g, 0, -1.5]), np.array([g, 0, 1.5])),
            (np.array([-1.5, 0, g]), np.array([1.5, 0, g])),
        ):
            pa, pb = project(a + centre * [1, 0, 1]), project(b + centre * [1, 0, 1])
            draw.line([(pa[0], pa[1]), (pb[0], pb[1])], fill=(215, 215, 210))
    p = project(verts)
    tri = p[faces]  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal[:, 1] *= -1  # pixel rows grow downwards
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    light = np.array([0.4, 0.6, 0.7]) / np.linalg.norm([0.4, 0.6, 0.7])
    shade = 0.35 + 0.65 * np.abs(normal @ light)
    contact = (verts[faces, 1] < CONTACT_M).any(1)
    base = np.where(contact[:, None], [[215, 60, 50]], [[120, 150, 200]])
    colors = (base * shade[:, None]).astype(int)
    for f in np.argsort(tri[:, :, 2].mean(1)):  # far to near
        draw.polygon([tuple(v[:2]) for v in tri[f]], fill=tuple(colors[f]))
    return img


def contact_sheet(
    seed: int, columns: int, seqs_per_row: int, cell: tuple[int, int], activities: list[str] | None = None
) -> tuple[Image.Image, dict]:
    """One row per activity; returns the image and per-activity ground statistics.

    On stairs (``step``, and ``mixture``, which may climb) the floor grid of a cell is drawn at the
    height of the body's lowest vertex (the stair it stands on) and contacts are coloured against it.
    """
    activities = list(activities or ACTIVITY_NAMES)
    body = load_body_model("free")
    faces = body.faces.numpy()
    label_w = 90
    sheet = Image.new("RGB", (label_w + columns * cell[0], len(activities) * cell[1]), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    view = _rot_x(np.deg2rad(12)) @ _rot_y(np.deg2rad(-35))
    owner = body.smpl.lbs_weights.argmax(1).numpy()
    parts = {k: v for k, v in vertex_parts(body).items() if k in ("feet", "knees", "hands", "seat")}
    parts.update(trunk=np.isin(owner, [3, 6, 9, 13, 14, 16, 17]), head=np.isin(owner, [12, 15]))
    stats = {}
    for row, activity in enumerate(activities):
        draw.text((4, row * cell[1] + cell[1] // 2 - 6), activity, fill="black", font=font)
        col, lowest, contact, touching, angles = 0, [], [], [], []
        for s in range(seqs_per_row):
            rng = np.random.default_rng([seed, ACTIVITY_NAMES.index(activity), s])
            betas = np.clip(rng.standard_normal(10), -2.5, 2.5)
            seq = generate_motion(rng, activity, 30.0, rng.uniform(*DURATION_S), betas, body)
            n = len(seq["transl"])
            pose = np.concatenate([seq["body_pose"], np.zeros((n, 2, 3))], 1)
            verts = posed_vertices(body, seq["global_orient"], pose, betas) + seq["transl"][:, None].astype(
                np.float32
            )
            lowest.append(verts[..., 1].min(1))
            contact.append(verts[..., 1].min(1) < CONTACT_M)
            floor_now = verts[..., 1].min(1, keepdims=True) + CONTACT_M  # the support the body stands on
            touching.append({k: (verts[:, m, 1] < floor_now).any(1) for k, m in parts.items()})
            rot = axis_angle_to_matrix(
                torch.from_numpy(np.concatenate([seq["global_orient"][:, None], pose], 1))
            )
            euler = np.rad2deg(body_pose_to_euler(rot[:, 1:].numpy()))
            tilt = np.rad2deg(np.arccos(np.clip(rot[:, 0, 1, 1].numpy(), -1, 1)))  # pelvis up vs world up
            angles.append(np.stack([-euler[:, 0:2, 0].min(1), euler[:, 3:5, 0].max(1), tilt], 1))
            picks = columns // seqs_per_row + (s < columns % seqs_per_row)
            for i in np.linspace(0, n - 1, picks + 2)[1:-1].astype(int):
                heading = np.arctan2(
                    *(axis_angle_to_matrix(torch.from_numpy(seq["global_orient"][i]))[[0, 2], 2].numpy())
                )
                floor = verts[i, :, 1].min() if activity in ("step", "mixture") else 0.0  # on stairs
                v = (verts[i] - verts[i].mean(0) * [1, 0, 1] - [0, floor, 0]) @ _rot_y(-heading).T  # face +z
                img = render(v, faces, cell, cell[1] / 2.3, view, np.zeros(3))
                sheet.paste(img, (label_w + col * cell[0], row * cell[1]))
                col += 1
        lowest_all, ang = np.concatenate(lowest), np.concatenate(angles)
        stats[activity] = {
            "lowest_vertex_min_mm": float(1000 * lowest_all.min()),
            "lowest_vertex_median_mm": float(1000 * np.median(lowest_all)),
            "frames_touching_floor": float(np.concatenate(contact).mean()),
            # share of frames in which each part is within 2 cm of the body's support
            "parts_on_support": {k: float(np.concatenate([t[k] for t in touching]).mean()) for k in parts},
            "hip_flexion_max_deg": float(ang[:, 0].max()),
            "knee_flexion_max_deg": float(ang[:, 1].max()),
            "pelvis_tilt_deg_p5_p95": [
                float(np.percentile(ang[:, 2], 5)),
                float(np.percentile(ang[:, 2], 95)),
            ],
        }
    return sheet, stats


def coverage(root: Path, split: str, bin_deg: float = 5.0, min_share: float = 5e-4) -> dict:
    """Joint-angle coverage of an AMASS-format folder's ``split`` against the joint limits."""
    from mega.data.motion.amass import list_motion_files, load_motion_npz

    poses = [load_motion_npz(p, target_fps=30.0).body_pose for p in list_motion_files(root / split)]
    pose = np.concatenate(poses).astype(np.float64)
    euler = np.rad2deg(body_pose_to_euler(axis_angle_to_matrix(torch.from_numpy(pose)).numpy()))
    limits = np.rad2deg(EULER_LIMITS)
    out = {"frames": len(pose), "joints": {}}
    for j, name in enumerate(BODY_JOINT_NAMES):
        for k, axis in enumerate(EULER_ORDERS[j]):
            a, (lo, hi) = euler[:, j, k], limits[j, k]
            edges = np.arange(lo, hi + bin_deg, bin_deg)
            counts, _ = np.histogram(a, edges)
            out["joints"][f"{name}.{axis.lower()}"] = {
                "limit": [float(lo), float(hi)],
                "p1": float(np.percentile(a, 1)),
                "p99": float(np.percentile(a, 99)),
                "min": float(a.min()),
                "max": float(a.max()),
                "bins_covered": float((counts >= min_share * len(a)).mean()),
            }
    out["mean_bins_covered"] = float(np.mean([v["bins_covered"] for v in out["joints"].values()]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="outputs/motion", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", type=int, default=8, help="samples per activity")
    parser.add_argument("--sequences", type=int, default=4, help="sequences per activity")
    parser.add_argument("--cell", type=int, nargs=2, default=(120, 150), help="cell width height, px")
    parser.add_argument(
        "--coverage", type=Path, default=None, help="AMASS-format folder: coverage stats only"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--activities", nargs="*", default=None, help="rows to draw (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.coverage is not None:
        stats = coverage(args.coverage, args.split)
        write_json(out / f"coverage_{args.coverage.name}_{args.split}.json", stats)
        print(json.dumps({"frames": stats["frames"], "mean_bins_covered": stats["mean_bins_covered"]}))
        return
    sheet, stats = contact_sheet(args.seed, args.columns, args.sequences, tuple(args.cell), args.activities)
    with atomic_path(out / "contact_sheet.png") as tmp:
        sheet.save(tmp, format="PNG")
    write_json(out / "ground_stats.json", stats)
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
