"""The convolutional mesh tokenizer: hierarchy, convolutions, checkpoints, old MLP checkpoints, locality."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from omegaconf import OmegaConf
from scipy.sparse.csgraph import connected_components

import mega.tokenizers.mesh_vqvae as mesh_vqvae_module
from mega.body.rotations import axis_angle_to_matrix
from mega.tokenizers import (
    CHECKPOINT_FORMAT,
    MeshConvVQVAE,
    MeshMLP,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
)
from mega.tokenizers import _hash as checkpoint_hash
from mega.tokenizers.locality import area90, token_locality
from mega.tokenizers.mesh_conv import LevelOps, SpiralConv, VertexConv, pool, unpool
from mega.tokenizers.mesh_hierarchy import build_hierarchy, level_sizes, vertex_areas
from mega.tokenizers.mesh_sparse import SparsePattern, sparse_matmul
from mega.tokenizers.mesh_vqvae import canonical_mesh

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"
TINY = dict(num_tokens=54, codebook_size=16, code_dim=3, base_channels=4, hidden_dim=8)


def _poses(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "body_pose": torch.randn(n, 23, 3, generator=g) * 0.3,
        "betas": torch.randn(n, 10, generator=g) * 0.5,
    }


def _meshes(body, batch):
    with torch.no_grad():
        return canonical_mesh(body, axis_angle_to_matrix(batch["body_pose"]), batch["betas"])[0]


def _tiny_conv(body, seed: int = 0, **kw) -> MeshConvVQVAE:
    torch.manual_seed(seed)
    tok = build_tokenizer("mesh_conv", num_vertices=body.num_vertices, **{**TINY, **kw})
    tok.attach(body)
    return tok


@pytest.fixture(scope="module")
def free_hierarchy(free_body):
    return build_hierarchy(
        free_body.v_template, free_body.faces, level_sizes(free_body.num_vertices, 54, 3.0)
    )


# ---------------------------------------------------------------------- hierarchy
def test_level_sizes_known_answers():
    assert level_sizes(1229, 54, 3.0) == [1229, 434, 153, 54]
    sizes = level_sizes(6890, 54, 3.0)
    assert sizes[0] == 6890 and sizes[-1] == 54 and len(sizes) == 6
    assert all(a / b <= 3.0 + 1e-9 and a > b for a, b in zip(sizes, sizes[1:]))
    with pytest.raises(ValueError, match="num_latent"):
        level_sizes(50, 54, 3.0)


def _regions_connected(faces: np.ndarray, regions: np.ndarray) -> bool:
    n = len(regions)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = e[regions[e[:, 0]] == regions[e[:, 1]]]  # edges inside one region
    graph = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    count, _ = connected_components(graph, directed=False)
    return count == regions.max() + 1  # one component per region


def test_free_body_hierarchy_is_a_deterministic_partition_into_connected_regions(free_body, free_hierarchy):
    h = free_hierarchy
    regions = h.regions().numpy()
    assert h.sizes == [1229, 434, 153, 54] and regions.shape == (1229,)
    assert np.bincount(regions, minlength=54).min() >= 1
    assert _regions_connected(free_body.faces.numpy(), regions)
    total = vertex_areas(free_body.v_template.double().numpy(), free_body.faces.numpy()).sum()
    assert math.isclose(float(h.region_areas().sum()), total, rel_tol=1e-5)
    for level, n in enumerate(h.sizes):
        nb = h.neighbours[level]
        assert nb.shape == (n, 9) and torch.equal(nb[:, 0], torch.arange(n)) and int(nb.max()) < n
    again = build_hierarchy(free_body.v_template, free_body.faces, h.sizes)
    assert torch.equal(again.regions(), h.regions()) and torch.equal(again.neighbours[1], h.neighbours[1])


def test_hierarchy_on_an_smpl_sized_mesh(smpl_body):
    sizes = level_sizes(smpl_body.num_vertices, 54, 3.0)
    h = build_hierarchy(smpl_body.v_template, smpl_body.faces, sizes, up_neighbours=3)
    regions = h.regions().numpy()
    assert regions.shape == (6890,) and np.bincount(regions, minlength=54).min() >= 1
    assert _regions_connected(smpl_body.faces.numpy(), regions)
    for w in h.up_weight:
        torch.testing.assert_close(w.sum(1), torch.ones(w.shape[0]))
        assert (w[:, 0] > 0).all()  # own region always takes part


# ---------------------------------------------------------------------- operators
def test_convolutions_match_a_per_vertex_loop():
    g = torch.Generator().manual_seed(0)
    n, k = 7, 3
    nb = torch.randint(0, n, (n, k), generator=g)
    ops = LevelOps(nb)
    for c_in, c_out in ((4, 5), (5, 4)):  # both product orders (gather-first, weight-first)
        x = torch.randn(2, n, c_in, generator=g)
        vc, spiral = VertexConv(n, k, c_in, c_out, num_basis=2), SpiralConv(k, c_in, c_out)
        w = vc.weight.reshape(2, c_in, c_out)
        y_vc, y_sp = (
            vc(x.transpose(0, 1), ops).transpose(0, 1),
            spiral(x.transpose(0, 1), ops).transpose(0, 1),
        )
        for i in range(n):
            mixed = torch.einsum("bkc,km->bmc", x[:, nb[i]], vc.coeff[i])
            ref = sum(mixed[:, m] @ w[m] for m in range(2)) + vc.bias
            torch.testing.assert_close(y_vc[:, i], ref)
            ref_s = x[:, nb[i]].reshape(2, -1) @ spiral.linear.weight.T + spiral.linear.bias
            torch.testing.assert_close(y_sp[:, i], ref_s)


def test_learned_pooling_tables(free_body):
    """Each coarse vertex reads its own region's members first (nearest first), then neighbours; each
    vertex un-pools from its own region first; a learned pooling of a constant field is that constant."""
    tok = _tiny_conv(free_body, layout="plain", conv="vc", pool_widths=[12, 12, 12], unpool_widths=[4, 4, 4])
    h, ops = tok.hierarchy, tok._ops()
    for level in range(h.num_levels):
        index, valid, _ = ops[level].learned_table("down", 12)
        a, pos, centre = h.assign[level], h.positions[level], h.positions[level + 1]
        for r in range(0, h.sizes[level + 1], 7):
            row = index[r][valid[r]]
            own = a[row] == r
            members = int((a == r).sum())
            assert own[: min(members, 12)].all() and int(own.sum()) == min(members, 12)
            d = (pos[row[own]] - centre[r]).norm(dim=1)
            assert (d[1:] >= d[:-1] - 1e-6).all()  # nearest first
        up, up_valid, _ = ops[level].learned_table("up", 4)
        assert torch.equal(up[:, 0], a) and up_valid[:, 0].all()
    x = torch.full((free_body.num_vertices, 2, 3), 5.0)
    torch.testing.assert_close(
        pool(x, ops[0], torch.rand(h.sizes[1], 12) + 0.1), torch.full((h.sizes[1], 2, 3), 5.0)
    )


def test_pool_and_unpool():
    assign = torch.tensor([0, 0, 1, 1, 1])
    ops = LevelOps(
        torch.zeros(5, 1, dtype=torch.long),
        assign,
        torch.tensor([1.0, 3.0, 1.0, 1.0, 2.0]),
        up_index=assign[:, None],
        up_weight=torch.ones(5, 1),
        n_next=2,
    )
    x = torch.tensor([[[4.0], [0.0], [1.0], [1.0], [4.0]]]).transpose(0, 1)  # vertex-major (5, 1, 1)
    torch.testing.assert_close(pool(x, ops), torch.tensor([[[1.0], [2.5]]]).transpose(0, 1))  # area means
    torch.testing.assert_close(
        unpool(torch.tensor([[[7.0]], [[9.0]]]), ops),
        torch.tensor([[[7.0], [7.0], [9.0], [9.0], [9.0]]]).transpose(0, 1),
    )


def test_sparse_matmul_gradients_and_repeated_entries():
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.randint(0, 6, (40,), generator=g), torch.randint(0, 5, (40,), generator=g)
    pattern = SparsePattern(rows, cols, (6, 5))
    entries = torch.randn(40, dtype=torch.float64, generator=g).requires_grad_()
    dense = torch.randn(5, 3, dtype=torch.float64, generator=g).requires_grad_()
    ref = torch.zeros(6, 5, dtype=torch.float64).index_put((rows, cols), entries.detach(), accumulate=True)
    torch.testing.assert_close(sparse_matmul(pattern, pattern.values(entries), dense), ref @ dense)
    assert torch.autograd.gradcheck(
        lambda e, d: sparse_matmul(pattern, pattern.values(e), d), (entries, dense)
    )


# The gather formulation the sparse operators replaced ((B, n, C) layout, one gather per call): an
# independent computation of the same maps, to compare with on random inputs.
def _gather_conv(conv, x: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    g = x.index_select(1, nb.reshape(-1)).reshape(x.shape[0], *nb.shape, x.shape[2])
    if isinstance(conv, SpiralConv):
        return conv.linear(g.flatten(2))
    return torch.einsum("bnkc,nkm->bnmc", g, conv.coeff).flatten(2) @ conv.weight + conv.bias


def _learned_mix(x, ops, kind, weight):
    """Learned pooling by gathering each row's table entries: (B, n_in, C) -> (B, rows, C)."""
    index, valid, _ = ops.learned_table(kind, weight.shape[1])
    w = weight.abs() * valid
    w = w / (w.sum(1, keepdim=True) + 1e-8)
    return (x[:, index] * w[None, :, :, None]).sum(2)


def _gather_pool(x, h, level, tok=None):
    if tok is not None and len(tok.encoder.pool_weights):
        return _learned_mix(x, tok._ops()[level], "down", tok.encoder.pool_weights[level])
    w = h.area[level].float() + 1e-12
    mass = torch.zeros(h.sizes[level + 1]).index_add_(0, h.assign[level], w)
    out = x.new_zeros(x.shape[0], h.sizes[level + 1], x.shape[2])
    return out.index_add_(1, h.assign[level], x * (w / mass[h.assign[level]])[None, :, None])


def _gather_unpool(x, h, level, tok=None):
    if tok is not None and len(tok.decoder.unpool_weights):
        return _learned_mix(x, tok._ops()[level], "up", tok.decoder.unpool_weights[level])
    idx, wt = h.up_index[level], h.up_weight[level]
    return (
        x.index_select(1, idx.reshape(-1)).reshape(x.shape[0], *idx.shape, x.shape[2]) * wt[None, :, :, None]
    ).sum(2)


def _gather_block(block, x, nb):
    hid = _gather_conv(block.conv1, torch.nn.functional.elu(x), nb)
    return block.skip(x) + _gather_conv(block.conv2, torch.nn.functional.elu(hid), nb)


def _gather_encode(tok, x, h):
    enc = tok.encoder
    elu = torch.nn.functional.elu
    if enc.layout == "plain":
        for level, conv in enumerate(enc.convs):
            x = elu(
                _gather_conv(conv, _gather_pool(x, h, level - 1, tok) if level else x, h.neighbours[level])
            )
        return x
    x = enc.inp(x)
    for level, blocks in enumerate(enc.levels):
        x = _gather_pool(x, h, level - 1, tok) if level else x
        for block in blocks:
            x = _gather_block(block, x, h.neighbours[level])
    return enc.out(elu(x))


def _gather_decode(tok, z, h):
    dec = tok.decoder
    elu, top = torch.nn.functional.elu, len(h.sizes) - 1
    if dec.layout == "plain":
        for i, conv in enumerate(dec.convs):
            level = top - i
            z = _gather_conv(conv, _gather_unpool(z, h, level, tok) if i else z, h.neighbours[level])
            z = elu(z) if level else z
        return z
    z = dec.inp(z)
    for block in dec.latent:
        z = _gather_block(block, z, h.neighbours[-1])
    for i, blocks in enumerate(dec.levels):
        level = top - 1 - i
        z = _gather_unpool(z, h, level, tok)
        z = z + (dec.vertex_embed if level == 0 else (dec.level_embed[i] if len(dec.level_embed) else 0))
        for block in blocks:
            z = _gather_block(block, z, h.neighbours[level])
    return dec.out(elu(z))


@pytest.mark.parametrize(
    "kw",
    [
        dict(conv="vc", base_channels=4, hidden_dim=8, latent_blocks=1, level_embed=True, up_neighbours=3),
        dict(conv="spiral", base_channels=8, hidden_dim=4, num_neighbours=5),  # channels shrink: weight-first
        dict(conv="vc", layout="plain", level_sizes=[400, 120], num_neighbours=[10, 21, 26, 19]),
        dict(
            conv="vc",
            layout="plain",
            level_sizes=[400, 120],
            pool_widths=[8, 12, 20],
            unpool_widths=[3, 4, 3],
        ),
    ],
)
def test_sparse_encoder_decoder_match_the_gather_formulation(free_body, one_thread, kw):
    """Same outputs and gradients as the per-call gather formulation, on random inputs and weights."""
    torch.manual_seed(0)
    tok = build_tokenizer("mesh_conv", num_vertices=free_body.num_vertices, **{**TINY, **kw})
    tok.attach(free_body)
    for p in tok.decoder.parameters():  # the zero-initialised output layer would hide the decoder
        torch.nn.init.normal_(p, std=0.3)
    for p in tok.encoder.pool_weights:  # learned pooling starts at 1: make the rows uneven
        torch.nn.init.uniform_(p, 0.1, 1.0)
    h = tok.hierarchy
    x = torch.randn(3, free_body.num_vertices, 3)
    z = torch.randn(3, 54, TINY["code_dim"])
    new_z, ref_z = tok._encode(x), _gather_encode(tok, x, h)
    torch.testing.assert_close(new_z, ref_z, rtol=1e-4, atol=1e-5 * float(ref_z.detach().abs().max()))
    new_x, ref_x = tok._decode(z), _gather_decode(tok, z, h)
    torch.testing.assert_close(new_x, ref_x, rtol=1e-4, atol=1e-5 * float(ref_x.detach().abs().max()))
    # gradients of every weight (a tokenizer's training) through both paths
    g_new = torch.autograd.grad(
        (new_z.square().sum() + new_x.square().sum()), list(tok.parameters()), allow_unused=True
    )
    g_ref = torch.autograd.grad(
        (ref_z.square().sum() + ref_x.square().sum()), list(tok.parameters()), allow_unused=True
    )
    for (name, _), a, b in zip(tok.named_parameters(), g_new, g_ref):
        if b is not None:
            torch.testing.assert_close(
                a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()), msg=lambda m, name=name: f"{name}: {m}"
            )
    # one mesh at a time gives the same as the batch
    torch.testing.assert_close(tok._decode(z[1:2])[0], new_x[1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("body_name", ["free_body", "smpl_body"])
def test_conv_tokenizer_shapes_on_both_topologies(request, body_name, one_thread):
    body = request.getfixturevalue(body_name)
    tok = _tiny_conv(body, base_channels=2, hidden_dim=4)
    x = _meshes(body, _poses(2))
    x_hat, ids, aux = tok.train()(x)
    assert x_hat.shape == x.shape and ids.shape == (2, 54) and set(aux) >= {"commit_loss", "usage"}
    assert tok.eval().decode(tok.encode(x)).shape == (2, body.num_vertices, 3)
    with pytest.raises(ValueError, match=str(body.num_vertices)):
        tok.encode(torch.zeros(1, body.num_vertices + 1, 3))


def test_paper_preset_has_mesh_vq_vae_layout_and_size():
    """configs/tokenizer/mesh_conv.yaml on SMPL's 6890 vertices: Mesh-VQ-VAE's levels, widths and count."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "mesh_conv.yaml"))
    tok = build_tokenizer(**{**cfg, "num_vertices": 6890})
    assert tok.sizes == [6890, 1925, 400, 54]
    # Zhou et al.'s convolution: n K M coefficients + M C_in C_out weights + C_out biases, per convolution
    ks, m = [10, 21, 26, 19], 9
    enc = [(3, 32), (32, 64), (64, 128), (128, 9)]
    dec = [(9, 128), (128, 64), (64, 32), (32, 3)]  # levels 3, 2, 1, 0
    expected = sum(n * k * m + m * a * b + b for n, k, (a, b) in zip(tok.sizes, ks, enc))
    expected += sum(n * k * m + m * a * b + b for n, k, (a, b) in zip(tok.sizes[::-1], ks[::-1], dec))
    expected += 1925 * 32 + 400 * 56 + 54 * 66 + 6890 * 11 + 1925 * 14 + 400 * 11  # learned (un)pooling
    count = sum(p.numel() for p in tok.parameters())
    assert count == expected == 2_575_466  # Mesh-VQ-VAE's count on SMPL
    with pytest.raises(ValueError, match="level_sizes"):
        build_tokenizer(**{**cfg, "num_vertices": 1229})


def test_no_hierarchy_is_a_clear_error(free_body):
    tok = build_tokenizer("mesh_conv", num_vertices=free_body.num_vertices, **TINY)
    with pytest.raises(RuntimeError, match="attach"):
        tok.decode(torch.zeros(1, 54, dtype=torch.long))


def test_conv_tokenizer_learns(free_body, one_thread):
    tok = _tiny_conv(free_body).train()
    batch = _poses(8)
    opt = torch.optim.Adam(tok.parameters(), lr=1e-2)
    pve = []
    for _ in range(30):
        loss, logs = tok.loss(batch, free_body)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pve.append(logs["pve_mm"])
    assert sum(pve[-5:]) / 5 < 0.85 * pve[0], pve  # a broken gradient path stays at ~1.0


def test_checkpoint_carries_the_hierarchy(free_body, smpl_body, tmp_path, monkeypatch, one_thread):
    tok = _tiny_conv(free_body).train()
    tok.loss(_poses(4), free_body)  # stats and codebook from data
    save_tokenizer(tmp_path / "tok.pt", tok)
    monkeypatch.setattr(mesh_vqvae_module, "build_hierarchy", lambda *a, **k: pytest.fail("rebuilt"))
    loaded = load_tokenizer(tmp_path / "tok.pt")  # no body given: the hierarchy comes from the file
    assert isinstance(loaded, MeshConvVQVAE) and torch.equal(loaded.regions(), tok.regions())
    ids = torch.randint(0, 16, (2, 54), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.decode(ids), tok.eval().decode(ids))
    loaded.attach(free_body)  # same topology: nothing rebuilt (build_hierarchy would fail the test)
    other = build_tokenizer("mesh_conv", num_vertices=free_body.num_vertices, **TINY)
    other.load_state_dict(loaded.state_dict())  # e.g. the engine's resume
    torch.testing.assert_close(other.decode(ids), loaded.decode(ids))
    with pytest.raises(ValueError, match="num_vertices"):
        loaded.attach(smpl_body)


def test_trained_tokenizer_refuses_another_topology(free_body):
    tok = _tiny_conv(free_body).train()
    tok.loss(_poses(2), free_body)
    faces = free_body.faces.clone()
    faces[0] = faces[0].flip(0)
    with pytest.raises(ValueError, match="another mesh topology"):
        tok.set_template(free_body.v_template, faces)


def test_registry_names_and_old_mlp_checkpoints(free_body, tmp_path):
    # mesh_vqvae is the default variant (the MLP today); a checkpoint records the variant's own name
    assert isinstance(build_tokenizer("mesh_vqvae", num_vertices=10, num_tokens=2, hidden_dim=8), MeshMLP)
    assert MeshConvVQVAE.registry_name == "mesh_conv" and MeshMLP.registry_name == "mesh_mlp"
    old_kwargs = dict(
        num_vertices=free_body.num_vertices,
        num_tokens=6,
        codebook_size=8,
        code_dim=3,
        hidden_dim=16,
        num_blocks=1,
        commitment_weight=0.25,
        decay=0.99,
        dead_after=200,
        usage_window=200,
        seed=0,
    )  # fmt: skip  (the kwargs of the MLP named mesh_vqvae)
    state = {k: v.clone() for k, v in MeshMLP(**old_kwargs).state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "name": "mesh_vqvae",
        "kwargs": old_kwargs,
        "state_dict": state,
        "sha256": checkpoint_hash("mesh_vqvae", old_kwargs, state),
    }
    torch.save(payload, tmp_path / "old.pt")
    tok = load_tokenizer(tmp_path / "old.pt")
    assert isinstance(tok, MeshMLP) and tok.registry_name == "mesh_mlp" and tok.num_tokens == 6


# ---------------------------------------------------------------------- locality
def test_area90_known_answer():
    disp = torch.tensor([[10.0, 0.0, 0.0, 0.0]])
    assert float(area90(disp, torch.tensor([1.0, 1.0, 1.0, 1.0]))) == pytest.approx(0.25)
    assert float(area90(torch.ones(1, 4), torch.ones(4))) == pytest.approx(1.0)


def test_conv_tokens_move_their_own_region_the_mlp_does_not(free_body, free_hierarchy, one_thread):
    """Loose check at random weights: the architecture alone keeps a token's change near its region.

    (Trained tokenizers: tools/tokenizer_locality.py.)
    """
    g = torch.Generator().manual_seed(0)
    meshes = _meshes(free_body, _poses(3))
    conv = _tiny_conv(free_body)
    mlp = MeshMLP(
        free_body.num_vertices, num_tokens=54, codebook_size=16, code_dim=3, hidden_dim=32, num_blocks=1
    )
    for tok in (conv, mlp):
        tok.quantizer.load_codebook(torch.randn(16, 3, generator=g))
        torch.nn.init.normal_(tok.decoder[-1].weight if tok is mlp else tok.decoder.out.weight, std=0.05)
        tok.eval()
    area = free_hierarchy.area[0]
    c = token_locality(conv, meshes, conv.regions(), area, torch.Generator().manual_seed(1))
    m = token_locality(
        mlp, meshes, free_hierarchy.regions(), area, torch.Generator().manual_seed(1), own_regions=False
    )
    assert c["in_region"] > 0.2 and c["in_region"] > 4 * m["in_region"]
    assert c["area90"] < 0.5 * m["area90"]
    assert 0 < c["region_share"] < 0.1
