"""Mesh hierarchy of a template: nested surface regions, level by level, down to N latent vertices.

Level 0 is the template mesh (V vertices); level l+1 groups level l's vertices into ``sizes[l+1]``
connected, compact surface regions. A region is grown on the level's graph (mesh edges weighted by
their template length): seeds by farthest-point sampling on the template, then two Lloyd rounds of
multi-source Dijkstra assignment (each vertex joins the geodesically nearest seed), so a region never
jumps across a gap between touching body parts. A level-(l+1) vertex sits at the area-weighted mean of
its region; two are joined when an edge of level l crosses between them. The last level has N
vertices: the N tokens, each standing for the union of the template vertices it contains (its
*region*, :meth:`MeshHierarchy.regions`).

Operators per level l (all sparse, stored as index/weight tables so that they travel in a state dict):

- down (n_l -> n_{l+1}): area-weighted mean over a region (``assign[l]``, ``area[l]``);
- up (n_{l+1} -> n_l): each vertex takes a barycentric-like (inverse-distance) mix of its own region
  and, with ``up_neighbours > 1``, the nearest adjacent regions (``up_index[l]``, ``up_weight[l]``);
- neighbourhoods: self, then the K-1 nearest vertices within two rings in angular order around the
  normal starting from the body's up direction (``neighbours[l]``), what a mesh convolution at that
  level gathers (the same slot points the same way everywhere, as in a spiral convolution).

Everything is a deterministic function of (template vertices, faces, sizes, K): no random numbers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra
from torch import Tensor

HIERARCHY_KEYS = ("assign", "area", "neighbours", "up_index", "up_weight", "positions")


def level_sizes(num_vertices: int, num_latent: int, pool_factor: float) -> list[int]:
    """Vertices per level, from the mesh (V) to the latent vertices (N), each step at most ``pool_factor``.

    Example: ``level_sizes(6890, 54, 4.0) == [6890, 2083, 630, 191, 54]``-like geometric steps.
    """
    if num_latent < 1 or num_latent >= num_vertices:
        raise ValueError(f"need 1 <= num_latent < num_vertices, got N={num_latent}, V={num_vertices}")
    if pool_factor <= 1.0:
        raise ValueError(f"pool_factor must be > 1, got {pool_factor}")
    steps = max(1, math.ceil(math.log(num_vertices / num_latent) / math.log(pool_factor) - 1e-9))
    ratio = (num_vertices / num_latent) ** (1.0 / steps)
    sizes = [num_vertices] + [max(num_latent, round(num_vertices / ratio**i)) for i in range(1, steps)]
    return sizes + [num_latent]


def topology_fingerprint(num_vertices: int, faces: Tensor | np.ndarray) -> str:
    """SHA-256 (hex) of the vertex count and the face table: what decides whether a hierarchy still fits."""
    f = np.ascontiguousarray(np.asarray(faces, dtype=np.int64))
    h = hashlib.sha256(f"{num_vertices}|{f.shape}|".encode())
    h.update(f.tobytes())
    return h.hexdigest()


def vertex_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) one third of the area of the faces around each vertex (m^2); 0 for isolated vertices."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    face_area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    area = np.zeros(len(vertices))
    for k in range(3):
        np.add.at(area, faces[:, k], face_area / 3.0)
    return area


def _graph(positions: np.ndarray, edges: np.ndarray) -> sp.csr_matrix:
    """Symmetric sparse graph weighted by template edge length (floored so no weight is zero)."""
    n = len(positions)
    w = np.linalg.norm(positions[edges[:, 0]] - positions[edges[:, 1]], axis=1) + 1e-9
    g = sp.coo_matrix((w, (edges[:, 0], edges[:, 1])), shape=(n, n))
    return (g + g.T).tocsr()


def _unique_edges(pairs: np.ndarray) -> np.ndarray:
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(np.sort(pairs, axis=1), axis=0)


def _farthest_points(positions: np.ndarray, k: int) -> np.ndarray:
    """k indices by Euclidean farthest-point sampling, starting from the vertex farthest from the centroid."""
    first = int(np.argmax(((positions - positions.mean(0)) ** 2).sum(1)))
    chosen = [first]
    d = ((positions - positions[first]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, ((positions - positions[nxt]) ** 2).sum(1))
    return np.asarray(chosen)


def _assign(graph: sp.csr_matrix, positions: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Cluster of each vertex = index (into seeds) of its geodesically nearest seed (Euclidean if unreachable)."""
    dist, _, sources = dijkstra(graph, indices=seeds, min_only=True, return_predecessors=True)
    lookup = np.full(len(positions), -1)
    lookup[seeds] = np.arange(len(seeds))
    assign = np.where(np.isfinite(dist), lookup[np.maximum(sources, 0)], -1)
    lost = np.flatnonzero(assign < 0)  # a component holding no seed
    if len(lost):
        d2 = ((positions[lost, None] - positions[seeds][None]) ** 2).sum(-1)
        assign[lost] = d2.argmin(1)
    assign[seeds] = np.arange(len(seeds))
    return assign


def cluster(
    positions: np.ndarray, area: np.ndarray, edges: np.ndarray, k: int, rounds: int = 2
) -> np.ndarray:
    """Partition a graph's vertices into k connected, compact regions (see the module docstring).

    Args:
        positions: (n, 3) template positions; area: (n,) weights; edges: (E, 2) undirected.
        k: number of regions (< n).
        rounds: Lloyd rounds (re-seed at the member nearest the region's weighted mean, re-assign).
    Returns:
        (n,) int64 region of each vertex, every region in [0, k) non-empty.
    """
    graph = _graph(positions, edges)
    seeds = _farthest_points(positions, k)
    assign = _assign(graph, positions, seeds)
    for _ in range(rounds):
        w = area + 1e-12
        sums = np.zeros((k, 3))
        np.add.at(sums, assign, positions * w[:, None])
        mass = np.bincount(assign, weights=w, minlength=k)
        centre = sums / mass[:, None]
        d2 = ((positions - centre[assign]) ** 2).sum(1)
        order = np.lexsort((np.arange(len(positions)), d2, assign))  # per region, nearest member first
        first = np.ones(len(order), dtype=bool)
        first[1:] = assign[order][1:] != assign[order][:-1]
        new_seeds = order[first]
        if len(new_seeds) != k:
            break
        assign = _assign(graph, positions, new_seeds)
    # Renumber regions in order of first appearance so the numbering follows the vertex order.
    _, first_idx = np.unique(assign, return_index=True)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(first_idx, kind="stable")] = np.arange(k)
    return rank[assign]


def _tangent_frame(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) unit normals -> two (n, 3) tangent axes: the body's up (+y) projected, else forward (+z)."""
    up = np.array([0.0, 1.0, 0.0])
    ref = up - normal * (normal @ up)[:, None]
    weak = np.linalg.norm(ref, axis=1) < 0.3  # top of the head, soles: use forward instead
    fwd = np.array([0.0, 0.0, 1.0])
    ref[weak] = fwd - normal[weak] * (normal[weak] @ fwd)[:, None]
    ref /= np.linalg.norm(ref, axis=1, keepdims=True) + 1e-12
    return ref, np.cross(normal, ref)


def _neighbourhoods(positions: np.ndarray, normals: np.ndarray, edges: np.ndarray, k: int) -> np.ndarray:
    """(n, k) for each vertex: itself, then its k-1 nearest 1-/2-ring vertices in angular order.

    The order runs counter-clockwise around the normal from the body's up direction projected on the
    tangent plane, so neighbour slot j points the same way everywhere (as a spiral convolution's).
    """
    n = len(positions)
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    adj = ((adj + adj.T + sp.identity(n)) > 0).astype(np.float32).tocsr()
    two = (adj @ adj).tocsr()
    e1, e2 = _tangent_frame(normals)
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        cand = two.indices[two.indptr[i] : two.indptr[i + 1]]
        cand = cand[cand != i]
        d = positions[cand] - positions[i]
        near = np.lexsort((cand, (d * d).sum(1)))[: k - 1]
        cand, d = cand[near], d[near]
        angle = np.arctan2(d @ e2[i], d @ e1[i]) % (2 * np.pi)
        cand = cand[np.lexsort((cand, angle))]
        if len(cand) < k - 1:  # tiny graphs: pad with self
            cand = np.concatenate([cand, np.full(k - 1 - len(cand), i)])
        out[i, 0], out[i, 1:] = i, cand
    return out


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals (outward for outward-wound faces)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    fn = np.cross(b - a, c - a)
    nrm = np.zeros_like(vertices)
    for j in range(3):
        np.add.at(nrm, faces[:, j], fn)
    return nrm / (np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12)


def _upsampling(
    fine: np.ndarray, assign: np.ndarray, coarse: np.ndarray, coarse_edges: np.ndarray, p: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n_fine, p) indices and weights: own region first, then the nearest adjacent regions (inverse distance)."""
    nc = len(coarse)
    adj = [[] for _ in range(nc)]
    for a, b in coarse_edges:
        adj[a].append(b)
        adj[b].append(a)
    index = np.empty((len(fine), p), dtype=np.int64)
    weight = np.zeros((len(fine), p))
    for i, own in enumerate(assign):
        cand = np.asarray([own] + sorted(adj[own]), dtype=np.int64)
        d = np.linalg.norm(coarse[cand] - fine[i], axis=1)
        keep = np.concatenate([[0], 1 + np.lexsort((cand[1:], d[1:]))])[:p]
        if len(keep) < p:
            keep = np.concatenate([keep, np.zeros(p - len(keep), dtype=np.int64)])
        w = 1.0 / (d[keep] + 1e-4)
        w[1:][keep[1:] == 0] = 0.0  # padding
        index[i], weight[i] = cand[keep], w / w.sum()
    return index, weight


@dataclass
class MeshHierarchy:
    """Nested regions of a template (see the module docstring). Lists run over levels.

    Attributes:
        sizes: [V, n_1, ..., N] vertices per level.
        assign: per level l < L: (n_l,) int64 region in level l+1 of each vertex.
        area: per level l <= L: (n_l,) surface area (m^2) each vertex stands for.
        neighbours: per level l <= L: (n_l, K) int64 convolution neighbourhood, self first, then by angle.
        up_index, up_weight: per level l < L: (n_l, P) int64 / float32 up-sampling from level l+1.
        positions: per level l <= L: (n_l, 3) template positions.
        fingerprint: :func:`topology_fingerprint` of the template it was built from.
    """

    sizes: list[int]
    assign: list[Tensor]
    area: list[Tensor]
    neighbours: list[Tensor]
    up_index: list[Tensor]
    up_weight: list[Tensor]
    positions: list[Tensor]
    fingerprint: str

    @property
    def num_levels(self) -> int:
        """L, the number of pooling steps."""
        return len(self.sizes) - 1

    def regions(self) -> Tensor:
        """(V,) int64: the latent vertex (token) whose region holds each template vertex."""
        r = self.assign[0]
        for a in self.assign[1:]:
            r = a[r]
        return r

    def region_areas(self) -> Tensor:
        """(N,) surface area of each token's region (m^2)."""
        return torch.zeros(self.sizes[-1], dtype=torch.float64).index_add_(
            0, self.regions(), self.area[0].double()
        )


def build_hierarchy(
    vertices: Tensor | np.ndarray,
    faces: Tensor | np.ndarray,
    sizes: list[int],
    num_neighbours: int | list[int] = 9,
    up_neighbours: int = 1,
) -> MeshHierarchy:
    """Build the region hierarchy of a template mesh.

    Args:
        vertices: (V, 3) template vertices (metres); faces: (F, 3) int vertex indices.
        sizes: vertices per level, ``sizes[0] == V`` (see :func:`level_sizes`).
        num_neighbours: K, vertices a mesh convolution gathers (self included); one value for every
            level or a list with one per level.
        up_neighbours: P, regions an up-sampled vertex mixes (1: its own region only).
    Returns:
        A :class:`MeshHierarchy`.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"template must be vertices (V,3) and faces (F,3), got {v.shape} and {f.shape}")
    if sizes[0] != len(v):
        raise ValueError(f"sizes[0]={sizes[0]} must equal the template's vertex count {len(v)}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices outside [0, {len(v)})")
    ks = [num_neighbours] * len(sizes) if isinstance(num_neighbours, int) else list(num_neighbours)
    if len(ks) != len(sizes):
        raise ValueError(f"num_neighbours needs one value per level ({len(sizes)}), got {ks}")
    edges = _unique_edges(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]))
    pos, area, normals = v, vertex_areas(v, f), vertex_normals(v, f)
    h = MeshHierarchy(list(sizes), [], [], [], [], [], [], topology_fingerprint(len(v), f))
    for level, n_next in enumerate(list(sizes[1:]) + [None]):
        k = min(int(ks[level]), len(pos))
        nbrs = _neighbourhoods(pos, normals, edges, k)
        if k < ks[level]:
            nbrs = np.concatenate([nbrs, np.repeat(nbrs[:, :1], ks[level] - k, 1)], 1)
        h.neighbours.append(torch.as_tensor(nbrs))
        h.area.append(torch.as_tensor(area, dtype=torch.float32))
        h.positions.append(torch.as_tensor(pos, dtype=torch.float32))
        if n_next is None:
            break
        assign = cluster(pos, area, edges, n_next)
        w = area + 1e-12
        mass = np.bincount(assign, weights=w, minlength=n_next)
        coarse = np.zeros((n_next, 3))
        np.add.at(coarse, assign, pos * w[:, None])
        coarse /= mass[:, None]
        coarse_edges = _unique_edges(assign[edges])
        idx, wt = _upsampling(pos, assign, coarse, coarse_edges, up_neighbours)
        h.assign.append(torch.as_tensor(assign))
        h.up_index.append(torch.as_tensor(idx))
        h.up_weight.append(torch.as_tensor(wt, dtype=torch.float32))
        coarse_normals = np.zeros((n_next, 3))
        np.add.at(coarse_normals, assign, normals * w[:, None])
        normals = coarse_normals / (np.linalg.norm(coarse_normals, axis=1, keepdims=True) + 1e-12)
        pos, area, edges = coarse, np.bincount(assign, weights=area, minlength=n_next), coarse_edges
    return h


class HierarchyStore(torch.nn.Module):
    """A :class:`MeshHierarchy` held as buffers: saved in state dicts, moved by ``.to()``; empty until set.

    Loading a state dict that holds a hierarchy re-creates the buffers with the stored shapes, so a
    checkpoint brings its hierarchy back without rebuilding it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: MeshHierarchy | None = None

    def _clear(self) -> None:
        for name in list(self._buffers):
            del self._buffers[name]
        self._cache = None

    def set(self, h: MeshHierarchy, device: torch.device | str = "cpu") -> None:
        """Replace the stored hierarchy with ``h`` (on ``device``)."""
        self._clear()
        self.register_buffer("sizes", torch.as_tensor(h.sizes, dtype=torch.long, device=device))
        digest = torch.frombuffer(bytearray(bytes.fromhex(h.fingerprint)), dtype=torch.uint8)
        self.register_buffer("fingerprint", digest.to(device))
        for key in HIERARCHY_KEYS:
            for level, t in enumerate(getattr(h, key)):
                self.register_buffer(f"{key}_{level}", t.to(device))

    def get(self) -> MeshHierarchy | None:
        """The stored hierarchy (tensors on the module's device), or None."""
        if "sizes" not in self._buffers:
            return None
        c = self._cache  # valid while the buffers are the very tensors it was made from (no device sync)
        if c is not None and c.neighbours and c.neighbours[0] is self._buffers.get("neighbours_0"):
            return c
        sizes = [int(s) for s in self.sizes.tolist()]
        fp = bytes(self.fingerprint.cpu().tolist()).hex()
        lists = {key: [] for key in HIERARCHY_KEYS}
        for key in HIERARCHY_KEYS:
            level = 0
            while f"{key}_{level}" in self._buffers:
                lists[key].append(self._buffers[f"{key}_{level}"])
                level += 1
        self._cache = MeshHierarchy(sizes=sizes, fingerprint=fp, **lists)
        return self._cache

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        mine = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        self._clear()
        for name, value in mine.items():
            if "." not in name:
                self.register_buffer(name, torch.empty_like(value, device=value.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
