"""The evaluator on fixture benchmarks: oracle scores 0, mean_pose a number computed independently,
no sample dropped at any batch size, best-of-Q and diversity numbers from their definitions, scripts."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mega.body.joints import H36M_TO_LSP14
from mega.body.rotations import axis_angle_to_matrix
from mega.data.benchmarks import BenchmarkDataset, BenchmarkIndex, build_index
from mega.metrics.evaluator import Evaluator, format_table, write_results
from mega.metrics.predictors import PredictorOutput, build_predictor
from mega.metrics.protocols import METRIC_NAMES, build_protocol

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["fixtures_benchmarks"]  # fixtures threedpw, emdb, smpl_bodies, free_bodies


def _local_regressor(rows: int, num_vertices: int, seed: int = 0) -> torch.Tensor:
    """A random row-normalised (rows, V) regressor, each joint a mean of 5 vertices."""
    g = torch.Generator().manual_seed(seed)
    reg = torch.zeros(rows, num_vertices)
    for r in range(rows):
        reg[r, torch.randperm(num_vertices, generator=g)[:5]] = torch.rand(5, generator=g) + 0.1
    return reg / reg.sum(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def pw3d(threedpw, synthetic_smpl_dir) -> BenchmarkDataset:
    index = build_index(
        "3dpw", root=threedpw["root"], body_model="smpl", body_model_path=str(synthetic_smpl_dir)
    )
    return BenchmarkDataset(index, root=threedpw["root"])


@pytest.fixture(scope="module")
def spin14() -> object:
    return build_protocol("3dpw_spin14", h36m_regressor=_local_regressor(17, 6890))


def _vertices(body, orient, pose, betas, transl) -> np.ndarray:
    f = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = body(global_orient=axis_angle_to_matrix(f(orient)), body_pose=f(pose).reshape(-1, 23, 3),
                   betas=f(betas), transl=f(transl))  # fmt: skip
    return out.vertices.double().numpy()


def test_oracle_scores_zero(pw3d, spin14, smpl_bodies) -> None:
    result = Evaluator(spin14, smpl_bodies, batch_size=4, progress=False).run(
        pw3d, build_predictor("oracle"), "oracle"
    )
    for name in METRIC_NAMES:
        assert result.per_sample[name].abs().max() < 1e-3, name  # mm
    assert result.summary["num_samples"] == len(pw3d) == 10
    assert result.summary["protocol"] == "3dpw_spin14" and "best_of_q" not in result.summary


def test_mean_pose_matches_independent_computation(pw3d, spin14, smpl_bodies) -> None:
    result = Evaluator(spin14, smpl_bodies, batch_size=3, progress=False).run(
        pw3d, build_predictor("mean_pose")
    )
    a = pw3d.index.arrays
    reg = spin14.h36m_regressor.double().numpy()
    mpjpe, pve = [], []
    for i in range(len(pw3d)):
        gt = _vertices(smpl_bodies(str(a["gender"][i])), a["global_orient"][i:i + 1], a["body_pose"][i:i + 1],
                       a["betas"][i:i + 1], a["transl"][i:i + 1])[0]  # fmt: skip
        rest = _vertices(smpl_bodies("neutral"), a["global_orient"][i:i + 1], np.zeros((1, 69)), np.zeros((1, 10)),
                         a["transl"][i:i + 1])[0]  # fmt: skip
        jg, jp = reg @ gt, reg @ rest
        mpjpe.append(
            np.linalg.norm((jp[H36M_TO_LSP14] - jp[0]) - (jg[H36M_TO_LSP14] - jg[0]), axis=1).mean() * 1000
        )
        pve.append(np.linalg.norm((rest - jp[0]) - (gt - jg[0]), axis=1).mean() * 1000)
    np.testing.assert_allclose(result.per_sample["mpjpe"].numpy(), mpjpe, atol=1e-3)
    assert result.summary["metrics"]["mpjpe"] == pytest.approx(np.mean(mpjpe), abs=1e-3)
    assert result.summary["metrics"]["pve"] == pytest.approx(np.mean(pve), abs=1e-3)
    assert result.summary["metrics"]["mpjpe"] > 20.0  # mm: a real floor, not zero
    assert 0 < result.summary["metrics"]["pa_mpjpe"] < result.summary["metrics"]["mpjpe"]


def test_no_sample_dropped_at_any_batch_size(pw3d, smpl_bodies, tmp_path: Path) -> None:
    protocol_name = "mega17"
    protocol = build_protocol(protocol_name, h36m_regressor=_local_regressor(17, 6890))
    n = len(pw3d)
    reference = None
    for batch_size in (1, 3, 7, n):
        result = Evaluator(protocol, smpl_bodies, batch_size=batch_size, progress=False).run(
            pw3d, build_predictor("mean_pose"), "mean_pose"
        )
        assert result.meta["index"] == list(range(n))
        if reference is None:
            reference = result
        for k, v in result.per_sample.items():
            torch.testing.assert_close(v, reference.per_sample[k], atol=1e-4, rtol=0)
    csv_path, json_path = write_results(reference, tmp_path / "run")
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == n and sorted(int(r["index"]) for r in rows) == list(range(n))
    assert {r["protocol"] for r in rows} == {protocol_name}
    a = pw3d.index.arrays
    assert [(r["sequence"], int(r["frame"]), int(r["person"])) for r in rows] == list(
        zip(a["sequence"].tolist(), a["frame"].tolist(), a["person"].tolist())
    )
    assert rows[0]["image"] == a["image"][0]
    summary = json.loads(json_path.read_text())
    assert summary["protocol"] == protocol_name and summary["num_samples"] == n
    assert summary["metrics"]["mpjpe"] == pytest.approx(np.mean([float(r["mpjpe"]) for r in rows]), abs=1e-3)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    table = format_table(summary)
    assert f"protocol {protocol_name}" in table and "MPJPE" in table


def test_best_of_q_and_diversity_from_definitions(pw3d, smpl_bodies) -> None:
    protocol = build_protocol("smpl24")
    neutral = smpl_bodies("neutral")
    field = (
        torch.randn(neutral.num_vertices, 3, generator=torch.Generator().manual_seed(5)) * 0.01
    )  # D (V, 3)
    coef = torch.tensor([0.0, 1.0, 3.0])

    def stochastic(batch) -> PredictorOutput:
        with torch.no_grad():
            gt = neutral(axis_angle_to_matrix(batch["global_orient"]), batch["body_pose"].reshape(-1, 23, 3),
                         batch["betas"], batch["transl"]).vertices  # fmt: skip
        samples = gt[:, None] + coef[None, :, None, None] * field
        return PredictorOutput(vertices=samples, deterministic_vertices=gt + 2.0 * field)

    result = Evaluator(protocol, smpl_bodies, batch_size=4, progress=False).run(pw3d, stochastic, "toy")
    s = result.summary
    assert s["single_hypothesis_source"] == "deterministic"
    for name in METRIC_NAMES:
        assert s["best_of_q"][name] < 1e-3  # sample 0 is the ground truth, for every metric
    # Root-aligned field: A_v = D_v - midhip(D); joints: J D - midhip(D).
    reg = neutral.J_regressor.double()
    d = field.double()
    root = (reg[1] @ d + reg[2] @ d) / 2
    mean_vertex = (d - root).norm(dim=1).mean().item()
    mean_joint = (reg @ d - root).norm(dim=1).mean().item()
    assert s["diversity"]["apd_cm"] == pytest.approx(2.0 * mean_joint * 100, rel=1e-4)  # mean |ci - cj| = 2
    std_c = coef.double().std(unbiased=False).item()
    assert s["diversity"]["vertex_std_mm"] == pytest.approx(std_c * mean_vertex * 1000, rel=1e-4)
    assert s["diversity"]["dist_to_det_mm"] == pytest.approx(
        2 / 3 * mean_vertex * 1000, rel=1e-4
    )  # |4/3 - 2|
    assert s["metrics"]["pve"] == pytest.approx(2.0 * mean_vertex * 1000, rel=1e-4)  # deterministic = gt + 2D
    assert s["mean_of_q"]["pve"] == pytest.approx(4 / 3 * mean_vertex * 1000, rel=1e-4)
    assert "best-of-Q" in format_table(s) and "APD" in format_table(s)


def test_q_parameter_hypotheses(pw3d, spin14, smpl_bodies) -> None:
    def two_oracles(batch) -> PredictorOutput:
        rep = lambda x: torch.stack([x, x], dim=1)  # noqa: E731  (B, ...) -> (B, 2, ...)
        out = build_predictor("oracle")(batch)
        return PredictorOutput(global_orient=rep(out.global_orient), body_pose=rep(out.body_pose),
                               betas=rep(out.betas), transl=rep(out.transl), gender=out.gender)  # fmt: skip

    s = Evaluator(spin14, smpl_bodies, batch_size=4, progress=False).run(pw3d, two_oracles).summary
    assert s["single_hypothesis_source"] == "mean_of_q"
    assert max(s["best_of_q"].values()) < 1e-3 and max(s["metrics"].values()) < 1e-3
    assert s["diversity"]["apd_cm"] < 1e-4 and "dist_to_det_mm" not in s["diversity"]


def test_nan_prediction_is_reported(pw3d, spin14, smpl_bodies) -> None:
    def broken(batch) -> PredictorOutput:
        out = build_predictor("mean_pose")(batch)
        out.betas = out.betas.clone().fill_(float("nan"))
        return out

    with pytest.raises(ValueError, match="NaN"):
        Evaluator(spin14, smpl_bodies, batch_size=5, progress=False).run(pw3d, broken)


def test_free_body_on_emdb(emdb, free_bodies) -> None:
    index = build_index("emdb", root=emdb["root"], body_model="free")
    ds = BenchmarkDataset(index)
    for name in ("smpl24", "emdb24"):
        protocol = build_protocol(name)
        oracle = Evaluator(protocol, free_bodies, batch_size=2, progress=False).run(
            ds, build_predictor("oracle")
        )
        assert max(v.abs().max().item() for v in oracle.per_sample.values()) < 1e-3
        floor = Evaluator(protocol, free_bodies, batch_size=2, progress=False).run(
            ds, build_predictor("mean_pose")
        )
        assert floor.summary["metrics"]["mpjpe"] > 10.0 and floor.summary["dataset"] == "emdb"


def test_scripts_prepare_and_evaluate(threedpw, synthetic_smpl_dir, tmp_path: Path) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    index = tmp_path / "prepared" / "3dpw.npz"
    common = [f"benchmark.root={threedpw['root']}", f"body_model.path={synthetic_smpl_dir}"]
    prep = subprocess.run(
        [sys.executable, "scripts/prepare_data.py", *common, f"output={index}", f"hydra.run.dir={tmp_path / 'p'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert "10 samples from 2 sequences" in prep.stdout and BenchmarkIndex.load(index).split == "test"
    run_dir = tmp_path / "run"
    ev = subprocess.run(
        [sys.executable, "scripts/eval.py", "benchmark=3dpw", "body_model=smpl", *common, f"benchmark.index={index}", "protocol=smpl24",
         "predictor=mean_pose", "batch_size=3", "progress=false", f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "protocol smpl24" in ev.stdout and "predictor mean_pose" in ev.stdout
    assert len(list(csv.DictReader((run_dir / "per_sample.csv").open()))) == 10
    assert json.loads((run_dir / "summary.json").read_text())["protocol"] == "smpl24"

    # two processes under torchrun: every sample once, in dataset order, the same numbers
    ddp_dir = tmp_path / "ddp"
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2"]
    ev2 = subprocess.run(
        [*torchrun, "scripts/eval.py", "benchmark=3dpw", "body_model=smpl", *common, f"benchmark.index={index}", "protocol=smpl24",
         "predictor=mean_pose", "batch_size=2", "progress=false", f"hydra.run.dir={ddp_dir}"],
        cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert ev2.returncode == 0, ev2.stderr[-2000:]
    one = list(csv.DictReader((run_dir / "per_sample.csv").open()))
    two = list(csv.DictReader((ddp_dir / "per_sample.csv").open()))
    assert [r["index"] for r in two] == [str(i) for i in range(10)]
    for a, b in zip(one, two):  # same sample in each row; float32 batching differs by ~1e-4 mm
        assert [a[k] for k in ("index", "image", "frame", "person")] == [
            b[k] for k in ("index", "image", "frame", "person")
        ]
        for name in METRIC_NAMES:
            assert float(a[name]) == pytest.approx(float(b[name]), abs=1e-3)
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (run_dir, ddp_dir))
    assert s2["num_samples"] == s1["num_samples"] == 10
    for name in METRIC_NAMES:
        assert s2["metrics"][name] == pytest.approx(s1["metrics"][name], abs=1e-3)


def test_orientation_error_of_a_predictor_rotation(pw3d, spin14, smpl_bodies) -> None:
    """A predictor's own rotation, off the truth by a known angle about a random axis, scores that angle."""

    angles = torch.linspace(0.0, 170.0, len(pw3d), dtype=torch.float64)

    def tilted(batch) -> PredictorOutput:
        out = build_predictor("oracle")(batch)
        b = len(batch["index"])
        axis = torch.nn.functional.normalize(
            torch.randn(b, 3, generator=torch.Generator().manual_seed(b)), dim=-1
        )
        delta = axis_angle_to_matrix(axis * torch.deg2rad(angles[batch["index"]]).float()[:, None])
        out.global_rot = axis_angle_to_matrix(batch["global_orient"].reshape(b, 3).float()) @ delta
        return out

    res = Evaluator(spin14, smpl_bodies, batch_size=3, progress=False).run(pw3d, tilted)
    torch.testing.assert_close(res.per_sample["rot_err_deg"], angles, atol=0.05, rtol=0)
    assert res.summary["orientation"]["rot_err_deg"] == pytest.approx(float(angles.mean()), abs=0.05)
    assert "ROT-ERR" in format_table(res.summary)
