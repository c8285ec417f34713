"""The demo's one code path for one image: people -> square crops -> ``recover`` -> pictures + per-person files.

``scripts/demo.py`` (images, folders, videos) and ``scripts/app.py`` (the web page) both call
:func:`decode`, :func:`mega.demo.pictures.panels` / :func:`~mega.demo.pictures.picture` and
:func:`export_people` (or :func:`process`, all three at once).

Each person is cropped square (HMR2/CLIFF conventions, :mod:`mega.data.crop`), decoded by the model
with the sampler (:mod:`mega.inference`), and placed in the full image with CLIFF's default camera
(focal ``sqrt(w^2 + h^2)``). The 2D reprojection error (full-image pixels, confidence-weighted mean
over COCO-17) of each result against the person's keypoints is reported per person.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mega.data.crop import crop_matrix, default_intrinsics, keypoints_to_crop, normalise_image, warp_crop
from mega.demo.inputs import DemoInputError
from mega.demo.pictures import picture
from mega.detection import Person
from mega.export import export_person
from mega.inference import build_sampler, decoding_label, recover
from mega.refiners import build_refiner, coco17_keypoints
from mega.viz import scalar_to_colors
from mega.viz.views import save_png


def crops(image: np.ndarray, people: list[Person], size: int, margin: float) -> dict[str, Any]:
    """Square crops and their geometry: img (N, 3, S, S), bbox_center (N, 2), bbox_size (N,), keypoints
    (N, 17, 3) normalised crop coordinates (None when a person has none), cam_int (N, 3, 3), img_size (N, 2)."""
    h, w = image.shape[:2]
    imgs, centers, sizes, kps = [], [], [], []
    for p in people:
        c, b = p.center_scale(margin)
        imgs.append(normalise_image(warp_crop(image, crop_matrix(c, b, size), size)))
        centers.append(c)
        sizes.append(b)
        kps.append(None if p.keypoints is None else keypoints_to_crop(p.keypoints, c, b))
    n = len(people)
    return {
        "img": torch.stack(imgs),
        "bbox_center": torch.tensor(np.array(centers), dtype=torch.float32),
        "bbox_size": torch.tensor(sizes, dtype=torch.float32),
        "keypoints": None if any(k is None for k in kps) else torch.tensor(np.stack(kps)),
        "cam_int": torch.tensor(default_intrinsics(np.array([w, h])), dtype=torch.float32).expand(n, 3, 3),
        "img_size": torch.tensor([[w, h]], dtype=torch.float32).expand(n, 2),
    }


def reprojection_px(model, rec_vertices, rec_joints, cam, batch, people) -> list[float | None]:
    """Confidence-weighted mean distance (full-image px) between the model's COCO-17 keypoints, projected by
    the crop camera, and each person's keypoints (None without keypoints). vertices (N, V, 3), joints (N, 24, 3)."""
    kp, valid = coco17_keypoints(model.body, rec_vertices, rec_joints)
    view_rot = model.view_rotation({k: batch[k].to(kp.device) for k in ("bbox_center", "cam_int")})
    xy = model.project(kp, cam, view_rot)  # (N, 17, 2) normalised crop coordinates
    px = batch["bbox_center"][:, None] + xy * batch["bbox_size"][:, None, None] / 2
    out = []
    for i, p in enumerate(people):
        if p.keypoints is None:
            out.append(None)
            continue
        target = torch.from_numpy(p.keypoints).float()
        w = target[:, 2] * valid * (target[:, 2] >= 0.1)
        err = (px[i] - target[:, :2]).norm(dim=-1)
        out.append(float((w * err).sum() / w.sum()) if float(w.sum()) > 0 else None)
    return out


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def run_sampler(
    model,
    batch,
    sampler_cfg,
    num_samples: int,
    seed: int,
    device,
    rotation: str = "head",
    refiner_cfg=None,
    precision: str = "fp32",
) -> tuple[Any, Any]:
    """Build the sampler (a config dict or a registry name) and the refiner (a config dict, or None) and
    ``recover`` the batch's people."""
    sampler = build_sampler(_plain(sampler_cfg))
    refiner = build_refiner(_plain(refiner_cfg))
    kp = batch["keypoints"]
    if refiner is not None and kp is None:
        raise DemoInputError(
            "the pose_guided refiner needs 2D keypoints: pass detections=FILE or detector=blazepose"
        )
    if rotation == "keypoints" and kp is None:
        raise DemoInputError(
            "rotation=keypoints needs 2D keypoints: pass detections=FILE or detector=blazepose"
        )
    geo = {k: batch[k].to(device) for k in ("bbox_center", "cam_int")}
    rec = recover(model, batch["img"].to(device), sampler, num_samples, refiner=refiner,
                  keypoints=None if kp is None else kp.to(device), seed=seed, rotation=rotation,
                  view_rot=model.view_rotation(geo), precision=precision)  # fmt: skip
    return sampler, rec


def decode(image, people, model, cfg, device) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Crop and recover the people of one image with ``cfg.sampler`` and ``cfg.refiner`` (and ``cfg.compare``).

    ``cfg`` needs ``bbox_margin``, ``num_samples``, ``sampler``, ``compare``, ``seed``, ``rotation``; ``refiner``
    (a config, ``name: none`` or absent: no refinement); optionally ``precision`` (fp32 | bf16 | auto; fp32
    when absent).
    Returns the crop batch (:func:`crops`) and ``{"main": res, "compare": res}`` where ``res`` has
    ``name``, ``rec`` (the RecoveryResult), ``transl`` (N, 3), ``placed`` vertices in the full-image
    camera frame (N, Q, V, 3), ``errors`` (per person px or None), ``sd_mm`` (N, V) or None (Q = 1),
    ``initial_errors`` (before refinement) or None.
    """
    size = int(model.backbone.input_size)
    batch = crops(image, people, size, float(cfg.bbox_margin))
    q = int(cfg.num_samples)
    results: dict[str, dict[str, Any]] = {}
    refiner_cfg = cfg.get("refiner")
    runs = [("main", cfg.sampler, refiner_cfg, q, decoding_label(cfg.sampler, refiner_cfg))]
    if cfg.compare:
        compare = cfg.compare
        runs.append(
            ("compare", compare, None, 1, compare if isinstance(compare, str) else compare.get("name"))
        )
    geo = {k: batch[k].to(device) for k in ("bbox_center", "bbox_size", "cam_int", "img_size")}
    for key, sampler_cfg, refiner, n, name in runs:
        _, rec = run_sampler(
            model,
            batch,
            sampler_cfg,
            n,
            int(cfg.seed),
            device,
            str(cfg.rotation),
            refiner,
            str(cfg.get("precision", "fp32")),
        )
        transl = model.full_image_translation(rec.cam, geo).cpu()  # (N, 3)
        verts, joints, cam = rec.vertices.cpu(), rec.joints.cpu(), rec.cam.cpu()
        res = {"name": f"{name}" + (f" Q={n}" if n > 1 else ""), "rec": rec, "transl": transl,
               "placed": verts + transl[:, None, None],
               "errors": reprojection_px(model, verts[:, 0], joints[:, 0], cam, batch, people),
               "sd_mm": None, "initial_errors": None}  # fmt: skip
        if n > 1:
            res["sd_mm"] = (
                1000 * (verts - verts.mean(1, keepdim=True)).square().sum(-1).mean(1).sqrt()
            )  # (N, V)
        if rec.initial_vertices is not None:
            init = rec.initial_vertices.cpu()[:, 0]
            j_init = torch.einsum("jv,nvc->njc", model.body.J_regressor.to(init), init)
            res["initial_errors"] = reprojection_px(model, init, j_init, cam, batch, people)
        results[key] = res
    return batch, results


def person_mesh(results, i: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Person ``i``'s exported mesh (the mean of Q samples, or the one sample), (V, 3), and its SD (V,) or None."""
    placed = results["main"]["placed"][i]  # (Q, V, 3)
    sd = results["main"]["sd_mm"]
    mesh = placed.mean(0) if placed.shape[0] > 1 else placed[0]
    return mesh.numpy(), None if sd is None else sd[i]


def export_people(stem, people, batch, model, results, cfg, out_dir: Path) -> list[dict[str, Any]]:
    """Write ``<out_dir>/<stem>_p<i>.{obj,ply,npz,json}`` (``cfg.export``); returns one summary row per person."""
    rows = []
    main = results["main"]
    rec = main["rec"]
    faces = model.body.faces.numpy()
    for i, p in enumerate(people):
        name = f"{stem}_p{i}"
        placed = main["placed"][i]  # (Q, V, 3)
        mesh, sd = person_mesh(results, i)
        colors = None
        if sd is not None:
            colors = scalar_to_colors(sd, 0.0, max(1.0, float(sd.max()))).numpy()
        params = {"vertices": placed, "joints": rec.joints.cpu()[i] + main["transl"][i], "transl": main["transl"][i],
                  "global_rot": rec.global_rot.cpu()[i], "cam": rec.cam.cpu()[i],
                  "betas": None if rec.betas is None else rec.betas.cpu()[i],
                  "body_pose": None if rec.body_pose is None else rec.body_pose.cpu()[i],
                  "ids": rec.ids.cpu()[i], "vertex_sd_mm": sd, "box": p.box,
                  "keypoints": p.keypoints, "bbox_center": batch["bbox_center"][i], "bbox_size": batch["bbox_size"][i],
                  "cam_int": batch["cam_int"][i]}  # fmt: skip
        row = {"image": stem, "person": i, "box": p.box, "score": p.score, "source": p.source,
               "sampler": main["name"], "num_samples": int(placed.shape[0]), "kind": model.kind,
               "reprojection_px": main["errors"][i],
               "reprojection_px_before_refinement": None if main["initial_errors"] is None else main["initial_errors"][i],
               "mean_vertex_sd_mm": None if sd is None else float(sd.mean())}  # fmt: skip
        if "compare" in results:
            row["compare"] = {
                "sampler": results["compare"]["name"],
                "reprojection_px": results["compare"]["errors"][i],
            }
        paths = export_person(out_dir, name, mesh, faces, params, row, colors, cfg.export)
        row["files"] = {k: str(v) for k, v in paths.items()}
        rows.append(row)
    return rows


def process(stem, image, people, model, cfg, device, out_dir: Path) -> list[dict[str, Any]]:
    """Recover, draw (``<out_dir>/<stem>.png``) and export (``<out_dir>/people/``) the people of one image;
    returns their summary rows."""
    batch, results = decode(image, people, model, cfg, device)
    save_png(out_dir / f"{stem}.png", picture(image, stem, people, batch, model, results, cfg))
    return export_people(stem, people, batch, model, results, cfg, out_dir / "people")
