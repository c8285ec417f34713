"""The `smpl` body model on synthetic SMPL-format files (real loading path, no licensed file)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import smplx
import torch
from smplx.utils import Struct

from mega.body import BODY_MODELS, ModelFileError, load_body_model, read_model_file


def _inputs(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, 3, generator=g) * 0.5,
        torch.randn(b, 23, 3, generator=g) * 0.3,
        torch.randn(b, 10, generator=g),
        torch.randn(b, 3, generator=g),
    )


@pytest.mark.parametrize("ext", ["pkl", "npz"])
def test_smpl_equals_direct_smplx_call(synthetic_smpl_dir, ext):
    go, bp, betas, transl = _inputs()
    body = load_body_model("smpl", path=synthetic_smpl_dir / f"SMPL_NEUTRAL.{ext}")
    out = body(global_orient=go, body_pose=bp, betas=betas, transl=transl)
    data = dict(np.load(synthetic_smpl_dir / "SMPL_NEUTRAL.npz"))
    ref = smplx.SMPL("", data_struct=Struct(**data), batch_size=5)(
        global_orient=go, body_pose=bp.reshape(5, 69), betas=betas, transl=transl
    )
    assert out.vertices.shape == (5, 6890, 3) and out.joints.shape == (5, 24, 3)
    assert out.vertices.dtype == torch.float32
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.joints, ref.joints[:, :24], atol=1e-6, rtol=1e-5)
    assert body.faces.shape == (13776, 3) and body.parents[0] == -1 and len(body.joint_names) == 24


@pytest.mark.parametrize("batch", [3, 5])  # 3 axis-angles are (3, 3) like one matrix
def test_rotation_matrix_pose_equals_axis_angle(smpl_body, batch):
    from mega.body.rotations import axis_angle_to_matrix

    go, bp, betas, _ = _inputs(b=batch, seed=1)
    a = smpl_body(go, bp, betas)
    b = smpl_body(axis_angle_to_matrix(go), axis_angle_to_matrix(bp), betas)
    torch.testing.assert_close(a.vertices, b.vertices)


def test_chumpy_pickle_loads_without_chumpy(synthetic_smpl_dir):
    raw = (synthetic_smpl_dir / "SMPL_NEUTRAL.pkl").read_bytes()
    assert b"chumpy.ch" in raw  # the file really references chumpy classes
    code = (
        "import sys, mega.body as b; d = b.read_model_file(sys.argv[1]); "
        "assert 'chumpy' not in sys.modules; print(type(d['v_template']).__name__, d['J_regressor'].shape)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(synthetic_smpl_dir / "SMPL_NEUTRAL.pkl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ndarray", "(24,", "6890)"]
    pkl = read_model_file(synthetic_smpl_dir / "SMPL_NEUTRAL.pkl")
    npz = read_model_file(synthetic_smpl_dir / "SMPL_NEUTRAL.npz")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f"):
        np.testing.assert_array_equal(pkl[key], npz[key])


def test_official_file_names_and_genders(synthetic_smpl_dir, tmp_path):
    shutil.copy(synthetic_smpl_dir / "SMPL_MALE.pkl", tmp_path / "basicmodel_m_lbs_10_207_0_v1.1.0.pkl")
    by_dir = load_body_model("smpl", path=tmp_path, gender="male")
    by_file = load_body_model("smpl", path=tmp_path / "basicmodel_m_lbs_10_207_0_v1.1.0.pkl")
    go, bp, betas, _ = _inputs()
    torch.testing.assert_close(by_dir(go, bp, betas).vertices, by_file(go, bp, betas).vertices)
    neutral = load_body_model("smpl", path=synthetic_smpl_dir, gender="neutral")
    assert not torch.allclose(neutral(go, bp, betas).vertices, by_dir(go, bp, betas).vertices)


def test_missing_file_error_names_file_and_where_to_get_it(tmp_path):
    with pytest.raises(ModelFileError) as err:
        load_body_model("smpl", path=tmp_path, gender="female")
    msg = str(err.value)
    assert str(tmp_path) in msg and "smpl.is.tue.mpg.de" in msg and "data/body_models/smpl" in msg
    with pytest.raises(ModelFileError, match="SMPL_NEUTRAL.pkl"):
        load_body_model("smpl", path=tmp_path / "SMPL_NEUTRAL.pkl")


def test_corrupt_or_incomplete_file_errors(synthetic_smpl_dir, tmp_path):
    bad = tmp_path / "SMPL_NEUTRAL.pkl"
    bad.write_bytes((synthetic_smpl_dir / "SMPL_NEUTRAL.pkl").read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt"):
        load_body_model("smpl", path=bad)
    data = dict(np.load(synthetic_smpl_dir / "SMPL_NEUTRAL.npz"))
    del data["weights"]
    np.savez(tmp_path / "no_weights.npz", **data)
    with pytest.raises(ModelFileError, match="weights"):
        load_body_model("smpl", path=tmp_path / "no_weights.npz")


def test_registry_names_and_bad_betas(smpl_body):
    assert {"free", "smpl"} <= set(BODY_MODELS.names())
    with pytest.raises(KeyError, match="known: free"):
        load_body_model("smplx_nonexistent")
    go, bp, _, _ = _inputs(b=2)
    with pytest.raises(ValueError, match="betas"):
        smpl_body(go, bp, torch.zeros(2, 16))
    with pytest.raises(KeyError, match="coco17"):
        smpl_body.keypoint_regressor("coco17")
