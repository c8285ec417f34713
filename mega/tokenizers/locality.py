"""How local a mesh token is: change one token, decode, and see where the mesh moved.

For each token position t and each mesh: decode the mesh's ids, replace id t by another code
(drawn uniformly from the codes the meshes use), decode again, and take the per-vertex displacement
``d_i``. With vertex areas ``a_i`` (the surface each vertex stands for):

- ``in_region``: share of the area-weighted displacement ``sum a_i d_i`` that falls inside token t's
  region. For the convolutional tokenizer the region is its own (latent vertex t's); a tokenizer with
  no regions (the MLP) gets the *best* region of a reference partition (the same hierarchy built on
  the same template): a generous upper bound for it.
- ``area90``: the smallest share of the body's surface that holds 90 % of ``sum a_i d_i`` (vertices
  taken in decreasing ``d_i``): compactness that needs no partition at all.
- ``region_area``: the area of the region used (m^2) and its share of the body.

All three are averaged over tokens (and meshes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mega.tokenizers.base import Tokenizer


def area90(disp: Tensor, area: Tensor, share: float = 0.9) -> Tensor:
    """Smallest share of the surface holding ``share`` of the area-weighted displacement.

    Args:
        disp: (M, V) per-vertex displacement norms; area: (V,) vertex areas.
    Returns:
        (M,) fraction of the total area in [0, 1].
    """
    mass = disp * area
    order = disp.argsort(dim=1, descending=True)
    cum = mass.gather(1, order).cumsum(1) / mass.sum(1, keepdim=True).clamp_min(1e-30)
    cum_area = area[order].cumsum(1)
    k = (cum < share).sum(1).clamp(max=disp.shape[1] - 1)  # first index reaching the share
    return cum_area.gather(1, k[:, None])[:, 0] / area.sum()


@torch.no_grad()
def token_locality(
    tokenizer: Tokenizer,
    meshes: Tensor,
    regions: Tensor,
    vertex_area: Tensor,
    generator: torch.Generator,
    own_regions: bool = True,
) -> dict[str, object]:
    """Locality of each token of a mesh tokenizer (see the module docstring).

    Args:
        tokenizer: a mesh tokenizer (``encode``: (M, V, 3) -> (M, N); ``decode``: back).
        meshes: (M, V, 3) canonical meshes.
        regions: (V,) int64 region of each vertex in [0, R).
        vertex_area: (V,) area of each vertex (m^2).
        generator: draws the replacement codes.
        own_regions: token t's region is region t (R == N); False: the best region per token and mesh.
    Returns:
        dict with means ``in_region``, ``area90``, ``region_area_m2``, ``region_share`` and per-token
        lists ``per_token_in_region``, ``per_token_area90``, ``per_token_region_area_m2``.
    """
    tokenizer.eval()
    device = meshes.device
    regions, vertex_area = regions.to(device), vertex_area.to(device).float()
    num_regions = int(regions.max()) + 1
    if own_regions and num_regions != tokenizer.num_tokens:
        raise ValueError(
            f"own_regions needs one region per token: {num_regions} regions, {tokenizer.num_tokens} tokens"
        )
    region_area = torch.zeros(num_regions, device=device).index_add_(0, regions, vertex_area)
    onehot = torch.nn.functional.one_hot(regions, num_regions).float() * vertex_area[:, None]  # (V, R)
    ids = tokenizer.encode(meshes)
    base = tokenizer.decode(ids)
    used = ids.unique()
    if len(used) < 2:  # one code everywhere: draw from the whole codebook
        used = torch.arange(tokenizer.codebook_size, device=device)
    m = meshes.shape[0]
    per_in, per_a90, per_area = [], [], []
    for t in range(tokenizer.num_tokens):
        pick = torch.randint(0, len(used) - 1, (m,), generator=generator).to(device)
        current = ids[:, t]
        # the k-th used code other than the current one
        rank = (used[None, :] < current[:, None]).sum(1)
        new = used[pick + (pick >= rank).long()]
        changed = ids.clone()
        changed[:, t] = new
        disp = (tokenizer.decode(changed) - base).norm(dim=-1)  # (M, V)
        by_region = disp @ onehot  # (M, R) area-weighted displacement per region
        total = by_region.sum(1).clamp_min(1e-30)
        r = torch.full((m,), t, device=device) if own_regions else by_region.argmax(1)
        per_in.append(float((by_region.gather(1, r[:, None])[:, 0] / total).mean()))
        per_a90.append(float(area90(disp, vertex_area).mean()))
        per_area.append(float(region_area[r].mean()))
    total_area = float(vertex_area.sum())
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "in_region": mean(per_in),
        "area90": mean(per_a90),
        "region_area_m2": mean(per_area),
        "region_share": mean(per_area) / total_area,
        "body_area_m2": total_area,
        "own_regions": own_regions,
        "num_meshes": m,
        "per_token_in_region": per_in,
        "per_token_area90": per_a90,
        "per_token_region_area_m2": per_area,
    }
