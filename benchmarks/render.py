"""Renderer throughput: frames/s of the free body at 128x128 and 256x256, B = 1 and 64.

    python benchmarks/render.py [--device cuda] [--threads 1] [--seconds 3] [--figure PATH.png]

The body stands in random poses (small random joint rotations, all-round yaw) at the size the
synthetic image generator uses on average (its box about 60 % of the frame side). Per row: median
frames/s of ``rasterize`` alone and of ``rasterize + shade`` (smooth Lambert, per-vertex colours),
by wall clock and per second of this process's CPU time (the second is the fair figure on a machine
shared with other jobs; with ``--threads 1`` it is the single-core rate).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import mega  # noqa: F401
from mega.body import load_body_model
from mega.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from mega.viz import rasterize, shade


def scene(body, b: int, size: int, device: str):
    """``b`` posed bodies in the camera frame, their intrinsics, colours and light."""
    g = torch.Generator().manual_seed(0)
    yaw = torch.rand(b, generator=g) * 2 * math.pi
    flip = axis_angle_to_matrix(torch.tensor([[math.pi, 0.0, 0.0]]))  # y-up body -> y-down camera
    spin = axis_angle_to_matrix(torch.stack([torch.zeros(b), yaw, torch.zeros(b)], -1))
    with torch.no_grad():
        out = body(
            global_orient=matrix_to_axis_angle(flip @ spin),
            body_pose=torch.randn(b, 23, 3, generator=g) * 0.2,
            betas=torch.randn(b, 10, generator=g),
        )
    focal, dist = 1.2 * size, 3.4  # ~1.7 m tall body -> ~60 % of the frame
    verts = out.vertices - out.joints[:, :1] + torch.tensor([0.0, 0.0, dist])
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]]).expand(b, 3, 3)  # noqa: N806
    colors = torch.rand(b, 1, 3, generator=g).expand(b, body.num_vertices, 3)
    light = torch.tensor([0.3, -0.5, -1.0]).expand(b, 3)
    return verts.to(device), K.to(device), colors.to(device), light.to(device)


def frames_per_second(fn, b: int, device: str, seconds: float) -> tuple[float, float]:
    """Median frames/s of wall time and of this process's CPU time (robust on a shared machine)."""
    fn()  # warm-up
    rates, cpu_rates, t_end = [], [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 3:
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(b / (time.perf_counter() - t0))
        cpu_rates.append(b / max(time.process_time() - c0, 1e-9))
    return statistics.median(rates), statistics.median(cpu_rates)


def figure(body, path: str) -> None:
    """Three posed bodies coloured by distance from the pelvis (mm), SMPL-24 joints, and a colour bar."""
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from mega.atomic import atomic_path  # noqa: PLC0415
    from mega.viz import colorbar, composite, draw_keypoints, project_vertices, scalar_to_colors, to_uint8  # noqa: PLC0415

    verts, K, _, light = scene(body, 3, 256, "cpu")  # noqa: N806
    pelvis = (body.J_regressor @ verts)[:, :1]
    values = (verts - pelvis).norm(dim=-1) * 1000
    frags = rasterize(verts, body.faces, K, 256, 256)
    rgb, alpha = shade(frags, verts, body.faces, scalar_to_colors(values, 0, 900), light)
    img = to_uint8(composite(rgb, alpha, torch.ones(3, 256, 256, 3)))
    joints = project_vertices(body.J_regressor @ verts, K).numpy()
    tiles = [draw_keypoints(img[i], joints[i], "smpl24") for i in range(3)]
    sheet = np.concatenate([*tiles, colorbar(0, 900, 256, 70, "mm")], 1)
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), np.ascontiguousarray(sheet[..., ::-1]))
    print(f"figure -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--figure", default=None, help="also write a demo picture (colour map + joints) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    body = load_body_model("free").to(args.device)
    if args.figure:
        with torch.no_grad():
            figure(load_body_model("free"), args.figure)
    faces = body.faces
    print(
        f"free body: {body.num_vertices} vertices, {faces.shape[0]} faces; device {args.device}, "
        f"{args.threads} thread(s)"
    )
    for size in (128, 256):
        for b in (1, 64):
            verts, K, colors, light = scene(body, b, size, args.device)  # noqa: N806

            def raster(v=verts, k=K, n=size):
                return rasterize(v, faces, k, n, n)

            def raster_shade(v=verts, k=K, n=size, c=colors, light=light):
                return shade(rasterize(v, faces, k, n, n), v, faces, c, light)

            with torch.no_grad():
                r = frames_per_second(raster, b, args.device, args.seconds)
                s = frames_per_second(raster_shade, b, args.device, args.seconds)
            print(
                f"{size}x{size}  B={b:3d}  rasterize {r[0]:7.1f} frames/s ({r[1]:7.1f} per CPU-s)   "
                f"rasterize+shade {s[0]:7.1f} frames/s ({s[1]:7.1f} per CPU-s)"
            )


if __name__ == "__main__":
    main()
