"""One body-model class for every SMPL-format model (the user's SMPL files and the free body).

Both go through ``smplx.SMPL`` (its linear blend skinning, shape and pose blend shapes), built from
an in-memory array struct, so a model file in SMPL format is all a new body needs. The module
returns SMPL's 24 kinematic joints; smplx's extra vertex-picked joints (tied to SMPL's vertex ids)
are not computed.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import smplx
import torch
from smplx.utils import Struct
from torch import Tensor, nn

from mega.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mega.body.rotations import axis_angle_to_matrix
from mega.types import BodyOutput


class _KinematicJointsOnly(nn.Module):
    """Replaces smplx's vertex joint selector: keeps the regressed joints as they are."""

    def forward(self, vertices: Tensor, joints: Tensor) -> Tensor:
        return joints


class BodyModel(nn.Module):
    """An SMPL-format body model with smplx's calling convention.

    Args:
        data: SMPL-format arrays (see :func:`mega.body.model_files.read_model_file`); extra
            ``<name>_regressor (K,V)`` arrays become keypoint regressors.
        name: a label for messages (``smpl-neutral``, ``free`` ...).
        num_betas: shape components used (10).

    Call ``model(global_orient=(B,3), body_pose=(B,23,3) or (B,23,3,3), betas=(B,10), transl=(B,3))``
    -> :class:`mega.types.BodyOutput` with ``vertices (B,V,3)`` and ``joints (B,24,3)`` in metres.
    """

    def __init__(self, data: dict[str, Any], name: str = "smpl", num_betas: int = 10) -> None:
        super().__init__()
        self.name = name
        arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
        if arrays["shapedirs"].shape[-1] < num_betas:
            raise ValueError(
                f"{name}: shapedirs has {arrays['shapedirs'].shape[-1]} < {num_betas} components"
            )
        if arrays["kintree_table"].shape[-1] != 24 or arrays["J_regressor"].shape[0] != 24:
            raise ValueError(
                f"{name}: expected SMPL's 24 joints, got kintree {arrays['kintree_table'].shape}"
            )
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning for 10 betas
            self.smpl = smplx.SMPL(
                model_path="",
                data_struct=Struct(**arrays),
                num_betas=num_betas,
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
                dtype=torch.float32,
            )
        self.smpl.vertex_joint_selector = _KinematicJointsOnly()
        self.num_betas = num_betas
        self.num_vertices = int(arrays["v_template"].shape[0])
        self.joint_names = list(SMPL_JOINT_NAMES)
        self.register_buffer("faces", torch.as_tensor(arrays["f"].astype(np.int64)), persistent=False)
        parents = torch.as_tensor(arrays["kintree_table"][0].astype(np.int64))
        parents[0] = -1
        if parents.tolist() != SMPL_PARENTS:
            raise ValueError(f"{name}: kinematic tree differs from SMPL's: {parents.tolist()}")
        self.register_buffer("parents", parents, persistent=False)
        self._keypoint_names: dict[str, list[str]] = {}
        for key, value in arrays.items():
            if key.endswith("_regressor") and key != "J_regressor":
                kind = key[: -len("_regressor")]
                self.register_buffer(
                    f"_kp_{kind}", torch.as_tensor(value, dtype=torch.float32), persistent=False
                )
                names = data.get(f"{kind}_names")
                self._keypoint_names[kind] = [str(n) for n in names] if names is not None else []

    @property
    def J_regressor(self) -> Tensor:  # noqa: N802 (SMPL's own name)
        """(24, V) dense joint regressor."""
        return self.smpl.J_regressor

    @property
    def v_template(self) -> Tensor:
        """(V, 3) rest mesh at zero shape."""
        return self.smpl.v_template

    def keypoint_names(self) -> list[str]:
        """Names of the extra keypoint regressors this model ships (``coco17`` for the free body)."""
        return sorted(self._keypoint_names)

    def keypoint_regressor(self, kind: str) -> Tensor:
        """(K, V) regressor of an extra keypoint set, e.g. ``coco17``."""
        if kind not in self._keypoint_names:
            raise KeyError(
                f"body model '{self.name}' has no '{kind}' keypoint regressor (it has: "
                f"{self.keypoint_names() or 'none'}); for SMPL's H36M-17 use mega.body.joints.load_h36m_regressor"
            )
        return getattr(self, f"_kp_{kind}")

    def forward(
        self,
        global_orient: Tensor,
        body_pose: Tensor,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
    ) -> BodyOutput:
        """Pose and shape the body.

        Args:
            global_orient: (B, 3) axis-angle or (B, 3, 3) rotation of the root.
            body_pose: (B, 23, 3) axis-angle (or (B, 69)) or (B, 23, 3, 3) rotation matrices.
            betas: (B, num_betas) shape coefficients; zeros if None.
            transl: (B, 3) translation added to vertices and joints, or None.
        Returns:
            BodyOutput with vertices (B, V, 3), joints (B, 24, 3), rot_mats (B, 24, 3, 3).
        """
        batch = global_orient.shape[0]
        # Decide by rank, not by trailing shape: a batch of 3 axis-angles is also (3, 3).
        go = (
            global_orient
            if global_orient.dim() == 3
            else axis_angle_to_matrix(global_orient.reshape(batch, 3))
        )
        if body_pose.dim() == 4:
            bp = body_pose.reshape(batch, 23, 3, 3)
        else:
            bp = axis_angle_to_matrix(body_pose.reshape(batch, 23, 3))
        rot_mats = torch.cat([go.reshape(batch, 1, 3, 3), bp], dim=1).to(self.smpl.shapedirs.dtype)
        if betas is None:
            betas = rot_mats.new_zeros(batch, self.num_betas)
        if betas.shape != (batch, self.num_betas):
            raise ValueError(f"betas must be ({batch}, {self.num_betas}), got {tuple(betas.shape)}")
        out = self.smpl(
            betas=betas.to(rot_mats.dtype),
            global_orient=rot_mats[:, :1],
            body_pose=rot_mats[:, 1:],
            transl=None if transl is None else transl.to(rot_mats.dtype),
            pose2rot=False,
        )
        return BodyOutput(vertices=out.vertices, joints=out.joints[:, :24], rot_mats=rot_mats)

    def extra_repr(self) -> str:
        return f"name={self.name}, vertices={self.num_vertices}, faces={self.faces.shape[0]}"
