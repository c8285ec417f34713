"""Reading SMPL-format model files: the official ``.pkl`` (with chumpy objects) and ``.npz``.

The official SMPL pickles are Python-2 pickles holding ``chumpy.ch.Ch`` arrays. chumpy does not
install on Python 3.11 / numpy 2, so :func:`read_model_file` unpickles them with stand-in classes
that keep only the array data (:mod:`mega.safe_pickle`: anything but numpy, scipy sparse and chumpy is
refused before it runs). No chumpy import happens anywhere.

Path resolution accepts a file (any name: ``basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl`` works) or
a folder holding ``SMPL_{NEUTRAL,MALE,FEMALE}.{pkl,npz}`` (also ``smpl/`` inside it, smplx-style)
or the official ``basicmodel_*`` names.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mega.safe_pickle import ChumpyStandIn, UnsafePickleError, load_pickle

# Arrays smplx.SMPL reads; anything else in a file is kept as an extra.
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")

SMPL_DOWNLOAD_HELP = (
    "SMPL is licensed: register and download it at https://smpl.is.tue.mpg.de (SMPL for Python, "
    "v1.1.0: basicmodel_{neutral,m,f}_lbs_10_207_0_v1.1.0.pkl), then put the files in "
    "data/body_models/smpl/ (any file name works; SMPL_NEUTRAL.pkl, SMPL_MALE.pkl, SMPL_FEMALE.pkl "
    "are found automatically). See data/README.md."
)

_OFFICIAL_NAMES = {
    "neutral": (
        "SMPL_NEUTRAL",
        "basicmodel_neutral_lbs_10_207_0_v1.1.0",
        "basicModel_neutral_lbs_10_207_0_v1.0.0",
    ),
    "male": ("SMPL_MALE", "basicmodel_m_lbs_10_207_0_v1.1.0", "basicModel_m_lbs_10_207_0_v1.0.0"),
    "female": ("SMPL_FEMALE", "basicmodel_f_lbs_10_207_0_v1.1.0", "basicModel_f_lbs_10_207_0_v1.0.0"),
}


class ModelFileError(FileNotFoundError):
    """A body-model file is missing, unreadable or lacks a field."""


def _to_plain(value: Any) -> Any:
    """Chumpy stand-ins -> ndarray; scipy sparse -> dense ndarray; others unchanged."""
    if isinstance(value, ChumpyStandIn):
        return value.to_array()
    if hasattr(value, "toarray") and hasattr(value, "nnz"):  # scipy.sparse matrix
        return np.asarray(value.toarray())
    return value


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Read an SMPL-format ``.pkl`` or ``.npz`` into plain numpy arrays.

    Args:
        path: the model file.
    Returns:
        dict with at least ``v_template (V,3)``, ``shapedirs (V,3,S)``, ``posedirs (V,3,P)``,
        ``J_regressor (J,V)`` (dense), ``weights (V,J)``, ``kintree_table (2,J)``, ``f (F,3)``.
    Raises:
        ModelFileError: missing file, unreadable/corrupt file, or a missing field (named).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"body-model file not found: {path}. {SMPL_DOWNLOAD_HELP}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        else:
            data = load_pickle(path)  # restricted: numpy, scipy sparse and chumpy stand-ins only
    except UnsafePickleError:
        raise
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, MemoryError) as err:
        raise ModelFileError(
            f"cannot read body-model file {path} ({type(err).__name__}: {err}); the file is corrupt or "
            f"not an SMPL-format .pkl/.npz. Download it again. {SMPL_DOWNLOAD_HELP}"
        ) from err
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} does not hold a dict of SMPL arrays (got {type(data).__name__})")
    data = {k: _to_plain(v) for k, v in data.items()}
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ModelFileError(f"{path} lacks the field(s) {missing}: it is not an SMPL-format model file")
    v = data["v_template"].shape[0]
    if data["weights"].shape[0] != v or data["J_regressor"].shape[1] != v:
        raise ModelFileError(
            f"{path}: inconsistent sizes (v_template {data['v_template'].shape}, weights "
            f"{data['weights'].shape}, J_regressor {data['J_regressor'].shape})"
        )
    return data


def resolve_model_path(path: str | Path, gender: str = "neutral") -> Path:
    """Find the model file for ``gender`` given a file or a folder.

    Args:
        path: a model file, or a folder holding SMPL files (directly or in ``smpl/``).
        gender: ``neutral``, ``male`` or ``female``.
    Returns:
        The file to read.
    Raises:
        ModelFileError: naming every place that was looked at.
    """
    gender = gender.lower()
    if gender not in _OFFICIAL_NAMES:
        raise ValueError(f"gender must be one of {sorted(_OFFICIAL_NAMES)}, got '{gender}'")
    path = Path(path)
    if path.is_file():
        return path
    tried = []
    for folder in (path, path / "smpl"):
        for stem in _OFFICIAL_NAMES[gender]:
            for ext in (".pkl", ".npz"):
                cand = folder / f"{stem}{ext}"
                tried.append(str(cand))
                if cand.is_file():
                    return cand
    raise ModelFileError(
        f"no SMPL {gender} model found at {path} (looked for {', '.join(tried[:4])} ...). {SMPL_DOWNLOAD_HELP}"
    )
