"""Training on cached frozen-trunk outputs gives the same model outputs as running the trunk every step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mega.backbones import build_backbone
from mega.backbones.blazepose_file import DEFAULT_PATH
from mega.backbones.feature_cache import FrozenFeatureDataset

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


class Crops(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.img = torch.randn(n, 3, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.img)

    def __getitem__(self, i: int) -> dict:
        return {"img": self.img[i], "index": i, "betas": torch.full((10,), float(i))}


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("tiny_cnn", {"input_size": 32, "widths": [8, 16], "depths": [1], "pyramid_scales": [2, 1], "pyramid_dim": 8}),
     ("blazepose", {"source": str(REPO / DEFAULT_PATH)})],
)  # fmt: skip
def test_cached_outputs_equal_an_uncached_forward(name, kwargs):
    bb = build_backbone(name, freeze=True, **kwargs).eval()
    data = Crops(5, bb.input_size)
    cached = FrozenFeatureDataset(data, bb, batch_size=2, progress=False)
    assert len(cached) == 5 and cached[3]["img"].numel() == 0 and cached[3]["index"] == 3
    torch.testing.assert_close(cached[4]["betas"], torch.full((10,), 4.0))
    batch = torch.utils.data.default_collate([cached[i] for i in (1, 4)])
    with torch.no_grad():
        got = bb.from_frozen(batch["frozen"])
        want = bb(data.img[[1, 4]])
    torch.testing.assert_close(got.tokens, want.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooled, want.pooled, atol=1e-5, rtol=1e-5)
    for a, b in zip(got.pyramid, want.pyramid, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_trainable_trunk_is_refused():
    bb = build_backbone("tiny_cnn", input_size=32, widths=[8, 16], depths=[1], freeze=False)
    with pytest.raises(ValueError, match="frozen backbone"):
        FrozenFeatureDataset(Crops(2, 32), bb)


class EpochCrops(Crops):
    """Crops that change with the epoch, like an augmented dataset."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        return {**super().__getitem__(i), "img": self.img[i] + self.epoch}


def test_views_hold_each_epochs_crops_in_order():
    bb = build_backbone("tiny_cnn", input_size=32, widths=[8, 16], depths=[1], freeze=True).eval()
    data = EpochCrops(3, 32)
    cached = FrozenFeatureDataset(data, bb, batch_size=2, views=2, progress=False)
    assert len(cached) == 6 and [cached[i]["index"] for i in range(6)] == [0, 1, 2, 0, 1, 2]
    with torch.no_grad():
        want = bb.frozen_outputs(data.img[[1]] + 1.0)["fmap"]  # view 1 = epoch 1
    torch.testing.assert_close(cached[4]["frozen"]["fmap"][None], want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="feature_cache_views"):
        FrozenFeatureDataset(Crops(2, 32), bb, views=2)
