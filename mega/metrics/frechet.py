"""Fréchet distance between two sets of features, and the mesh feature space it is measured in.

The Fréchet distance between Gaussians fitted to two feature sets (the "FID" of Heusel et al. 2017) is

    FD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

MEGA (supplementary C) measures the plausibility of generated meshes this way, with features from the
latent space (7 x 9) of a fully convolutional mesh autoencoder trained on AMASS. That network is not
available here, so the feature space is its linear counterpart, :class:`MeshPCAFeatures`: the top-k
principal components of canonical meshes (zero global orientation, centred on the vertex centroid),
fitted once on the *training* split of the motion data. Why this space:

- it is independent of the model under test: the tokenizer's own encoder latent would score meshes
  with the network that produced them (random token ids decoded and re-encoded by the same
  tokenizer included) and would change whenever the tokenizer is retrained, so numbers from two
  tokenizers could not be compared;
- it is deterministic (an SVD) and needs no training, so it is the same on every run that uses the
  same body model and data;
- it has a unit: coordinates are scaled so that Euclidean distance between two feature vectors is the
  RMS per-vertex distance (cm) between the meshes within the k-dimensional subspace. FD is therefore
  in cm^2; k = 32 components keep nearly all of the variance of body meshes.

The distance depends on the number of samples (a biased estimator); compare sets of equal size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance (unbiased, N - 1) of a feature set, in float64.

    Args:
        features: (N, D) with N >= 2, finite.

    Returns:
        (mu (D,), sigma (D, D)) float64 on the input's device.
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {tuple(features.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or inf")
    x = features.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(sigma: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    evals, evecs = torch.linalg.eigh(0.5 * (sigma + sigma.T))
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    The trace of the matrix square root is computed as the sum of the square roots of the eigenvalues
    of the symmetric matrix S_1^{1/2} S_2 S_1^{1/2} (same eigenvalues as S_1 S_2, but real and stable
    in float64, with no complex ``sqrtm`` residue).

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.

    Returns:
        The distance (>= 0, in squared feature units).
    """
    d = mu1.shape[-1]
    shapes = (mu1.shape, mu2.shape, sigma1.shape, sigma2.shape)
    if shapes != ((d,), (d,), (d, d), (d, d)):
        raise ValueError(f"expected means (D,) and covariances (D, D), got {shapes}")
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    evals = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0)
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2.0 * evals.sqrt().sum()
    return max(float(value), 0.0)


def frechet_distance_between(features1: Tensor, features2: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    Args:
        features1: (N1, D).
        features2: (N2, D).

    Returns:
        The distance in squared feature units.
    """
    if features1.shape[-1] != features2.shape[-1]:
        raise ValueError(f"feature sizes differ: {tuple(features1.shape)} vs {tuple(features2.shape)}")
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


class MeshPCAFeatures:
    """Fixed linear features of canonical meshes: principal components, scaled to cm of RMS vertex distance.

    ``features(v) = 100 / sqrt(V) * basis @ (centre(v) - mean).flatten()``, where ``centre`` subtracts the
    vertex centroid and ``basis`` (k, 3V) holds the top-k orthonormal principal directions. For two meshes
    whose difference lies in the subspace, ``||f(a) - f(b)||`` equals their RMS per-vertex distance in cm.

    Args:
        mean: (3V,) mean of the flattened centred meshes, metres.
        basis: (k, 3V) orthonormal rows.
        explained_variance: (k,) fraction of the total variance each component explains.
    """

    def __init__(self, mean: Tensor, basis: Tensor, explained_variance: Tensor) -> None:
        if basis.dim() != 2 or mean.shape != (basis.shape[1],) or basis.shape[1] % 3:
            raise ValueError(
                f"mean (3V,) and basis (k, 3V) expected, got {tuple(mean.shape)}, {tuple(basis.shape)}"
            )
        self.mean = mean.double()
        self.basis = basis.double()
        self.explained_variance = explained_variance.double()
        self.num_vertices = basis.shape[1] // 3

    @classmethod
    def fit(cls, vertices: Tensor, num_components: int = 32) -> MeshPCAFeatures:
        """Fit the principal components of a set of meshes.

        Args:
            vertices: (N, V, 3) meshes in metres (centred here on their vertex centroid).
            num_components: k <= min(N, 3V).

        Returns:
            The fitted feature map.
        """
        x = _centred_flat(vertices)  # (N, 3V) float64
        if not 1 <= num_components <= min(x.shape):
            raise ValueError(f"num_components must be in [1, {min(x.shape)}], got {num_components}")
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        variance = s.square()
        return cls(mean, vh[:num_components], variance[:num_components] / variance.sum())

    def __call__(self, vertices: Tensor) -> Tensor:
        """Features of meshes.

        Args:
            vertices: (B, V, 3) meshes in metres.

        Returns:
            (B, k) float64 features (cm).
        """
        if vertices.dim() != 3 or vertices.shape[1:] != (self.num_vertices, 3):
            raise ValueError(f"expected meshes (B, {self.num_vertices}, 3), got {tuple(vertices.shape)}")
        x = _centred_flat(vertices).to(self.basis.device)
        return (x - self.mean) @ self.basis.T * (100.0 / math.sqrt(self.num_vertices))

    def state_dict(self) -> dict[str, Tensor]:
        """The three tensors that define the map (for saving next to results)."""
        return {"mean": self.mean, "basis": self.basis, "explained_variance": self.explained_variance}


def _centred_flat(vertices: Tensor) -> Tensor:
    """(N, V, 3) -> (N, 3V) float64, each mesh shifted to put its vertex centroid at the origin."""
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"expected meshes (N, V, 3), got {tuple(vertices.shape)}")
    if not bool(torch.isfinite(vertices).all()):
        raise ValueError("meshes contain NaN or inf")
    v = vertices.double()
    return (v - v.mean(1, keepdim=True)).flatten(1)
