"""What the evaluator scores, and the two built-in predictors that need no model.

A predictor is any callable ``batch -> PredictorOutput``. ``batch`` is what
:class:`mega.data.benchmarks.index.BenchmarkDataset` yields, collated (ground-truth parameters included,
so the built-in predictors can use them; a model must not). The output holds either meshes or body
parameters, for one hypothesis ``(B, ...)`` or Q hypotheses ``(B, Q, ...)`` per image.

- ``oracle``: the ground truth itself; every error must be 0.
- ``mean_pose``: the rest pose with the mean shape (zero betas), placed with the ground-truth root
  orientation and translation (the "camera"): the floor every trained model must beat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mega.registry import Registry

PREDICTORS = Registry("predictor")

Batch = dict[str, Any]


@dataclass
class PredictorOutput:
    """Meshes or body parameters for a batch; a leading Q axis after B means Q hypotheses.

    Attributes:
        vertices: (B, V, 3) or (B, Q, V, 3) meshes, metres; if set, the parameters are ignored.
        global_orient: (B, 3) or (B, Q, 3) axis-angle root orientation (camera frame).
        body_pose: (B, 69) / (B, 23, 3) or (B, Q, 69) / (B, Q, 23, 3) axis-angle.
        betas: (B, 10) or (B, Q, 10); zeros if None.
        transl: (B, 3) or (B, Q, 3); None for no translation (protocols root-align anyway).
        gender: per-sample body gender of the parameters (``male`` / ``female`` / ``neutral``);
            None means the neutral body. Used only by protocols with gendered ground truth.
        deterministic_vertices: (B, V, 3) the deterministic prediction next to Q samples (for the
            distance of the mean-of-Q mesh to it), or None.
        global_rot: (B, 3, 3) the predicted global (root) rotation in the camera frame, when the
            predictor has one of its own: scored as the orientation error (degrees), or None.
    """

    vertices: Tensor | None = None
    global_orient: Tensor | None = None
    body_pose: Tensor | None = None
    betas: Tensor | None = None
    transl: Tensor | None = None
    gender: list[str] | None = None
    deterministic_vertices: Tensor | None = None
    global_rot: Tensor | None = None

    def num_hypotheses(self) -> int | None:
        """Q if the output carries a hypothesis axis, else None (one prediction per image)."""
        if self.vertices is not None:
            return self.vertices.shape[1] if self.vertices.ndim == 4 else None
        if self.global_orient is None or self.body_pose is None:
            raise ValueError("a predictor must return vertices, or global_orient and body_pose")
        return self.global_orient.shape[1] if self.global_orient.ndim == 3 else None


Predictor = Callable[[Batch], PredictorOutput]


@PREDICTORS.register("oracle")
def oracle() -> Predictor:
    """Returns the ground-truth parameters with their gender: scores 0 under every protocol."""

    def predict(batch: Batch) -> PredictorOutput:
        return PredictorOutput(
            global_orient=batch["global_orient"],
            body_pose=batch["body_pose"],
            betas=batch["betas"],
            transl=batch["transl"],
            gender=list(batch["gender"]),
        )

    return predict


@PREDICTORS.register("mean_pose")
def mean_pose() -> Predictor:
    """Rest pose, mean shape, neutral body, ground-truth root orientation and translation."""

    def predict(batch: Batch) -> PredictorOutput:
        go = batch["global_orient"]
        return PredictorOutput(
            global_orient=go,
            body_pose=torch.zeros(go.shape[0], 69, dtype=go.dtype, device=go.device),
            betas=torch.zeros_like(batch["betas"]),
            transl=batch["transl"],
        )

    return predict


def build_predictor(name: str, **kwargs: Any) -> Predictor:
    """Build a registered predictor (``oracle``, ``mean_pose``) by name."""
    return PREDICTORS.build(name, **kwargs)
