"""The demo's pictures of one image: detected keypoints, mesh overlays, a side view, the SD map (Q > 1).

:func:`panels` returns each panel on its own (the web app shows them apart); :func:`picture` puts them
side by side with their labels (``scripts/demo.py`` writes that as ``<stem>.png``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from mega.detection import Person
from mega.viz import draw_keypoints
from mega.viz.views import colormap_view, hstack, label, overlay, side_view

COMPARE_COLOR = (0.82, 0.82, 0.78)  # the compare sampler's meshes: one warm grey (people keep the palette)


class Panel(NamedTuple):
    """One picture panel: ``kind`` is input | compare | overlay | side | sd; image (H, W, 3) uint8 RGB."""

    kind: str
    image: np.ndarray
    text: str


def err_text(errors: list[float | None]) -> str:
    """``"\\n2D err X px"``: the mean over the people that have keypoints ("" when none has)."""
    vals = [e for e in errors if e is not None]
    return f"\n2D err {np.mean(vals):.1f} px" if vals else ""


def zoom_box(image: np.ndarray, people: list[Person], enabled: bool) -> tuple[int, int, int, int]:
    """Pixel region ``x0, y0, x1, y1`` of the pictures: the people's boxes with a margin (or all)."""
    h, w = image.shape[:2]
    if not enabled or not people or all(p.source == "whole_image" for p in people):
        return 0, 0, w, h
    boxes = np.stack([p.box for p in people])
    lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    pad = 0.25 * (hi - lo).max()
    x0, y0 = (max(0, int(v)) for v in lo - pad)
    x1, y1 = int(min(w, hi[0] + pad)), int(min(h, hi[1] + pad))
    return x0, y0, max(x1, x0 + 8), max(y1, y0 + 8)


def panels(image, stem, people, batch, model, results, cfg) -> list[Panel]:
    """One image's panels: keypoints, overlays (compare, then main), side view, SD map (Q > 1).

    ``results`` is :func:`mega.demo.run.decode`'s; ``cfg`` needs ``zoom``, ``panel_height``,
    ``side_view`` and ``sd_max_mm``. The zoomed region is resampled to ``panel_height`` first and the
    meshes are rendered at that size (the intrinsics follow the crop and the scale), so panels are sharp
    whatever the input's size.
    """
    x0, y0, x1, y1 = zoom_box(image, people, cfg.zoom)
    h = int(cfg.panel_height)
    k = h / (y1 - y0)
    w = max(1, round((x1 - x0) * k))
    region = cv2.resize(
        image[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    )
    faces = model.body.faces
    K = batch["cam_int"][0].clone()  # noqa: N806
    K[:2, 2] -= torch.tensor([x0, y0], dtype=K.dtype)  # the zoomed region as its own image ...
    K[:2] *= k  # ... at the panel's scale
    to_panel = lambda xy: (xy - np.array([x0, y0])) * k  # noqa: E731  image px -> panel px
    shown = region.copy()
    thick = max(1, round(h / 250))
    for p in people:
        (bx0, by0), (bx1, by1) = to_panel(p.box[:2]), to_panel(p.box[2:])
        cv2.rectangle(shown, (int(bx0), int(by0)), (int(bx1), int(by1)), (255, 255, 0), thick)
        if p.keypoints is not None:
            kp = p.keypoints.copy()
            kp[:, :2] = to_panel(kp[:, :2])
            kp[:, 2] = np.where(kp[:, 2] >= 0.1, kp[:, 2], 0.0)
            shown = draw_keypoints(
                shown, kp, "coco17", radius=1.5 * thick + 0.5, thickness=thick, draw_hidden=False
            )
    src = people[0].source if people else "none"
    out = [
        Panel("input", shown, f"{stem}\n{len(people)} {'person' if len(people) == 1 else 'people'} ({src})")
    ]
    main = results["main"]
    for key in ("compare", "main"):
        if key not in results:
            continue
        res = results[key]
        colors = None
        if key == "compare":
            colors = torch.tensor(COMPARE_COLOR)[None, None].expand(len(people), 1, 3)
        text = f"{res['name']}{err_text(res['errors'])}"
        if res.get("initial_errors") is not None:
            text += (
                err_text(res["initial_errors"]).replace("2D err", " before refinement", 1).replace("\n", "")
            )
        kind = "compare" if key == "compare" else "overlay"
        out.append(Panel(kind, overlay(region, res["placed"][:, 0], faces, K, colors=colors), text))
    if cfg.side_view:
        out.append(Panel("side", side_view(main["placed"][:, 0], faces, h, round(0.6 * h)), "side view"))
    if main["sd_mm"] is not None:
        sd = main["sd_mm"]
        top = torch.quantile(sd.flatten(), 0.98)
        vmax = float(cfg.sd_max_mm) if cfg.sd_max_mm else max(1.0, math.ceil(float(top)))
        sd_map = colormap_view(
            main["placed"].mean(1), faces, sd, h, h, vmax, "SD mm", bar_width=max(48, h // 5)
        )
        out.append(Panel("sd", sd_map, f"vertex SD\nQ={main['placed'].shape[1]}"))
    return out


def picture(image, stem, people, batch, model, results: dict[str, Any], cfg) -> np.ndarray:
    """:func:`panels` side by side, each labelled: (panel_height, W, 3) uint8 RGB."""
    h = int(cfg.panel_height)
    scale = min(0.7, max(0.3, h / 650))
    shown = panels(image, stem, people, batch, model, results, cfg)
    return hstack([label(p.image, p.text, scale) for p in shown], h)
