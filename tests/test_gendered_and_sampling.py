"""Gendered bodies (each sample meshed with its gender's model) and MEGA's epoch (one random frame per
sequence): dispatch equals the single-gender models, the token cache uses the genders, frame picking is
uniform, covers every sequence once per epoch, and does not depend on the rank layout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mega.body import BodyModel, GenderedBody, load_body_model, sample_genders
from mega.body.gendered import gender_ids
from mega.data.motion.token_cache import FramePicker, SequenceTokenDataset, encode_motion, sequence_layout

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gendered(synthetic_smpl_dir):
    return load_body_model("smpl", path=synthetic_smpl_dir, gender="per_sequence")


@pytest.fixture(scope="module")
def singles(gendered):
    """The three single-gender models (the GenderedBody's own, checked to be what the loader gives)."""
    return {g: gendered.models[g] for g in ("neutral", "male", "female")}


def _pose(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 3, generator=g) * 0.3,
        torch.randn(n, 23, 3, generator=g) * 0.3,
        torch.randn(n, 10, generator=g),
    )


def test_each_sample_uses_its_genders_model(gendered, singles, synthetic_smpl_dir):
    assert (
        isinstance(gendered, GenderedBody) and gendered.num_vertices == 6890 and gendered.faces.shape[1] == 3
    )
    go, bp, betas = _pose(5)
    genders = ["male", "female", "neutral", "f", "male"]
    with sample_genders(gendered, genders):
        out = gendered(go, bp, betas)
    assert (
        gendered.models["male"].name == load_body_model("smpl", path=synthetic_smpl_dir, gender="male").name
    )
    for b, g in enumerate(["male", "female", "neutral", "female", "male"]):
        ref = singles[g](go[b : b + 1], bp[b : b + 1], betas[b : b + 1])
        torch.testing.assert_close(out.vertices[b], ref.vertices[0])
        torch.testing.assert_close(out.joints[b], ref.joints[0])
    neutral = gendered(go, bp, betas)  # outside the block: neutral for all
    male = singles["male"](go, bp, betas)
    assert (neutral.vertices - male.vertices).abs().max() > 1e-3  # the genders really differ
    with (
        pytest.raises(ValueError, match="3 genders for a batch of 5"),
        sample_genders(gendered, ["male"] * 3),
    ):
        gendered(go, bp, betas)
    with pytest.raises(ValueError, match="unknown gender"):
        gender_ids(["robot"])


def test_single_model_bodies_ignore_genders(free_body):
    go, bp, betas = _pose(2)
    with sample_genders(free_body, ["male", "female"]):
        out = free_body(go, bp, betas)
    torch.testing.assert_close(out.vertices, free_body(go, bp, betas).vertices)
    assert isinstance(load_body_model("free", gender="per_sequence"), BodyModel)


class _VertexCodes(nn.Module):
    """A stand-in tokenizer whose ids are quantised vertex coordinates (sensitive to the body model)."""

    num_tokens, codebook_size = 4, 10**6

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def inputs(self, batch, body):
        from mega.tokenizers.base import canonical_body

        with torch.no_grad():
            rot = torch.linalg.matrix_exp(torch.zeros(1, 3, 3)).expand(len(batch["body_pose"]), 23, 3, 3)
            return canonical_body(body, rot, batch["betas"]).vertices

    def encode(self, x):
        return (x[:, :4, 1] * 1e5).round().long()


def test_token_cache_meshes_each_frame_with_its_gender(gendered, singles):
    class Frames(torch.utils.data.Dataset):
        genders = ["male", "female", "female", "neutral", "male"]

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {
                "body_pose": torch.zeros(23, 3),
                "betas": torch.full((10,), 0.5),
                "gender": self.genders[i],
            }

    ids = encode_motion(_VertexCodes(), Frames(), gendered, batch_size=4, device="cpu")
    for i, g in enumerate(Frames.genders):
        single = singles[g]
        expected = _VertexCodes().encode(
            _VertexCodes().inputs(
                {"body_pose": torch.zeros(1, 23, 3), "betas": torch.full((1, 10), 0.5)}, single
            )
        )
        assert torch.equal(ids[i], expected[0]), g
    assert not torch.equal(ids[0], ids[1])


def _sequences() -> SequenceTokenDataset:
    lengths = torch.tensor([1, 5, 20, 3])
    starts = torch.cumsum(lengths, 0) - lengths
    ids = torch.arange(int(lengths.sum()))[:, None].repeat(1, 2)  # row r holds r: ids name their frame
    return SequenceTokenDataset(ids, starts, lengths)


def test_one_random_frame_per_sequence_uniform_and_layout_free():
    data = _sequences()
    assert len(data) == 4 and int(data[2]) == 2
    picker = FramePicker(data, seed=0)
    counts = torch.zeros(29)
    for _ in range(2000):
        rows = picker(torch.arange(4))[:, 0]
        assert (rows >= data.starts).all() and (
            rows < data.starts + data.lengths
        ).all()  # inside its sequence
        counts[rows] += 1
    third = counts[6:26]  # the 20-frame sequence: ~100 draws per frame
    assert third.min() > 55 and third.max() < 150 and counts[0] == 2000
    # Two ranks with the global batch split r::W pick exactly the frames one process picks.
    one = FramePicker(data, seed=3)
    ranks = [FramePicker(data, seed=3, rank=r, world_size=2) for r in (0, 1)]
    seq = torch.tensor([2, 1, 3, 2])
    full = one(seq)
    assert torch.equal(ranks[0](seq[0::2]), full[0::2]) and torch.equal(ranks[1](seq[1::2]), full[1::2])
    state = one.state_dict()
    after = one(seq)
    one.load_state_dict(state)
    assert torch.equal(one(seq), after)
    with pytest.raises(ValueError, match="ranges"):
        SequenceTokenDataset(data.ids, data.starts, data.lengths + 5)


def test_sequence_layout_of_a_motion_dataset(tmp_path):
    from mega.data.motion.dataset import synthetic_motion

    motion = synthetic_motion(
        split="val", root=tmp_path / "m", seed=0, sequences={"train": 1, "val": 3, "test": 1}
    )
    starts, lengths = sequence_layout(motion)
    assert len(starts) == len(motion.seq_names) == 3 and int(lengths.sum()) == len(motion)
    for s, (a, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
        assert (motion.tensors["seq_id"][a : a + n] == s).all()
    with pytest.raises(ValueError, match="seq_id"):
        sequence_layout(_sequences())


def test_paper_preset_means_megas_epoch():
    from hydra import compose, initialize_config_dir

    from mega.engine import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        paper = compose("pretrain", overrides=["experiment=pretrain_paper"])
        cpu = compose("pretrain")
        tok = compose("train_tokenizer", overrides=["experiment=pose_tokenizer_paper"])
    assert paper.sampling == "sequences" and paper.body_model.gender == "per_sequence"
    assert cpu.sampling == "frames" and tok.tokenizer.include_global_orient is True
    sys.path.insert(0, str(REPO / "scripts"))
    import pretrain

    class Logits(nn.Module):  # sees the ids the loss feeds it: they must be frames, not sequence indices
        mask_id, seen = 99, []

        def forward(self, ids, mask):
            self.seen.append(ids.clone())
            return torch.zeros(*ids.shape, 30, requires_grad=True)

    frames = FramePicker(_sequences(), seed=0)
    loss_fn = pretrain.masked_token_loss(pretrain.GlobalBatchMasks(0, "full"), 1, frames)
    model = Logits()
    loss, _ = loss_fn(model, torch.tensor([2, 2, 0]), None)
    assert torch.isfinite(loss) and model.seen[0].shape == (3, 2)  # (B,) sequences -> (B, L) ids
