"""The BlazePose backbone: the PyTorch port against LiteRT's outputs on the same file, the converter's
TF semantics, the backbone contract, and the model file's fetch and errors.

The model file is the real one (``make weights``, a prerequisite of ``make test``); the LiteRT outputs
are a fixture written by tools/blazepose_reference.py.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mega.backbones import build_backbone
from mega.backbones.blazepose import IMAGENET_MEAN, IMAGENET_STD, BlazePose
from mega.backbones.blazepose_file import (
    DEFAULT_PATH,
    MEMBER_SHA256,
    ModelFileCorrupt,
    ModelFileMissing,
    extract_member,
    require_model_file,
    sha256,
)
from mega.backbones.tflite_graph import TFLiteFormatError, read_tflite
from mega.backbones.tflite_net import CHUNK, TFLiteNet, same_padding
from mega.backbones.tflite_plan import fused_path_available

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / DEFAULT_PATH
FIXTURE = Path(__file__).parent / "fixtures" / "blazepose_litert.npz"
OUTPUTS = {"landmarks": "Identity", "presence": "Identity_1", "segmentation": "Identity_2", "heatmap": "Identity_3",
           "world": "Identity_4"}  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def graph():
    return read_tflite(require_model_file(MODEL))


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def test_model_file_is_the_pinned_one():
    assert sha256(require_model_file(MODEL)) == MEMBER_SHA256


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "want"),
    [(256, 3, 2, (0, 1)), (255, 3, 2, (1, 1)), (64, 5, 1, (2, 2)), (8, 1, 1, (0, 0)), (7, 2, 2, (0, 1))],
)
def test_same_padding_puts_the_odd_pixel_after(size, kernel, stride, want):
    assert same_padding(size, kernel, stride) == want
    before, after = want
    assert -(-size // stride) == (size + before + after - kernel) // stride + 1  # TF: ceil(n / s) outputs


def test_graph_has_the_published_structure(graph):
    kinds = [op.kind for op in graph.ops]
    assert (kinds.count("CONV_2D"), kinds.count("DEPTHWISE_CONV_2D"), kinds.count("ADD")) == (58, 38, 28)
    assert "DEQUANTIZE" not in kinds and graph.shapes[graph.inputs[0]] == (1, 256, 256, 3)
    assert [graph.shapes[t] for t in graph.outputs] == [
        (1, 195),
        (1, 1),
        (1, 256, 256, 1),
        (1, 64, 64, 39),
        (1, 117),
    ]
    net = TFLiteNet(graph, graph.outputs)
    assert sum(p.numel() for p in net.parameters()) == 3_169_489
    assert all(k.startswith(("conv", "dwconv")) for k in net.convs)


def test_port_matches_litert_on_every_output(graph, reference):
    net = TFLiteNet(graph, [graph.output_id(n) for n in OUTPUTS.values()]).eval()
    x = torch.from_numpy(reference["images"]).float().div(255.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = net(x)
    got = {k: out[graph.output_id(n)] for k, n in OUTPUTS.items()}
    lm = got["landmarks"].numpy()
    np.testing.assert_allclose(lm, reference["landmarks"], atol=2e-2, rtol=0)  # input pixels (0..256)
    np.testing.assert_allclose(got["world"].numpy(), reference["world"], atol=2e-4, rtol=0)  # metres
    np.testing.assert_allclose(got["presence"].numpy(), reference["presence"], atol=1e-4, rtol=0)
    heat = got["heatmap"].permute(0, 2, 3, 1)[:, ::4, ::4].numpy()
    np.testing.assert_allclose(
        heat, reference["heatmap"], atol=2e-3 * np.abs(reference["heatmap"]).max(), rtol=0
    )
    seg = got["segmentation"][:, 0, ::8, ::8].numpy()
    np.testing.assert_allclose(
        seg, reference["segmentation"], atol=1e-3 * np.abs(reference["segmentation"]).max(), rtol=0
    )
    # the fixture's people are found (so the comparison covers a working network, not noise)
    assert float(reference["presence"].min()) > 0.5


#: fused (oneDNN) against reference path, per graph output: the LiteRT fixture's tolerances (absolute,
#: or times the largest reference value for the two dense maps)
FUSED_ATOL = {"landmarks": 2e-2, "world": 2e-4, "presence": 1e-4}
FUSED_RELATIVE_TO_MAX = {"heatmap": 2e-3, "segmentation": 1e-3}


def test_fused_path_equals_the_reference_path_on_random_inputs(graph):
    assert fused_path_available()  # the pinned torch has oneDNN: the fast path is what users run
    net = TFLiteNet(graph, [graph.output_id(n) for n in OUTPUTS.values()]).eval()
    g = torch.Generator().manual_seed(0)
    # a batch of CHUNK + 2 runs in two chunks; one image is far outside [0, 1] (larger activations)
    x = torch.rand(CHUNK + 2, 3, 256, 256, generator=g)
    x[-1] = x[-1] * 4 - 2
    with torch.no_grad():
        ref, fused = net(x, fused=False), net(x)
    assert (None, None) in net._plans  # no_grad chose the fused path
    for k, n in OUTPUTS.items():
        t = graph.output_id(n)
        assert fused[t].shape == ref[t].shape
        atol = FUSED_ATOL.get(k) or FUSED_RELATIVE_TO_MAX[k] * float(ref[t].abs().max())
        torch.testing.assert_close(fused[t], ref[t], atol=atol, rtol=0, msg=k)
    # 24 of the 28 ADDs run inside their convolution's kernel (one step fewer each); the 4 left are the
    # decoder's upsampled map + a ReLU6 convolution (oneDNN takes no sum after the activation)
    kinds = [k for k, _, _ in net.program]
    assert len(kinds) - len(net._plans[None, None].steps) == kinds.count("ADD") - 4 == 24


def test_fused_path_follows_weight_changes_and_copies(graph):
    import copy

    net = TFLiteNet(graph, [graph.output_id("Identity_4")]).eval()
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    t = graph.output_id("Identity_4")
    with torch.no_grad():
        before = net(x)[t]
        conv = net.convs["conv30"]
        conv.weight.mul_(0.5)  # in place, as an optimiser step or load_state_dict does
        after, ref = net(x)[t], net(x, fused=False)[t]
        torch.testing.assert_close(after, ref, atol=2e-4, rtol=1e-4)
        assert (after - before).abs().max() > 1e-2
        twin = copy.deepcopy(net)  # the packed plan is not copied; the twin builds its own
        torch.testing.assert_close(twin(x)[t], after, atol=0, rtol=0)
        conv.weight.mul_(2.0)
        assert not torch.equal(twin(x)[t], net(x)[t])


def test_a_batch_over_several_threads_runs_on_worker_threads_and_equals_one_thread(graph):
    import threading

    net = TFLiteNet(graph, [graph.output_id("Identity"), graph.output_id("Identity_4")]).eval()
    x = torch.rand(2 * CHUNK + 2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        one = net(x)  # one thread (the fixture): chunks of CHUNK in a row
        torch.set_num_threads(2)
        try:
            two = net(x)  # the same chunks, taken by two worker threads
            threads_after = torch.get_num_threads()
        finally:
            torch.set_num_threads(1)
    assert threads_after == 2
    assert any(t.name.startswith("tflite-plan") for t in threading.enumerate())
    for t in one:
        assert torch.equal(one[t], two[t])


def test_flop_formulas_count_the_fused_path_like_the_reference(graph):
    from torch.utils.flop_counter import FlopCounterMode

    from mega.backbones.tflite_plan import FLOP_FORMULAS

    net = TFLiteNet(graph, [graph.output_id("Identity"), graph.output_id("Identity_4")]).eval()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fused:
        net(x)
    with torch.no_grad(), FlopCounterMode(display=False) as ref:
        net(x, fused=False)
    # the same within the tiny depthwise kernels that run as elementwise products (not counted)
    assert 0 < ref.get_total_flops() - fused.get_total_flops() < 1e-3 * ref.get_total_flops()


def test_trainable_convolutions_take_the_autograd_path():
    bb = build_backbone("blazepose", source=str(MODEL), freeze=False, trainable_blocks=2)
    x = torch.rand(1, 3, 256, 256)
    out = bb(x)
    assert out.world.requires_grad and (bb.cut, None) not in bb.net._plans
    out.world.sum().backward()
    # the last two convolutions are the world-landmark and presence heads: only the first gets a gradient
    assert {n.split(".")[1] for n, p in bb.net.named_parameters() if p.grad is not None} == {"conv44"}


def test_backbone_contract_and_normalisation(reference):
    bb = build_backbone("blazepose", source=str(MODEL)).eval()
    assert isinstance(bb, BlazePose) and (bb.dim, bb.num_tokens, bb.token_grid) == (144, 103, (8, 8))
    raw = torch.from_numpy(reference["images"][:2]).float().div(255.0).permute(0, 3, 1, 2)
    img = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = bb(img)
    assert out.tokens.shape == (2, 103, 144) and out.pooled.shape == (2, 144) and out.pyramid == []
    torch.testing.assert_close(out.pooled, out.tokens[:, :64].mean(1))
    # ImageNet normalisation is undone inside: the landmarks are LiteRT's on the raw [0, 1] crop
    np.testing.assert_allclose(
        out.landmarks.reshape(2, -1).numpy(), reference["landmarks"][:2], atol=2e-2, rtol=0
    )
    np.testing.assert_allclose(out.world.reshape(2, -1).numpy(), reference["world"][:2], atol=2e-4, rtol=0)
    with pytest.raises(ValueError, match="expects images"):
        bb(torch.zeros(1, 3, 128, 128))


def test_frozen_trunk_gets_no_gradient_and_the_landmark_embedding_trains():
    bb = build_backbone("blazepose", source=str(MODEL))
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("landmark_embed.") for n in trainable) and bb.trunk_frozen
    out = bb(torch.randn(1, 3, 256, 256))
    out.tokens.sum().backward()
    assert all(p.grad is None for n, p in bb.named_parameters() if n.startswith("net."))
    assert bb.landmark_embed.proj.weight.grad is not None
    tuned = build_backbone(
        "blazepose", source=str(MODEL), freeze=False, trainable_blocks=3, landmark_tokens=False
    )
    names = [n for n, p in tuned.named_parameters() if p.requires_grad and n.startswith("net.")]
    last = list(tuned.net.convs)[-3:]
    assert sorted({n.split(".")[2] for n in names}) == sorted(last) and tuned.num_tokens == 64


def test_state_dict_round_trip(tmp_path):
    bb = build_backbone("blazepose", source=str(MODEL), freeze=False)
    with torch.no_grad():
        next(iter(bb.net.convs.values())).bias.add_(1.0)
    torch.save(bb.state_dict(), tmp_path / "tuned.pt")
    again = build_backbone("blazepose", source=str(MODEL), weights=str(tmp_path / "tuned.pt"))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x).tokens, bb.eval()(x).tokens)


def test_missing_and_wrong_files_give_one_clear_error(tmp_path):
    with pytest.raises(ModelFileMissing, match="make weights"):
        build_backbone("blazepose", source=str(tmp_path / "nope.tflite"))
    (tmp_path / "text.tflite").write_text("not a model")
    with pytest.raises(TFLiteFormatError, match="text.tflite: not a TensorFlow Lite model"):
        read_tflite(tmp_path / "text.tflite")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("mediapipe/modules/pose_landmark/pose_landmark_full.tflite", b"TFL3 something else")
    (tmp_path / "fake.whl").write_bytes(buf.getvalue())
    with pytest.raises(ModelFileCorrupt, match="is not the pinned"):
        extract_member(tmp_path / "fake.whl", tmp_path / "out.tflite")
    assert not (tmp_path / "out.tflite").exists()
