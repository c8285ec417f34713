"""Named protocols: joint set, root alignment and ground-truth body, checked by hand computation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mega.body.joints import H36M_TO_LSP14
from mega.metrics.protocols import PROTOCOLS, build_protocol

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
V = 40


def _regressor(rows: int, seed: int) -> torch.Tensor:
    """Row-normalised (rows, V), each joint a weighted mean of 3 vertices (like a real, local regressor)."""
    g = torch.Generator().manual_seed(seed)
    reg = torch.zeros(rows, V)
    for r in range(rows):
        reg[r, torch.randperm(V, generator=g)[:3]] = torch.rand(3, generator=g) + 0.1
    return reg / reg.sum(dim=1, keepdim=True)


@pytest.fixture
def setup() -> dict:
    g = torch.Generator().manual_seed(3)
    gt = torch.randn(4, V, 3, generator=g, dtype=torch.float64)
    pred = (
        gt
        + 0.05 * torch.randn(4, V, 3, generator=g, dtype=torch.float64)
        + torch.tensor([0.3, -0.2, 2.0]).double()
    )
    body = SimpleNamespace(name="toy", num_vertices=V, J_regressor=_regressor(24, 1))
    return {"gt": gt, "pred": pred, "body": body, "h36m": _regressor(17, 2)}


def _by_hand(pred: np.ndarray, gt: np.ndarray, reg: np.ndarray, select, root: str) -> tuple[float, float]:
    """One sample's MPJPE and PVE, written directly from the protocol definitions."""

    def aligned(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        j = reg @ v
        if root == "pelvis":
            r = j[0]
        elif root == "mid_hip":
            r = (j[1] + j[2]) / 2
        else:
            r = v.mean(axis=0)
        return j[select] - r, v - r

    pj, pv = aligned(pred)
    gj, gv = aligned(gt)
    return float(np.linalg.norm(pj - gj, axis=1).mean()), float(np.linalg.norm(pv - gv, axis=1).mean())


@pytest.mark.parametrize(
    ("name", "select", "root", "uses_h36m"),
    [
        ("3dpw_spin14", H36M_TO_LSP14, "pelvis", True),
        ("mega17", list(range(17)), "centroid", True),
        ("emdb24", list(range(24)), "mid_hip", False),
        ("smpl24", list(range(24)), "mid_hip", False),
    ],
)
def test_protocol_matches_hand_computation(
    setup: dict, name: str, select, root: str, uses_h36m: bool
) -> None:
    kwargs = {"h36m_regressor": setup["h36m"]} if uses_h36m else {}
    protocol = build_protocol(name, **kwargs)
    reg = protocol.regressor_for(setup["body"])
    errs = protocol.errors(setup["pred"], setup["gt"], reg)
    reg_np = (setup["h36m"] if uses_h36m else setup["body"].J_regressor).double().numpy()
    for b in range(4):
        m, p = _by_hand(setup["pred"][b].numpy(), setup["gt"][b].numpy(), reg_np, select, root)
        assert errs["mpjpe"][b].item() == pytest.approx(m, abs=1e-6)
        assert errs["pve"][b].item() == pytest.approx(p, abs=1e-6)
    assert set(errs) == {"mpjpe", "pa_mpjpe", "pve", "pa_pve"}
    assert protocol.describe()["name"] == name


def test_roots_give_different_numbers_and_pa_does_not_care(setup: dict) -> None:
    spin = build_protocol("3dpw_spin14", h36m_regressor=setup["h36m"])
    mega = build_protocol("mega17", h36m_regressor=setup["h36m"])
    smpl = build_protocol("smpl24")
    body = setup["body"]
    e_spin = spin.errors(setup["pred"], setup["gt"], spin.regressor_for(body))
    e_mega = mega.errors(setup["pred"], setup["gt"], mega.regressor_for(body))
    e_smpl = smpl.errors(setup["pred"], setup["gt"], smpl.regressor_for(body))
    assert (e_spin["pve"] - e_mega["pve"]).abs().min() > 1e-4  # pelvis vs centroid
    assert (e_spin["pve"] - e_smpl["pve"]).abs().min() > 1e-4  # pelvis vs mid-hip
    # PA-PVE re-solves translation: the same under every root.
    torch.testing.assert_close(e_spin["pa_pve"], e_mega["pa_pve"])
    torch.testing.assert_close(e_spin["pa_pve"], e_smpl["pa_pve"])
    # A translated prediction scores the same everywhere (every protocol root-aligns).
    shifted = setup["pred"] + torch.tensor([5.0, 1.0, -2.0]).double()
    for proto in (spin, mega, smpl):
        reg = proto.regressor_for(body)
        for k, v in proto.errors(shifted, setup["gt"], reg).items():
            # float32 regressor rows sum to 1 only to ~1e-7, so a 5 m shift leaks ~1e-7 m.
            torch.testing.assert_close(v, proto.errors(setup["pred"], setup["gt"], reg)[k], atol=1e-6, rtol=0)


def test_ground_truth_body_and_registry() -> None:
    assert PROTOCOLS.names() == ["3dpw_spin14", "emdb24", "emdb24_regressed", "mega17", "smpl24"]
    reg = _regressor(17, 0)
    assert build_protocol("3dpw_spin14", h36m_regressor=reg).gt_gender("female") == "female"
    assert build_protocol("emdb24").gt_gender("male") == "male"
    assert build_protocol("smpl24").gt_gender("female") == "neutral"
    with pytest.raises(ValueError, match=r"\(17, V\)"):
        build_protocol("mega17", h36m_regressor=torch.rand(14, V))


def test_missing_regressor_says_what_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        build_protocol("3dpw_spin14", h36m_regressor=tmp_path / "J_regressor_h36m.npy")
    msg = str(info.value)
    assert "J_regressor_h36m.npy" in msg and "data/body_models/J_regressor_h36m.npy" in msg and "SPIN" in msg


def test_topology_mismatch_is_explained(setup: dict) -> None:
    protocol = build_protocol("3dpw_spin14", h36m_regressor=torch.rand(17, 6890))
    with pytest.raises(ValueError, match="protocol=smpl24"):
        protocol.regressor_for(setup["body"])


def test_every_protocol_config_builds(tmp_path: Path) -> None:
    fake = tmp_path / "J_regressor_h36m.npy"
    np.save(fake, np.full((17, 6890), 1 / 6890))
    files = sorted((CONFIGS / "protocol").glob("*.yaml"))
    assert [f.stem for f in files] == PROTOCOLS.names()
    for f in files:
        cfg = OmegaConf.to_container(OmegaConf.load(f))
        if "h36m_regressor" in cfg:
            cfg["h36m_regressor"] = str(fake)
        assert build_protocol(**cfg).name == f.stem


def _umeyama(p: np.ndarray, g: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) taking points p (N, 3) onto g, written out as in EMDB's evaluation code."""
    mu_p, mu_g = p.mean(0), g.mean(0)
    x, y = p - mu_p, g - mu_g
    u, _, vh = np.linalg.svd(x.T @ y)
    z = np.eye(3)
    z[2, 2] = np.sign(np.linalg.det(vh.T @ u.T))
    r = vh.T @ z @ u.T
    s = np.trace(r @ (x.T @ y)) / (x**2).sum()
    return s, r, mu_g - s * r @ mu_p


def test_emdb24_takes_skeleton_joints_and_moves_vertices_by_the_joint_similarity(setup: dict) -> None:
    """emdb24 = EMDB's evaluation_metrics.py: FK joints, mid-hip root, MVE_PA via the joints' similarity."""
    g = torch.Generator().manual_seed(5)
    gt_j = torch.randn(4, 24, 3, generator=g, dtype=torch.float64)
    pred_j = gt_j + 0.05 * torch.randn(4, 24, 3, generator=g, dtype=torch.float64)
    official, regressed = build_protocol("emdb24"), build_protocol("emdb24_regressed")
    assert official.uses_skeleton and not regressed.uses_skeleton
    reg = official.regressor_for(setup["body"])
    errs = official.errors(setup["pred"], setup["gt"], reg, pred_joints=pred_j, gt_joints=gt_j)
    for b in range(4):
        pj, gj = pred_j[b].numpy(), gt_j[b].numpy()
        p_root, g_root = (pj[1] + pj[2]) / 2, (gj[1] + gj[2]) / 2
        pj, gj = pj - p_root, gj - g_root
        pv, gv = setup["pred"][b].numpy() - p_root, setup["gt"][b].numpy() - g_root
        s, r, t = _umeyama(pj, gj)
        assert errs["mpjpe"][b].item() == pytest.approx(np.linalg.norm(pj - gj, axis=1).mean(), abs=1e-9)
        assert errs["pve"][b].item() == pytest.approx(np.linalg.norm(pv - gv, axis=1).mean(), abs=1e-9)
        mve_pa = np.linalg.norm((s * pv @ r.T + t) - gv, axis=1).mean()
        assert errs["pa_pve"][b].item() == pytest.approx(mve_pa, abs=1e-9)
    # Without joints on both sides: J @ V for both, and still the joint-solved vertex alignment.
    half = official.errors(setup["pred"], setup["gt"], reg, pred_joints=pred_j)
    old = regressed.errors(setup["pred"], setup["gt"], reg)
    torch.testing.assert_close(half["mpjpe"], old["mpjpe"])
    torch.testing.assert_close(half["pve"], old["pve"])
    assert (half["pa_pve"] - old["pa_pve"]).min() > 0  # solving on the vertices themselves fits them better
    assert "skeleton" in official.describe()["joints"] and "MVE_PA" in official.describe()["pa_pve"]


def test_h36m_regressor_row_sums_are_checked(tmp_path: Path, caplog) -> None:
    import logging

    from mega.body.joints import load_h36m_regressor

    good = np.full((17, 6890), 1 / 6890)
    off = good.copy()
    off[5] *= 0.98  # one row sums to 0.98: 20 mm per metre of translation leaks into that joint
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "off.npy", off)
    with caplog.at_level(logging.INFO, logger="mega.body.joints"):
        load_h36m_regressor(tmp_path / "good.npy")
        load_h36m_regressor(tmp_path / "off.npy")
    good_rec, off_rec = caplog.records[-2], caplog.records[-1]
    assert good_rec.levelno == logging.INFO and "good.npy" in good_rec.getMessage()
    assert off_rec.levelno == logging.WARNING and "0.980000" in off_rec.getMessage()
    assert "20.000 mm per metre" in off_rec.getMessage()
