"""Image -> square crop: decoding, HMR2/CLIFF box conventions, the crop warp and crop coordinates.

Conventions (shared with :mod:`mega.body.camera`):

- pixel coordinates are *continuous* with the origin at the top-left corner of the image, so pixel
  ``(i, j)`` covers ``[i, i+1) x [j, j+1)`` and its centre is ``(i + .5, j + .5)``; the principal point
  of a default camera is exactly the image centre ``(W/2, H/2)``;
- a box is a centre ``c`` (px) and a side ``b`` (px). SPIN-style files store ``scale = b / 200``
  (:data:`SPIN_SCALE`); 4D-Humans stores ``(w, h) / 200`` and HMR2 expands it to the backbone's aspect
  ratio before taking the larger side (:func:`box_size`);
- crops are always square (``S x S``) and axis-aligned in the (possibly augmented) image; a point ``x``
  goes to crop pixels ``(x - c) * S / b + S / 2`` and to normalised crop coordinates
  ``2 (x - c) / b`` in [-1, 1] (= ``2 * x_crop / S - 1``, the sample contract);
- the crop is itself a pinhole camera: :func:`crop_intrinsics` gives its K, so projecting camera-frame
  points with it lands on crop pixels exactly (no weak-perspective approximation).

Decoding uses PIL (torchvision's decoders do not load here). Large JPEGs are decoded at 1/2, 1/4 or 1/8
resolution when the crop needs no more (:func:`decode_image` ``reduce``): the DCT-domain reduction is
several times faster than a full decode followed by a downscale.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mega.data.errors import BenchmarkError, MissingFileError

SPIN_SCALE = 200.0
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

cv2.setNumThreads(1)  # one thread per loader worker; the DataLoader parallelises across workers


class ImageDataError(BenchmarkError):
    """An image dataset file is unreadable or malformed; the message names the file and key."""


class MissingImageError(ImageDataError, MissingFileError):
    """An image (or the npz / shard that lists it) does not exist."""


# ------------------------------------------------------------------------------------------ decoding


def decode_image(source: str | Path | bytes, reduce: int = 1, name: str | None = None):
    """Decode an image to RGB uint8, optionally at a reduced resolution (JPEG only).

    The header is read with PIL (size, format), the pixels are decoded with OpenCV (faster, and it
    decodes JPEGs at 1/2, 1/4 or 1/8 in the DCT domain). A JPEG without its end marker is refused as
    truncated (OpenCV would fill the missing rows with grey).

    Args:
        source: a file path or the encoded bytes.
        reduce: the largest power-of-two reduction (1, 2, 4, 8) the caller accepts; JPEG decodes at
            that reduction, other formats at full size.
        name: how to name the image in errors (defaults to the path).
    Returns:
        ``(img, full_size, factor)``: ``img`` (h, w, 3) uint8, ``full_size`` the full image
        ``(width, height)``, and ``factor`` the reduction used (full-image coordinate = factor * img coordinate).
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError as err:
            raise MissingImageError(
                f"image not found: {label} (check the dataset's img_root and the npz 'imgname')"
            ) from err
    try:
        with Image.open(io.BytesIO(data)) as im:
            full, fmt = im.size, im.format
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as err:  # not an image / bad header
        raise ImageDataError(
            f"cannot decode image {label}: {err}; the file is truncated or not an image"
        ) from err
    jpeg = fmt == "JPEG"
    if jpeg and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise ImageDataError(f"cannot decode image {label}: JPEG end marker missing; the file is truncated")
    flag = _REDUCED.get(reduce if jpeg else 1, cv2.IMREAD_COLOR)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if arr is None:
        raise ImageDataError(
            f"cannot decode image {label}: OpenCV could not read its pixels (truncated or corrupt)"
        )
    arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    factor = int(round(full[0] / arr.shape[1]))
    return arr, full, factor


_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def reduction_for(bbox_size: float, crop_size: int, max_reduce: int = 8) -> int:
    """The largest power of two ``k <= max_reduce`` with ``bbox_size / k >= crop_size`` (1 if none)."""
    k = 1
    while k * 2 <= max_reduce and bbox_size / (k * 2) >= crop_size:
        k *= 2
    return k


# ---------------------------------------------------------------------------------------- box and K


def box_size(scale: np.ndarray, aspect: float = 1.0, scale_in_pixels: bool = False) -> np.ndarray:
    """Square box side in pixels from SPIN / 4D-Humans scales.

    Args:
        scale: (N,) SPIN ``side / 200`` or (N, 2) ``(w, h) / 200`` (4D-Humans); pixels if ``scale_in_pixels``.
        aspect: the backbone input's width / height (1 for square inputs, 0.75 for a 256x192 ViT): the
            box is first expanded to that aspect (HMR2), then its larger side is taken.
    Returns:
        (N,) box side in pixels.
    """
    s = np.asarray(scale, dtype=np.float64) * (1.0 if scale_in_pixels else SPIN_SCALE)
    w, h = (s, s) if s.ndim == 1 else (s[:, 0], s[:, 1])
    w2 = np.where(w / np.maximum(h, 1e-9) < aspect, h * aspect, w)
    h2 = np.where(w / np.maximum(h, 1e-9) < aspect, h, w / aspect)
    return np.maximum(w2, h2)


def default_intrinsics(img_size: np.ndarray) -> np.ndarray:
    """CLIFF's default camera: focal ``sqrt(w^2 + h^2)``, principal point at the image centre.

    Args:
        img_size: (2,) ``(width, height)``.
    Returns:
        (3, 3) K.
    """
    w, h = float(img_size[0]), float(img_size[1])
    f = (w * w + h * h) ** 0.5
    return np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])


def crop_matrix(bbox_center: np.ndarray, bbox_size: float, size: int) -> np.ndarray:
    """(3, 3) homogeneous affine: image pixels -> pixels of the ``size x size`` crop of the box."""
    k = size / bbox_size
    return np.array(
        [[k, 0.0, size / 2 - k * bbox_center[0]], [0.0, k, size / 2 - k * bbox_center[1]], [0.0, 0.0, 1.0]]
    )


def crop_intrinsics(cam_int: Tensor, bbox_center: Tensor, bbox_size: Tensor, size: int) -> Tensor:
    """Intrinsics of the square crop seen as a camera (exact for axis-aligned crops).

    Args:
        cam_int: (B, 3, 3) full-image K.
        bbox_center: (B, 2) px; bbox_size: (B,) px; size: crop side S.
    Returns:
        (B, 3, 3) K_crop with ``project(X, K_crop)`` = crop pixels of ``project(X, cam_int)``.
    """
    k = size / bbox_size
    a = torch.zeros_like(cam_int)
    a[:, 0, 0], a[:, 1, 1], a[:, 2, 2] = k, k, 1
    a[:, :2, 2] = size / 2 - k[:, None] * bbox_center
    return a @ cam_int


def to_normalised(points: np.ndarray, bbox_center: np.ndarray, bbox_size: float) -> np.ndarray:
    """(J, 2) image pixels -> (J, 2) normalised crop coordinates ``2 (x - c) / b``."""
    return (points - bbox_center) * (2.0 / bbox_size)


def keypoints_to_crop(kp: np.ndarray, bbox_center: np.ndarray, bbox_size: float) -> np.ndarray:
    """(J, 3) image keypoints (x, y, conf) -> (J, 3) float32 normalised crop keypoints.

    Confidence becomes 0 outside the crop (|x| or |y| > 1); coordinates are kept.
    """
    out = np.empty(kp.shape, dtype=np.float32)
    out[:, :2] = to_normalised(kp[:, :2], bbox_center, bbox_size)
    inside = (np.abs(out[:, :2]) <= 1.0).all(axis=1)
    out[:, 2] = np.where(inside, kp[:, 2], 0.0)
    return out


# ------------------------------------------------------------------------------------------- warping


def warp_crop(img: np.ndarray, matrix: np.ndarray, size: int, factor: int = 1) -> np.ndarray:
    """Resample the square crop.

    Args:
        img: (h, w, 3) uint8, decoded at ``1 / factor`` of the full resolution.
        matrix: (3, 3) full-image pixels -> crop pixels (continuous coordinates).
        size: crop side S.
        factor: the decode reduction of ``img``.
    Returns:
        (S, S, 3) uint8; outside the image is black. Strong downscales are pre-shrunk with area
        averaging so the crop does not alias.
    """
    m = matrix @ np.diag([factor, factor, 1.0])  # reduced-image pixels -> crop
    zoom = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    shrink = int(1.0 / zoom) if zoom < 0.5 else 1
    if shrink > 1:
        h, w = img.shape[:2]
        nw, nh = max(1, w // shrink), max(1, h // shrink)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        m = m @ np.diag([w / nw, h / nh, 1.0])
    # Continuous -> index coordinates on both sides (index = continuous - 0.5).
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    m_idx = np.linalg.inv(half) @ m @ half
    return cv2.warpAffine(
        img, m_idx[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def normalise_image(crop: np.ndarray) -> Tensor:
    """(S, S, 3) uint8 -> (3, S, S) float32, ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float()
    return x.mul_(_NORM_SCALE).sub_(_NORM_BIAS)


_NORM_SCALE = torch.from_numpy(1.0 / (255.0 * IMAGENET_STD)).view(3, 1, 1)
_NORM_BIAS = torch.from_numpy(IMAGENET_MEAN / IMAGENET_STD).view(3, 1, 1)


def denormalise_image(img: Tensor) -> np.ndarray:
    """(3, S, S) ImageNet-normalised -> (S, S, 3) uint8 (for pictures and tests)."""
    x = img.detach().cpu().numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
