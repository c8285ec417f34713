"""AMASS-format motion files (AMASS SMPL+H / G releases, BEDLAM animation files) -> SMPL parameters.

One ``.npz`` per sequence. Accepted layouts (see ``shared/notes/formats_and_protocols.md`` section 1):

- ``poses`` (N, W) axis-angle: W = 156 SMPL-H (root 3, 21 body joints, 15 + 15 hand joints),
  165 SMPL-X (root, body, jaw, eyes, hands), 72 SMPL (BEDLAM's ``motion_seq.npz``), or 66 (no hands);
- or split keys ``root_orient`` (N, 3), ``pose_body`` (N, 63) and optionally ``pose_hand`` (N, 90);
- ``trans`` (N, 3) metres; ``betas`` (K,) or (N, K) with K >= 10 (only the first 10 are kept, which
  for SMPL-H's 16 or BEDLAM's 11 components is the usual approximation); ``gender`` a 0-d str or
  bytes array (missing -> ``"neutral"``); ``mocap_framerate`` or ``mocap_frame_rate``.

SMPL-H/SMPL-X -> SMPL joints: the 21 body joints are shared. SMPL's hand joints 22/23 are either zero
(``hand_joints="zeros"``, the default; as MEGA / TokenHMR) or copies of the left / right ``index1``
finger joints (``hand_joints="index1"``; SMPL-H joints 22 and 37, as VIBE / PARE / WHAM). Files that
already are SMPL (W = 72) keep their own hand joints.

Frames: AMASS's world is Z-up, while SMPL's canonical body frame (and mega's world) is y-up, facing
+z. With ``z_up=True`` the reader rotates the world by ``Z_UP_TO_Y_UP`` (-90 deg about x: z -> y,
y -> -z), left-multiplying the root orientation and the translation. As in WHAM this ignores the
root-joint pivot: SMPL rotates the body about its pelvis ``J0(betas)``, so the exact translation would
be ``T t + (T - I) J0``; pass ``root_joint`` to :func:`z_up_to_y_up` where that matters (it does not
for tokenizers, which drop the global orientation and translation).

MOYO (the yoga poses GenHMR's tokenizer also trains on) is read from its AMASS-format release
(``SMPLX_NEUTRAL`` / ``SMPLX_FEMALE`` / ``SMPLH_*`` npz, :func:`check_moyo_folder`): what applies to
SMPL is read as for AMASS (root, the 21 body joints, translation, gender, frame rate; the SMPL-X
jaw, eye and finger joints are dropped), and the first 10 SMPL-X shape coefficients are kept as
SMPL betas, the same approximation as for SMPL-H's 16 (SMPL-X's shape space is not SMPL's).
MOYO's ``mosh`` / ``mosh_smpl`` pickles are not read (a clear error says which files to use). A
``surface_model_type`` other than smpl / smplh / smplx is refused.
"""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mega.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle

log = logging.getLogger(__name__)

# World rotation taking AMASS's Z-up frame to mega's y-up frame: z -> +y, y -> -z, x -> x.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

GENDERS = ("neutral", "male", "female")
HAND_JOINT_MODES = ("zeros", "index1")
FRAMERATE_KEYS = ("mocap_framerate", "mocap_frame_rate")

# Where the left / right index1 finger joints sit in ``poses`` columns, per layout width.
_INDEX1_COLUMNS = {156: (66, 111), 165: (75, 120)}
SURFACE_MODELS = ("smpl", "smplh", "smplx")
MOYO_HELP = (
    "MOYO is read from its AMASS-format release (the SMPLX_NEUTRAL, SMPLX_FEMALE or SMPLH_* .npz "
    "files, https://moyo.is.tue.mpg.de), unpacked as <root>/{train,val}/**/*.npz; its mosh / mosh_smpl "
    ".pkl fits are not read"
)


class MotionFileError(ValueError):
    """A motion file that cannot be read: the message names the file, the field and what to do."""


@dataclass
class MotionSequence:
    """One sequence of SMPL parameters in mega's y-up world.

    Attributes:
        global_orient: (N, 3) float32 axis-angle of the root.
        body_pose: (N, 23, 3) float32 axis-angle of SMPL joints 1..23, each in its parent's frame.
        betas: (N, 10) float32 shape coefficients.
        transl: (N, 3) float32 metres.
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        fps: frame rate after subsampling.
        path: the source file.
    """

    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    gender: str
    fps: float
    path: str

    def __len__(self) -> int:
        return int(self.global_orient.shape[0])


def is_motion_file(path: str | Path) -> bool:
    """True for a per-sequence ``.npz``; False for per-subject ``shape.npz`` and ``*_stagei.npz``."""
    name = Path(path).name
    return name.endswith(".npz") and name != "shape.npz" and not name.endswith("_stagei.npz")


def list_motion_files(root: str | Path) -> list[Path]:
    """All motion files under ``root`` (recursive, symlinks followed, hidden folders and files skipped),
    sorted by relative path."""
    root, files = Path(root), []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(folder) / f for f in names if is_motion_file(f) and not f.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def z_up_to_y_up(
    global_orient: np.ndarray, transl: np.ndarray, root_joint: np.ndarray | None = None, inverse: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a Z-up world into mega's y-up world by ``T = Z_UP_TO_Y_UP`` (or back with ``inverse``).

    Args:
        global_orient: (N, 3) axis-angle root orientation ``R``; returns ``T R``.
        transl: (N, 3) translation ``t``; returns ``T t`` (plus ``(T - I) J0`` if ``root_joint``).
        root_joint: optional (3,) or (N, 3) rest-pose pelvis ``J0(betas)`` of the body model, which
            makes the translation exact (SMPL rotates about the pelvis, then translates).
        inverse: apply ``T^T`` instead (y-up -> Z-up).
    Returns:
        (N, 3) global orientation and (N, 3) translation, float64.
    """
    rot = Z_UP_TO_Y_UP.T if inverse else Z_UP_TO_Y_UP
    t = torch.from_numpy(rot)
    mats = t @ axis_angle_to_matrix(torch.as_tensor(global_orient, dtype=torch.float64))
    orient = matrix_to_axis_angle(mats).numpy()
    out_transl = np.asarray(transl, dtype=np.float64) @ rot.T
    if root_joint is not None:
        out_transl = out_transl + np.asarray(root_joint, dtype=np.float64) @ (rot - np.eye(3)).T
    return orient, out_transl


def subsample_stride(fps: float, target_fps: float | None) -> int:
    """Keep every ``round(fps / target_fps)``-th frame (at least 1; ``None`` or <= 0 keeps all)."""
    if not target_fps or target_fps <= 0:
        return 1
    return max(1, int(fps / target_fps + 0.5))


def humor_framerate(path: str | Path, fps: float) -> float:
    """HuMoR's corrections of wrong AMASS frame rates: BMLhandball is 240 fps, two sequences 59 fps."""
    text = Path(path).as_posix()
    if "BMLhandball" in text:
        return 240.0
    if "20160930_50032" in text or "20161014_50033" in text:
        return 59.0
    return fps


# What reading one npz key raises on a damaged file (MemoryError: a header that declares a huge array).
# NotImplementedError: zipfile meets a damaged header naming an unknown compression method.
_READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    MemoryError,
    NotImplementedError,
)


def _fail(path: Path, field: str, problem: str) -> MotionFileError:
    return MotionFileError(
        f"{path}: field '{field}': {problem}. Fix or remove this file (or skip_bad_files)."
    )


def _array(data: np.lib.npyio.NpzFile, path: Path, key: str, ndim: int | None = None) -> np.ndarray:
    """Read ``key`` as a finite float64 array of ``ndim`` dims, or raise a clear error."""
    try:
        arr = np.asarray(data[key], dtype=np.float64)
    except _READ_ERRORS as err:
        raise _fail(path, key, f"cannot be read ({err})") from err
    if ndim is not None and arr.ndim != ndim:
        raise _fail(path, key, f"expected {ndim} dims, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise _fail(path, key, "contains NaN or inf")
    return arr


def _read_gender(data: np.lib.npyio.NpzFile, path: Path) -> str:
    if "gender" not in data.files:
        return "neutral"
    try:
        raw = np.asarray(data["gender"]).reshape(-1)[0]
    except (*_READ_ERRORS, IndexError) as err:
        raise _fail(path, "gender", f"cannot be read ({err})") from err
    text = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip().lower()
    text = {"m": "male", "f": "female", "n": "neutral"}.get(text, text)
    if text not in GENDERS:
        raise _fail(path, "gender", f"unknown value {text!r} (expected one of {GENDERS})")
    return text


def _read_framerate(data: np.lib.npyio.NpzFile, path: Path, default_fps: float | None) -> float:
    for key in FRAMERATE_KEYS:
        if key in data.files:
            fps = float(_array(data, path, key).reshape(-1)[0])
            if fps <= 0:
                raise _fail(path, key, f"frame rate must be > 0, got {fps}")
            return fps
    if default_fps:
        return float(default_fps)
    raise _fail(
        path, "mocap_framerate", f"missing (neither of {FRAMERATE_KEYS}); set default_fps for this data"
    )


def _read_surface_model(data: np.lib.npyio.NpzFile, path: Path) -> str | None:
    """``surface_model_type`` (smpl / smplh / smplx) if the file names one, else None."""
    if "surface_model_type" not in data.files:
        return None
    try:
        raw = np.asarray(data["surface_model_type"]).reshape(-1)[0]
    except (*_READ_ERRORS, IndexError) as err:
        raise _fail(path, "surface_model_type", f"cannot be read ({err})") from err
    text = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip().lower()
    text = text.replace("-", "").replace("_", "").replace("+", "")
    if text not in SURFACE_MODELS:
        raise _fail(
            path, "surface_model_type",
            f"{text!r} is not a body model this reader converts to SMPL (it reads {SURFACE_MODELS})",
        )  # fmt: skip
    return text


def _read_pose(
    data: np.lib.npyio.NpzFile, path: Path, hand_joints: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> root (N, 3), body joints 1..21 (N, 21, 3), SMPL hand joints 22/23 (N, 2, 3)."""
    _read_surface_model(data, path)
    if "poses" in data.files:
        poses = _array(data, path, "poses", ndim=2)
        n, width = poses.shape
        if width not in (66, 72, 156, 165):
            raise _fail(path, "poses", f"expected (N, 156|165|72|66) axis-angle, got {poses.shape}")
        root, body = poses[:, :3], poses[:, 3:66].reshape(n, 21, 3)
        if width == 72:
            return root, body, poses[:, 66:72].reshape(n, 2, 3)
        hands = np.zeros((n, 2, 3))
        if hand_joints == "index1" and width in _INDEX1_COLUMNS:
            left, right = _INDEX1_COLUMNS[width]
            hands = np.stack([poses[:, left : left + 3], poses[:, right : right + 3]], axis=1)
        return root, body, hands
    if "root_orient" in data.files and "pose_body" in data.files:
        root = _array(data, path, "root_orient", ndim=2)
        body = _array(data, path, "pose_body", ndim=2)
        n = root.shape[0]
        if root.shape != (n, 3) or body.shape != (n, 63):
            raise _fail(
                path,
                "pose_body",
                f"expected root_orient (N, 3) and pose_body (N, 63), got {root.shape}, {body.shape}",
            )
        hands = np.zeros((n, 2, 3))
        if hand_joints == "index1" and "pose_hand" in data.files:
            hand = _array(data, path, "pose_hand", ndim=2)
            if hand.shape != (n, 90):
                raise _fail(path, "pose_hand", f"expected (N, 90), got {hand.shape}")
            hands = np.stack([hand[:, 0:3], hand[:, 45:48]], axis=1)
        return root, body.reshape(n, 21, 3), hands
    raise _fail(
        path, "poses", f"missing: expected 'poses' or 'root_orient' + 'pose_body' (keys: {data.files})"
    )


def _read_betas(data: np.lib.npyio.NpzFile, path: Path, n: int) -> np.ndarray:
    if "betas" not in data.files:
        raise _fail(path, "betas", "missing")
    betas = _array(data, path, "betas")
    if betas.ndim == 1:
        betas = np.broadcast_to(betas, (n, betas.shape[0]))
    elif betas.ndim != 2 or betas.shape[0] not in (1, n):
        raise _fail(path, "betas", f"expected (K,) or (N, K) with N = {n}, got {betas.shape}")
    betas = np.broadcast_to(betas, (n, betas.shape[1]))
    if betas.shape[1] < 10:  # fewer components: the missing ones are zero
        betas = np.concatenate([betas, np.zeros((n, 10 - betas.shape[1]))], axis=1)
    return betas[:, :10]


def load_motion_npz(
    path: str | Path,
    target_fps: float | None = 30.0,
    trim: float = 0.0,
    hand_joints: str = "zeros",
    z_up: bool = True,
    default_fps: float | None = None,
    fix_framerate: bool = False,
) -> MotionSequence:
    """Read one AMASS-format file into SMPL parameters in mega's y-up world.

    Args:
        path: the ``.npz`` file.
        target_fps: keep every ``round(fps / target_fps)``-th frame; ``None`` keeps every frame.
        trim: fraction of the frames dropped at *each* end before subsampling (0.1 keeps the middle 80 %).
        hand_joints: ``"zeros"`` or ``"index1"`` (see the module docstring).
        z_up: the file's world is Z-up (AMASS) and is rotated to y-up; False for y-up files (BEDLAM).
        default_fps: frame rate of files with no frame-rate key (BEDLAM animations are 30 fps).
        fix_framerate: apply HuMoR's frame-rate corrections (:func:`humor_framerate`).
    Returns:
        a :class:`MotionSequence` with N' = len(range(cut, N - cut, stride)) frames (may be 0).
    Raises:
        MotionFileError: corrupt file, missing key, wrong shape or non-finite value.
    """
    path = Path(path)
    if hand_joints not in HAND_JOINT_MODES:
        raise ValueError(f"hand_joints must be one of {HAND_JOINT_MODES}, got {hand_joints!r}")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim is a fraction per end in [0, 0.5), got {trim}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as err:
        raise MotionFileError(
            f"{path}: not a readable .npz ({err}). Re-download or remove this file."
        ) from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise MotionFileError(f"{path}: a single .npy array, not an .npz archive of named fields")
    with data:
        root, body, hands = _read_pose(data, path, hand_joints)
        n = root.shape[0]
        if "trans" not in data.files:
            raise _fail(path, "trans", "missing")
        transl = _array(data, path, "trans", ndim=2)
        if transl.shape != (n, 3):
            raise _fail(path, "trans", f"expected ({n}, 3) to match the poses, got {transl.shape}")
        betas = _read_betas(data, path, n)
        gender = _read_gender(data, path)
        fps = _read_framerate(data, path, default_fps)
    if fix_framerate:
        fps = humor_framerate(path, fps)
    cut = int(n * trim)
    stride = subsample_stride(fps, target_fps)
    keep = np.arange(cut, n - cut, stride)
    root, transl = root[keep], transl[keep]
    if z_up and len(keep):
        root, transl = z_up_to_y_up(root, transl)
    body_pose = np.concatenate([body[keep], hands[keep]], axis=1)
    return MotionSequence(
        global_orient=root.astype(np.float32),
        body_pose=body_pose.astype(np.float32),
        betas=betas[keep].astype(np.float32),
        transl=transl.astype(np.float32),
        gender=gender,
        fps=fps / stride,
        path=str(path),
    )


def write_amass_npz(
    path: str | Path,
    root_orient: np.ndarray,
    pose_body: np.ndarray,
    pose_hand: np.ndarray,
    trans: np.ndarray,
    betas: np.ndarray,
    gender: str,
    fps: float,
    layout: str = "smplh",
) -> None:
    """Write one sequence as an AMASS file (atomic: temporary file, then rename).

    Args:
        path: destination ``.npz``.
        root_orient: (N, 3) axis-angle in the file's Z-up world.
        pose_body: (N, 21, 3) SMPL-H body joints 1..21.
        pose_hand: (N, 30, 3) SMPL-H finger joints, left hand first.
        trans: (N, 3) metres, Z-up world.
        betas: (16,) SMPL-H shape.
        gender: stored as a 0-d str array (``"smplh"``) or bytes array (``"g"``).
        fps: frame rate.
        layout: ``"smplh"`` = classic release (``poses`` (N, 156), ``mocap_framerate``); ``"g"`` = the
            newer release's split keys (``root_orient``, ``pose_body``, ``pose_hand``, ``mocap_frame_rate``).
    """
    n = root_orient.shape[0]
    body, hand = pose_body.reshape(n, 63), pose_hand.reshape(n, 90)
    common = {"trans": trans, "betas": betas}
    if layout == "smplh":
        arrays = {"poses": np.concatenate([root_orient, body, hand], 1), "gender": np.array(gender),
                  "mocap_framerate": np.array(float(fps)), **common}  # fmt: skip
    elif layout == "g":
        arrays = {"root_orient": root_orient, "pose_body": body, "pose_hand": hand,
                  "gender": np.array(gender.encode()), "mocap_frame_rate": np.array(float(fps)),
                  "surface_model_type": np.array("smplh"), **common}  # fmt: skip
    else:
        raise ValueError(f"layout must be 'smplh' or 'g', got {layout!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def check_moyo_folder(root: str | Path) -> Path:
    """A MOYO folder this reader can use: AMASS-format ``.npz`` files under it, or one clear error.

    Raises:
        FileNotFoundError: no such folder, or no ``.npz`` motion file in it (MOYO's ``.pkl`` fits
        alone get a message naming the release to download instead).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MOYO not found at {root}. {MOYO_HELP}; or set motion.root=PATH")
    if list_motion_files(root):
        return root
    pickles = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.pkl"))[:3]
    found = f"found only .pkl files ({', '.join(pickles)} ...)" if pickles else "found no .npz file"
    raise FileNotFoundError(f"{root}: {found}. {MOYO_HELP}")
