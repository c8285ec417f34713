"""The HMR objective: Gumbel straight-through, annealing, per-sample terms, has_smpl, gradients, resume."""

from __future__ import annotations

import math

import pytest
import torch
from test_model import make_model

from mega.body.rotations import axis_angle_to_matrix
from mega.losses import (
    HMRObjective,
    LossWeights,
    gumbel_softmax_st,
    gumbel_temperature,
    keypoint_3d_l1,
    keypoint_l1,
    rotation_distance,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MEGA = dict(mask=1.0, rotation=1.0, kp2d_heads=0.1, betas=5e-4)
GENHMR = dict(mask=1.0, betas=5e-4, theta=1e-3, joints_3d=5e-2, kp2d=1e-2)


def _batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "img": torch.randn(n, 3, 48, 48, generator=g),
        "kp2d_coco": torch.cat([torch.rand(n, 17, 2, generator=g) * 2 - 1, torch.ones(n, 17, 1)], -1),
        "kp2d_smpl": torch.cat([torch.rand(n, 24, 2, generator=g) * 2 - 1, torch.ones(n, 24, 1)], -1),
        "global_orient": torch.randn(n, 3, generator=g) * 0.5,
        "body_pose": torch.randn(n, 23, 3, generator=g) * 0.2,
        "betas": torch.randn(n, 10, generator=g),
        "has_smpl": torch.ones(n),
        "joints_3d": torch.cat([torch.randn(n, 24, 3, generator=g), torch.ones(n, 24, 1)], -1),
    }


def test_temperature_follows_genhmr_cosine_annealing():
    assert gumbel_temperature(0, 1000) == pytest.approx(1.0)
    assert gumbel_temperature(250, 1000) == pytest.approx(0.01 + 0.5 * 0.99)  # half of the 500-step horizon
    assert gumbel_temperature(500, 1000) == pytest.approx(0.01) == gumbel_temperature(999, 1000)
    taus = [gumbel_temperature(t, 100, 2.0, 0.1, 1.0) for t in range(101)]
    assert all(a >= b for a, b in zip(taus, taus[1:], strict=False)) and taus[-1] == pytest.approx(0.1)


def test_straight_through_gumbel_is_hard_forward_soft_backward():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g, requires_grad=True)
    noise = -torch.log(-torch.log(torch.rand(3, 5, 7, generator=g)))
    y = gumbel_softmax_st(logits, 0.5, noise=noise)
    assert torch.equal(y.detach(), torch.nn.functional.one_hot((logits + noise).argmax(-1), 7).float())
    w = torch.randn(3, 5, 7, generator=g)
    (y * w).sum().backward()
    ref = logits.detach().clone().requires_grad_(True)
    (((ref + noise) / 0.5).softmax(-1) * w).sum().backward()
    torch.testing.assert_close(logits.grad, ref.grad)
    with pytest.raises(ValueError, match="temperature"):
        gumbel_softmax_st(logits, 0.0)


def test_per_sample_terms_known_answers():
    theta = 0.7
    rz = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, theta]]))
    assert float(rotation_distance(rz, torch.eye(3)[None])) == pytest.approx(
        4 * (1 - math.cos(theta)), rel=1e-5
    )
    pred = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    gt = torch.tensor([[[0.5, 0.0, 1.0], [0.0, 0.0, 0.0]]])  # second keypoint absent (conf 0)
    assert float(keypoint_l1(pred, gt)) == pytest.approx(0.5)
    j = torch.randn(2, 24, 3)
    gt3 = torch.cat([j + torch.tensor([1.0, 2.0, 3.0]), torch.ones(2, 24, 1)], -1)
    torch.testing.assert_close(keypoint_3d_l1(j, gt3), torch.zeros(2), atol=1e-5, rtol=0)  # root-aligned
    gt3[:, 0, 3] = 0.0  # unseen root: no term
    assert float(keypoint_3d_l1(j + 1, gt3).abs().sum()) == 0.0


@pytest.mark.parametrize("kind,weights", [("mesh", MEGA), ("mesh", GENHMR), ("pose", MEGA), ("pose", GENHMR)])
def test_every_trainable_parameter_gets_a_gradient(free_body, kind, weights):
    """DDP waits for every parameter: each preset's terms reach all heads, the backbone and the transformer."""
    model = make_model(free_body, kind, "deformable" if weights is GENHMR else "prefix")
    objective = HMRObjective(weights, total_steps=10, keypoints=["smpl24", "coco17"])
    loss, terms = objective(model, _batch())
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert all(math.isfinite(float(v.detach())) for v in terms.values())
    assert ("tau" in terms) == LossWeights(**weights).differentiable


def test_samples_without_smpl_give_only_2d_terms(free_body):
    model = make_model(free_body, "pose")
    batch = _batch()
    batch["has_smpl"] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    objective = HMRObjective(GENHMR, total_steps=10)
    state = objective.state_dict()
    _, terms = objective(model, batch)
    other = dict(batch)  # change the (unknown) 3D ground truth of the 2D-only samples
    for key in ("global_orient", "body_pose", "betas"):
        other[key] = batch[key].clone()
        other[key][1::2] = torch.randn_like(other[key][1::2])
    objective.load_state_dict(state)
    _, terms2 = objective(model, other)
    for name in ("mask", "rotation", "betas", "theta"):
        assert float(terms2[name].detach()) == pytest.approx(float(terms[name].detach()), rel=1e-5), name
    changed = dict(batch, kp2d_smpl=batch["kp2d_smpl"] + torch.tensor([0.1, 0.0, 0.0]))
    objective.load_state_dict(state)
    _, terms3 = objective(model, changed)
    assert float(terms3["kp2d"].detach()) != pytest.approx(float(terms["kp2d"].detach()))


def test_state_dict_replays_masks_noise_and_temperature(free_body):
    model = make_model(free_body)
    objective = HMRObjective(GENHMR, total_steps=4, grad_accum=2)
    objective(model, _batch())
    state = objective.state_dict()
    first = objective(model, _batch(seed=1))
    assert objective.step == 1 and objective.temperature() == pytest.approx(
        0.505
    )  # mid-way of a 2-update horizon
    objective.load_state_dict(state)
    again = objective(model, _batch(seed=1))
    assert float(again[0].detach()) == pytest.approx(float(first[0].detach()), rel=1e-6)


def test_bad_configuration_errors():
    with pytest.raises(KeyError, match="cosine"):
        HMRObjective(MEGA, total_steps=1, mask_schedule="cosinus")
    with pytest.raises(ValueError, match="smpl24"):
        HMRObjective(MEGA, total_steps=1, keypoints=["h36m"])
    with pytest.raises(TypeError):
        HMRObjective({"maks": 1.0}, total_steps=1)
