"""Known answers for the per-sample metrics, written from their definitions."""

from __future__ import annotations

import pytest
import torch

from mega.metrics.errors import (
    apd,
    apply_similarity,
    best_of_q,
    mean_distance_to,
    mean_of_q,
    mpjpe,
    pa_mpjpe,
    pa_pve,
    per_vertex_std,
    procrustes_align,
    pve,
    similarity_procrustes,
)


def _random_rotation(gen: torch.Generator, batch: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(batch, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 2] *= det[:, None]  # make det +1
    return q


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_mpjpe_constant_offset_and_shape(gen: torch.Generator) -> None:
    gt = torch.randn(5, 14, 3, generator=gen)
    offset = torch.tensor([0.03, -0.04, 0.0])  # |offset| = 0.05
    err = mpjpe(gt + offset, gt)
    assert err.shape == (5,)
    torch.testing.assert_close(err, torch.full((5,), 0.05), atol=1e-6, rtol=0)
    # One joint off by 1.4 out of 14: mean = 0.1; only the second sample is affected.
    pred = gt.clone()
    pred[1, 3, 0] += 1.4
    torch.testing.assert_close(mpjpe(pred, gt), torch.tensor([0, 0.1, 0, 0, 0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(pve(gt + offset, gt), torch.full((5,), 0.05), atol=1e-6, rtol=0)


def test_pa_mpjpe_zero_for_similarity_copies(gen: torch.Generator) -> None:
    gt = torch.randn(6, 17, 3, generator=gen, dtype=torch.float64)
    rot = _random_rotation(gen, 6)
    scale = torch.rand(6, generator=gen, dtype=torch.float64) * 3 + 0.2
    transl = torch.randn(6, 3, generator=gen, dtype=torch.float64) * 5
    pred = apply_similarity(gt, scale, rot, transl)
    assert mpjpe(pred, gt).min() > 0.1
    torch.testing.assert_close(pa_mpjpe(pred, gt), torch.zeros(6, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(pa_pve(pred, gt), torch.zeros(6, dtype=torch.float64), atol=1e-9, rtol=0)
    # The recovered transform is the inverse of the one applied.
    s, r, _ = similarity_procrustes(pred, gt)
    torch.testing.assert_close(s, 1 / scale)
    torch.testing.assert_close(r, rot.transpose(1, 2))


def test_pa_mpjpe_float32_and_batch_sizes_2_3(gen: torch.Generator) -> None:
    # MEGA's batched version silently skipped the transpose for batch sizes 2 and 3.
    for b in (1, 2, 3):
        gt = torch.randn(b, 3, 3, generator=gen)  # three joints: the ambiguous layout
        rot = _random_rotation(gen, b).float()
        pred = gt @ rot.transpose(1, 2) * 2.0 + 1.0
        err = pa_mpjpe(pred, gt)
        assert err.dtype == torch.float32 and err.shape == (b,)
        assert err.max() < 1e-5


def test_mirror_is_not_a_match(gen: torch.Generator) -> None:
    gt = torch.randn(4, 20, 3, generator=gen, dtype=torch.float64)  # non-planar
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    err = pa_mpjpe(mirrored, gt)
    assert (err > 0.1).all()
    _, rot, _ = similarity_procrustes(mirrored, gt)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(4, dtype=torch.float64))
    # A planar set is its own mirror image up to a rotation: there PA-MPJPE is 0 again.
    planar = gt.clone()
    planar[..., 2] = 0
    err_planar = pa_mpjpe(planar * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64), planar)
    assert err_planar.max() < 1e-9


def test_pa_mpjpe_matches_independent_kabsch(gen: torch.Generator) -> None:
    # Independent reference: scipy's Kabsch (Rotation.align_vectors) on centred points, then the
    # least-squares scale for that rotation; random perturbations of the optimum never do better.
    from scipy.spatial.transform import Rotation

    gt = torch.randn(3, 12, 3, generator=gen, dtype=torch.float64)
    pred = 1.7 * gt + 0.2 * torch.randn(3, 12, 3, generator=gen, dtype=torch.float64)
    scale, rot, transl = similarity_procrustes(pred, gt)
    err = pa_mpjpe(pred, gt)
    for b in range(3):
        x = (pred[b] - pred[b].mean(0)).numpy()
        y = (gt[b] - gt[b].mean(0)).numpy()
        r_ref, _ = Rotation.align_vectors(y, x)
        xr = r_ref.apply(x)
        s_ref = float((xr * y).sum() / (x * x).sum())
        ref = float((((s_ref * xr - y) ** 2).sum(-1) ** 0.5).mean())
        assert err[b].item() == pytest.approx(ref, abs=1e-9)
        assert scale[b].item() == pytest.approx(s_ref, abs=1e-9)
        torch.testing.assert_close(rot[b], torch.from_numpy(r_ref.as_matrix()))
    aligned = procrustes_align(pred, gt)
    sse = ((aligned - gt) ** 2).sum(dim=(1, 2))
    for _ in range(20):
        d = Rotation.from_rotvec(0.01 * torch.randn(3, generator=gen).numpy()).as_matrix()
        other = apply_similarity(pred, scale * 1.01, torch.from_numpy(d) @ rot, transl)
        assert (((other - gt) ** 2).sum(dim=(1, 2)) >= sse - 1e-12).all()
    # Not symmetric: the scale comes from the prediction's variance.
    assert not torch.allclose(pa_mpjpe(pred, gt), pa_mpjpe(gt, pred))


def test_wrong_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        mpjpe(torch.zeros(2, 4, 3), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"\(B, Q, N, 3\)"):
        apd(torch.zeros(2, 4, 3))


def test_apd_of_rigid_shifts() -> None:
    base = torch.randn(2, 1, 10, 3)
    shifts = torch.tensor([0.0, 1.0, 3.0])  # pairwise distances 1, 3, 2 -> mean 2
    samples = base + shifts[None, :, None, None] * torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(apd(samples), torch.full((2,), 2.0))
    assert apd(samples[:, :1]).tolist() == [0.0, 0.0]
    # Rigid shifts: the per-vertex std is the std of the shifts (population), the mean mesh is the base + 4/3.
    expected_std = torch.tensor([0.0, 1.0, 3.0]).std(unbiased=False)
    torch.testing.assert_close(per_vertex_std(samples), expected_std.expand(2, 10))
    torch.testing.assert_close(mean_of_q(samples), base[:, 0] + torch.tensor([0.0, 0.0, 4 / 3]))
    torch.testing.assert_close(mean_distance_to(samples, base[:, 0]), torch.full((2,), 4 / 3))


def test_best_of_q_is_per_metric() -> None:
    gt = torch.zeros(1, 4, 3)
    gt[0, :, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    gt[0, :, 1] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    # Sample 0: gt shifted by 0.2 (MPJPE 0.2, PA 0). Sample 1: gt with one joint off by 0.4 (MPJPE 0.1, PA > 0).
    s0 = gt + torch.tensor([0.0, 0.0, 0.2])
    s1 = gt.clone()
    s1[0, 2, 2] += 0.4
    samples = torch.stack([s0, s1], dim=1)  # (1, 2, 4, 3)
    flat = samples.flatten(0, 1)
    errors = {
        "mpjpe": mpjpe(flat, gt.expand(2, 4, 3)).view(1, 2),
        "pa_mpjpe": pa_mpjpe(flat, gt.expand(2, 4, 3)).view(1, 2),
    }
    assert errors["mpjpe"].argmin() == 1 and errors["pa_mpjpe"].argmin() == 0
    best = best_of_q(errors)
    torch.testing.assert_close(best["mpjpe"], torch.tensor([0.1]))
    assert best["pa_mpjpe"].item() < 1e-6
    with pytest.raises(ValueError, match="best_of_q"):
        best_of_q({"mpjpe": torch.zeros(3)})
