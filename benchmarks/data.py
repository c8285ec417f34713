"""Image loader throughput: images/s of decode + crop (+ augment) through a DataLoader.

    python benchmarks/data.py [--workers N] [--crops 128,224,256] [--images 256] [--root DIR]

Data: by default a temporary COCO-like set written on the fly (``--images`` JPEGs of 640x480 with
smooth procedural content and noise, quality 90; people boxes of 80-420 px at random places), read
through :class:`mega.data.images.dataset.ImageNpzDataset` like the real files. ``--root DIR`` reads
``DIR/<split>.npz`` instead (e.g. ``data/synthetic_images``, whose frames are 256x256).

Rows: crop size x {eval: decode + crop, train: + augmentation (flip, rotation, scale, colour,
occlusion)} x {reduced JPEG decode (default), full-resolution decode}. Per row: images/s of the
DataLoader over whole epochs after a warm-up epoch (``--workers`` processes, batch 64), and the
single-process rate per CPU-second (``workers=0``; the fair number on a shared machine: multiply by
the cores you give the loader). Default workers: ``min(8, cpu_count)``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import mega  # noqa: F401
from mega.data.images.dataset import ImageNpzDataset

AUGMENT = {"rot_prob": 0.6, "flip_prob": 0.5, "colour_factor": 0.2, "occlusion_prob": 0.2}


def write_dataset(root: Path, n: int, width: int = 640, height: int = 480, seed: int = 0) -> Path:
    """``n`` COCO-like JPEGs and ``root/train.npz``; returns the npz path."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    names, centers, scales = [], [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        f = rng.uniform(0.005, 0.05, 3)
        ph = rng.uniform(0, 6.3, 3)
        img = np.stack([127 + 100 * np.sin(f[c] * xx + f[(c + 1) % 3] * yy + ph[c]) for c in range(3)], -1)
        for _ in range(6):  # blocks of flat colour (edges, like objects)
            x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
            img[y0 : y0 + rng.integers(20, 200), x0 : x0 + rng.integers(20, 200)] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 8, img.shape)
        name = f"images/{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name, quality=90)
        side = rng.uniform(80, 420)
        names.append(name)
        centers.append([rng.uniform(side / 3, width - side / 3), rng.uniform(side / 3, height - side / 3)])
        scales.append(side / 200)
    kp = np.concatenate(
        [rng.uniform(0, width, (n, 17, 1)), rng.uniform(0, height, (n, 17, 1)), np.ones((n, 17, 1))], -1
    )
    path = root / "train.npz"
    np.savez(
        path,
        imgname=np.array(names),
        center=np.array(centers),
        scale=np.array(scales),
        j2d_coco=kp,
        pose=np.zeros((n, 72)),
        shape=np.zeros((n, 10)),
        has_smpl=np.ones(n),
    )
    return path


def loader_rate(ds, workers: int, batch: int, epochs: int) -> float:
    """Images/s of whole epochs after one warm-up epoch (worker start-up excluded)."""
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=False,
    )
    for _ in loader:  # warm-up: workers start, files enter the page cache
        pass
    t0 = time.perf_counter()
    count = 0
    for _ in range(epochs):
        for b in loader:
            count += b["img"].shape[0]
    return count / (time.perf_counter() - t0)


def cpu_rate(ds, items: int) -> float:
    """Single-process images per CPU-second (median of 3 passes over ``items`` items)."""
    rates = []
    for _ in range(3):
        c0 = time.process_time()
        for i in range(items):
            ds[i % len(ds)]
        rates.append(items / max(time.process_time() - c0, 1e-9))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--crops", default="128,224,256")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--root", default=None, help="read <root>/<split>.npz instead of a temporary set")
    parser.add_argument("--split", default="train")
    parser.add_argument("--full-decode", action="store_true", help="also rows with full-resolution decoding")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root:
            npz, root, what = Path(args.root) / f"{args.split}.npz", Path(args.root), args.root
        else:
            npz, root = write_dataset(Path(tmp), args.images), Path(tmp)
            what = f"{args.images} temporary 640x480 JPEGs (boxes 80-420 px)"
        print(f"data: {what}; DataLoader workers={args.workers}, batch={args.batch}; torch threads 1")
        print("| crop | mode | decode | loader images/s | 1-process images/CPU-s |")
        print("|---|---|---|---|---|")
        for crop in (int(c) for c in args.crops.split(",")):
            for mode, augment in (("eval", None), ("train", AUGMENT)):
                for reduce in (8, 1) if args.full_decode else (8,):
                    ds = ImageNpzDataset(npz, root, crop_size=crop, augment=augment, max_reduce=reduce)
                    rate = loader_rate(ds, args.workers, args.batch, args.epochs)
                    single = cpu_rate(ds, min(len(ds), 128))
                    label = "reduced" if reduce > 1 else "full"
                    print(f"| {crop} | {mode} | {label} | {rate:.0f} | {single:.0f} |", flush=True)


if __name__ == "__main__":
    main()
