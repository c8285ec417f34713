"""Fréchet distance: known answers, an independent scipy computation, and the PCA mesh features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from mega.metrics.frechet import (
    MeshPCAFeatures,
    feature_statistics,
    frechet_distance,
    frechet_distance_between,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def _random_cov(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_identical_sets_give_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g) @ torch.randn(8, 8, generator=g)
    assert frechet_distance_between(x, x) == pytest.approx(0.0, abs=1e-9)


def test_shift_gives_squared_mean_difference():
    """Y = X + delta has exactly X's covariance, so FD = ||delta||^2."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    delta = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0], dtype=torch.float64)
    assert frechet_distance_between(x, x + delta) == pytest.approx(float(delta.square().sum()), rel=1e-9)


def test_diagonal_covariances_closed_form():
    """For diagonal covariances FD = ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2."""
    a = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 1.0, 9.0], dtype=torch.float64)
    mu1, mu2 = torch.zeros(4, dtype=torch.float64), torch.tensor([1.0, 0.0, 2.0, 0.0], dtype=torch.float64)
    expected = 5.0 + float((a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_matches_scipy_sqrtm_for_non_commuting_covariances():
    g = torch.Generator().manual_seed(2)
    s1, s2 = _random_cov(10, g), _random_cov(10, g)
    mu1, mu2 = (
        torch.randn(10, generator=g, dtype=torch.float64),
        torch.randn(10, generator=g, dtype=torch.float64),
    )
    root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float((mu1 - mu2).square().sum()) + float(np.trace(s1.numpy() + s2.numpy() - 2 * root))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_statistics_and_bad_input():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = feature_statistics(x)
    assert torch.allclose(mu, torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert torch.allclose(sigma, torch.from_numpy(np.cov(x.numpy().T)))
    with pytest.raises(ValueError, match="NaN"):
        feature_statistics(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance_between(torch.zeros(5, 2), torch.zeros(5, 3))


def test_pca_features_measure_rms_vertex_distance_in_cm():
    """With all components kept, feature distance = RMS per-vertex distance (cm) of centred meshes."""
    g = torch.Generator().manual_seed(3)
    meshes = torch.randn(40, 10, 3, generator=g) * 0.1  # 40 meshes of 10 vertices, metres
    features = MeshPCAFeatures.fit(meshes, num_components=30)
    assert float(features.explained_variance.sum()) == pytest.approx(1.0, abs=1e-9)
    a, b = meshes[:1], meshes[1:2]
    ca, cb = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    rms_cm = float((ca - cb).square().sum(-1).mean().sqrt()) * 100
    assert float((features(a) - features(b)).norm()) == pytest.approx(rms_cm, rel=1e-6)
    shifted = meshes + torch.tensor([0.3, -1.0, 2.0])  # translation is removed by centring
    assert torch.allclose(features(shifted), features(meshes), atol=1e-4)  # float32 input
    assert features(meshes).shape == (40, 30) and features.state_dict()["basis"].shape == (30, 30)
    with pytest.raises(ValueError, match=r"\(B, 10, 3\)"):
        features(torch.zeros(2, 11, 3))


def test_pca_fd_separates_distributions():
    """A set drawn like the reference scores far lower than a differently spread one."""
    g = torch.Generator().manual_seed(4)
    basis = torch.randn(3, 30, generator=g)

    def draw(n: int, spread: float) -> torch.Tensor:
        return (torch.randn(n, 3, generator=g) * spread @ basis).reshape(n, 10, 3) * 0.05

    features = MeshPCAFeatures.fit(draw(500, 1.0), num_components=3)
    reference = features(draw(500, 1.0))
    same, wider = (
        frechet_distance_between(features(draw(500, 1.0)), reference),
        frechet_distance_between(features(draw(500, 3.0)), reference),
    )
    assert same < 0.1 * wider and math.isfinite(same)
