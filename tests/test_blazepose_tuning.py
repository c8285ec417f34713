"""Fine-tuning the end of BlazePose on cached crops: the network split at a cut, the frozen side cached.

``trainable_blocks=N`` trains the last N convolutions; the network is split at the last tensor before
the first of them (:meth:`mega.backbones.tflite_net.TFLiteNet.cut_before`), ``frozen_outputs`` returns
that tensor (what :class:`mega.backbones.feature_cache.FrozenFeatureDataset` keeps) and ``from_frozen``
runs the rest with autograd. Checked here: the cut is one that separates the graph, the two sides
compose to the whole network, cached training crops give the uncached outputs and gradients, and only
the trainable side gets gradients.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mega.backbones import build_backbone
from mega.backbones.blazepose_file import DEFAULT_PATH
from mega.backbones.feature_cache import FrozenFeatureDataset

MODEL = Path(__file__).resolve().parents[1] / DEFAULT_PATH
pytestmark = pytest.mark.usefixtures("one_thread")


def blazepose(n: int | None) -> torch.nn.Module:
    torch.manual_seed(0)  # the same landmark embedding in every build
    return build_backbone("blazepose", source=str(MODEL), freeze=n is None, trainable_blocks=n)


@pytest.mark.parametrize(
    ("n", "shape"), [(29, (144, 8, 8)), (30, (144, 8, 8)), (40, (528, 16, 16)), (41, (88, 16, 16)), (60, (32, 32, 32)), (74, (3, 256, 256))]
)  # fmt: skip
def test_the_cut_is_the_last_tensor_that_separates_the_graph(n, shape):
    bb = blazepose(n)
    net = bb.net
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        cut = net(x, fused=False, part=(None, bb.cut))[bb.cut]
        assert tuple(cut.shape[1:]) == shape
        # the rest runs from the cut alone (the reference path would raise KeyError on any other tensor)
        rest = net(cut, fused=False, part=(bb.cut, None))
        whole = net(x, fused=False)
    for t in net.output_ids:
        torch.testing.assert_close(rest[t], whole[t], atol=1e-4, rtol=1e-4)
    # the last such tensor: running the rest from any later tensor before the first trainable convolution
    # needs some other, older tensor (brute force over the candidates)
    made = [op.outputs[0] for _, op, _ in net.program]
    first = next(i for i, (_, _, k) in enumerate(net.program) if k and net.convs[k].weight.requires_grad)
    start = made.index(bb.cut) + 1 if bb.cut in made else 0
    assert start <= first
    with torch.no_grad():
        for t in made[start:first]:
            value = net(x, fused=False, part=(None, t))[t]
            with pytest.raises(KeyError):
                net(value, fused=False, part=(t, None))


def test_a_frozen_network_has_no_cut_and_caches_its_outputs():
    bb = blazepose(None)
    assert (
        bb.cut is None
        and bb.cacheable
        and set(bb.frozen_outputs(torch.rand(1, 3, 256, 256))) == {"fmap", "landmarks", "world", "presence"}
    )


@pytest.mark.parametrize("n", [29, 41])
def test_cached_crops_give_the_uncached_outputs_and_gradients(n):
    frozen, tuned = blazepose(None).eval(), blazepose(n)
    x = torch.rand(3, 3, 256, 256) * 2 - 0.5
    with torch.no_grad():  # eval: both sides fused, the same numbers as the frozen network
        torch.testing.assert_close(tuned.eval()(x).tokens, frozen(x).tokens, atol=1e-4, rtol=1e-4)

    class Crops(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> dict:
            return {"img": x[i], "index": i}

    tuned.train()
    cached = FrozenFeatureDataset(Crops(), tuned, batch_size=2, progress=False)
    assert set(cached[0]["frozen"]) == {"cut"}
    batch = torch.utils.data.default_collate([cached[i] for i in range(3)])

    def grads(out) -> dict[str, torch.Tensor]:
        tuned.zero_grad(set_to_none=True)
        out.tokens.square().mean().backward()  # the tokens alone: what the HMR model reads
        return {k: p.grad.clone() for k, p in tuned.named_parameters() if p.grad is not None}

    via_cache, direct = grads(tuned.from_frozen(batch["frozen"])), grads(tuned(x))
    assert via_cache.keys() == direct.keys()
    for k in direct:
        torch.testing.assert_close(via_cache[k], direct[k], atol=1e-4, rtol=1e-3, msg=k)
    # exactly the last n convolutions but the presence flag's (no token reads it) train, and every
    # trainable parameter gets a gradient from the tokens (DDP refuses parameters that get none)
    presence = list(tuned.net.convs)[-1]
    assert tuned.net.program[-3][2] == presence and not tuned.net.convs[presence].weight.requires_grad
    trained = {k.split(".")[2] for k in direct if k.startswith("net.")}
    assert trained == set(list(tuned.net.convs)[-n:]) - {presence}
    assert set(direct) == {k for k, p in tuned.named_parameters() if p.requires_grad}


def test_weights_have_the_strides_of_their_gradients():
    """DDP's buckets take each weight's strides; a gradient with other strides is copied every step (with a
    warning). The channels-last convolutions give k x k kernels channels-last gradients and 1 x 1 kernels
    row-major ones: every trainable weight has its gradient's strides."""
    bb = blazepose(41)
    bb(torch.rand(2, 3, 256, 256)).tokens.square().mean().backward()
    checked = 0
    for key, conv in bb.net.convs.items():
        if conv.weight.grad is not None:
            assert conv.weight.stride() == conv.weight.grad.stride(), key
            checked += 1
    assert checked == 40  # the last 41 convolutions but the presence flag's
