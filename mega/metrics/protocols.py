"""Named evaluation protocols: which joints, which root alignment, which ground-truth body.

The same prediction gets different "3DPW numbers" in different codebases because of these three
choices (formats note sections 3.3 and 4.2, prior-art note section 3.2). Every protocol here states
them, and every result the evaluator writes carries the protocol's name.

================  ===========================  ======================  ==============================
name              joints                       root alignment          ground-truth body
================  ===========================  ======================  ==============================
3dpw_spin14       H36M regressor -> LSP-14     H36M joint 0 (pelvis)   gendered SMPL
emdb24            SMPL skeleton (FK) joints    mid-hip (joints 1, 2)   gendered SMPL
emdb24_regressed  body's 24 joints, J @ V      mid-hip (joints 1, 2)   gendered SMPL
mega17            H36M regressor, all 17       vertex centroid         gendered SMPL
smpl24            body's 24 joints, J @ V      mid-hip (joints 1, 2)   one body for all (free body)
================  ===========================  ======================  ==============================

Except for ``emdb24``, joints are regressed from the posed vertices (``J @ V``) for prediction and
ground truth alike, so a predictor that returns only vertices is scored exactly like one that returns
parameters; the 24-joint sets use the prediction body's ``J_regressor``. MPJPE and PVE subtract the
root of each mesh; PA-MPJPE solves a similarity Procrustes on the joints; PA-PVE one on the vertices.

``emdb24`` does what EMDB's official evaluation does (``eth-ait/emdb : evaluation_metrics.py``): the
joints are the body model's forward-kinematics skeleton joints (what the SMPL layer returns, not
``J @ posed vertices``), and its PA vertex error (MVE_PA) applies the similarity solved on the 24
joints to the vertices. Skeleton joints are used when both sides have them (the evaluator poses the
ground truth and parameter predictions); a prediction given only as vertices has no skeleton, and
then both sides fall back to ``J @ V``. ``emdb24_regressed`` keeps the vertex-regressed joints and the
vertex-solved PA-PVE (what ``emdb24`` computed before): MPJPE differs from the official by ~1 mm on
average (up to ~15 mm on a sample) and PA-PVE runs a few mm lower than MVE_PA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mega.body import BodyModel
from mega.body.joints import H36M_PELVIS, H36M_TO_LSP14, SMPL_HIPS, load_h36m_regressor
from mega.metrics.errors import apply_similarity, mpjpe, pa_mpjpe, pa_pve, pve, similarity_procrustes
from mega.registry import Registry

PROTOCOLS = Registry("protocol")

DEFAULT_H36M_REGRESSOR = "data/body_models/J_regressor_h36m.npy"
METRIC_NAMES = ("mpjpe", "pa_mpjpe", "pve", "pa_pve")

BodyFactory = Callable[[str], BodyModel]


@dataclass(frozen=True, eq=False)
class Protocol:
    """One evaluation protocol.

    Attributes:
        name: registry name, written next to every number.
        joint_set: ``lsp14`` (H36M regressor rows ``H36M_TO_LSP14``), ``h36m17`` or ``smpl24``.
        root: ``h36m_pelvis`` (H36M regressor row 0), ``mid_hip`` (mean of SMPL joints 1 and 2) or
            ``centroid`` (mean of the vertices).
        gendered_gt: pose the ground truth with the sample's gendered body; else one neutral body.
        source: where the protocol comes from.
        h36m_regressor: (17, V) regressor, needed by ``lsp14`` / ``h36m17`` / ``h36m_pelvis``.
        joints_from: ``vertices`` (``J @ V``) or ``skeleton`` (the body's FK joints when both sides
            give them; ``smpl24`` only).
        pa_vertices: ``vertices`` (PA-PVE solves its own Procrustes on the vertices) or ``joints``
            (the similarity solved on the joints is applied to the vertices: EMDB's MVE_PA).
    """

    name: str
    joint_set: str
    root: str
    gendered_gt: bool
    source: str
    h36m_regressor: Tensor | None = None
    joints_from: str = "vertices"
    pa_vertices: str = "vertices"

    def __post_init__(self) -> None:
        if self.joints_from not in ("vertices", "skeleton"):
            raise ValueError(f"protocol {self.name}: joints_from must be vertices or skeleton")
        if self.pa_vertices not in ("vertices", "joints"):
            raise ValueError(f"protocol {self.name}: pa_vertices must be vertices or joints")
        if self.joints_from == "skeleton" and self.joint_set != "smpl24":
            raise ValueError(f"protocol {self.name}: skeleton joints are SMPL's 24 (joint_set smpl24)")
        if self.joint_set not in ("lsp14", "h36m17", "smpl24"):
            raise ValueError(f"protocol {self.name}: unknown joint_set '{self.joint_set}'")
        if self.root not in ("h36m_pelvis", "mid_hip", "centroid"):
            raise ValueError(f"protocol {self.name}: unknown root '{self.root}'")
        if self.uses_h36m and self.h36m_regressor is None:
            raise ValueError(f"protocol {self.name} needs the H36M regressor (17, V)")
        if self.root == "mid_hip" and self.joint_set != "smpl24":
            raise ValueError(f"protocol {self.name}: mid_hip root needs the smpl24 joint set")

    @property
    def uses_h36m(self) -> bool:
        """Whether this protocol regresses joints with the H36M regressor."""
        return self.joint_set in ("lsp14", "h36m17") or self.root == "h36m_pelvis"

    @property
    def uses_skeleton(self) -> bool:
        """Whether this protocol takes the body's FK joints (pass them to :meth:`errors`)."""
        return self.joints_from == "skeleton"

    def describe(self) -> dict[str, object]:
        """Plain description written into the JSON summary."""
        return {
            "name": self.name,
            "joint_set": self.joint_set,
            "joints": "body skeleton (FK) joints; J @ V on both sides if a prediction has only vertices"
            if self.uses_skeleton
            else "regressed from the posed vertices",
            "root": self.root,
            "ground_truth_body": "gendered" if self.gendered_gt else "single neutral body",
            "pa_pve": "similarity solved on the joints, applied to the vertices (MVE_PA)"
            if self.pa_vertices == "joints"
            else "Procrustes on vertices",
            "source": self.source,
        }

    def gt_gender(self, gender: str) -> str:
        """Which body poses a sample's ground truth: its own gender, or ``neutral``."""
        return gender if self.gendered_gt else "neutral"

    def regressor_for(self, body: BodyModel) -> Tensor:
        """The full joint regressor this protocol uses with meshes of ``body``'s topology.

        Args:
            body: the prediction body model (its ``J_regressor`` serves ``smpl24``).
        Returns:
            (17, V) H36M regressor or (24, V) SMPL regressor, float32.
        """
        reg = self.h36m_regressor if self.uses_h36m else body.J_regressor
        if reg.shape[-1] != body.num_vertices:
            raise ValueError(
                f"protocol {self.name}: its joint regressor has {reg.shape[-1]} vertex columns but body "
                f"'{body.name}' has {body.num_vertices} vertices. The H36M regressor needs SMPL's topology; "
                "evaluate the free body with protocol=smpl24."
            )
        return reg.detach().float()

    def align(
        self, vertices: Tensor, regressor: Tensor, joints: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Regress the protocol's joints (or take the given skeleton joints) and subtract its root.

        Args:
            vertices: (B, V, 3) posed meshes.
            regressor: (J_all, V) from :meth:`regressor_for`.
            joints: optional (B, 24, 3) FK joints, used instead of ``J @ V`` by skeleton protocols.
        Returns:
            joints (B, J, 3) in the protocol's joint set and vertices (B, V, 3), both root-aligned.
        """
        if joints is not None and self.uses_skeleton:
            joints = joints.to(vertices)
        else:
            joints = torch.einsum("jv,bvc->bjc", regressor.to(vertices), vertices)
        if self.root == "centroid":
            root = vertices.mean(dim=1, keepdim=True)
        elif self.root == "mid_hip":
            root = joints[:, list(SMPL_HIPS)].mean(dim=1, keepdim=True)
        else:
            root = joints[:, H36M_PELVIS : H36M_PELVIS + 1]
        if self.joint_set == "lsp14":
            joints = joints[:, H36M_TO_LSP14]
        return joints - root, vertices - root

    def errors(
        self,
        pred_vertices: Tensor,
        gt_vertices: Tensor,
        regressor: Tensor,
        pred_joints: Tensor | None = None,
        gt_joints: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """MPJPE, PA-MPJPE, PVE and PA-PVE of each sample under this protocol.

        Args:
            pred_vertices: (B, V, 3) predicted meshes.
            gt_vertices: (B, V, 3) ground-truth meshes.
            regressor: (J_all, V) from :meth:`regressor_for`.
            pred_joints, gt_joints: optional (B, 24, 3) skeleton (FK) joints; a skeleton protocol
                uses them when both are given, else ``J @ V`` on both sides.
        Returns:
            name -> (B,) errors in the input's units (metres in, metres out).
        """
        both = pred_joints is not None and gt_joints is not None
        pj, pv = self.align(pred_vertices, regressor, pred_joints if both else None)
        gj, gv = self.align(gt_vertices, regressor, gt_joints if both else None)
        if self.pa_vertices == "joints":
            scale, rot, transl = similarity_procrustes(pj, gj)
            pa_vertex_error = pve(apply_similarity(pv.double(), scale, rot, transl), gv.double()).to(pv.dtype)
        else:
            pa_vertex_error = pa_pve(pv, gv)
        return {
            "mpjpe": mpjpe(pj, gj),
            "pa_mpjpe": pa_mpjpe(pj, gj),
            "pve": pve(pv, gv),
            "pa_pve": pa_vertex_error,
        }


def _regressor(h36m_regressor: str | Path | Tensor) -> Tensor:
    if isinstance(h36m_regressor, Tensor):
        if h36m_regressor.ndim != 2 or h36m_regressor.shape[0] != 17:
            raise ValueError(f"H36M regressor must be (17, V); got {tuple(h36m_regressor.shape)}")
        return h36m_regressor.float()
    return load_h36m_regressor(h36m_regressor)


@PROTOCOLS.register("3dpw_spin14")
def spin14(h36m_regressor: str | Path | Tensor = DEFAULT_H36M_REGRESSOR) -> Protocol:
    """The common 3DPW protocol (SPIN, PARE, CLIFF, BEDLAM, CameraHMR lineage)."""
    return Protocol(
        "3dpw_spin14", "lsp14", "h36m_pelvis", True, "nkolot/SPIN eval.py", _regressor(h36m_regressor)
    )


@PROTOCOLS.register("emdb24")
def emdb24() -> Protocol:
    """EMDB's official protocol: 24 SMPL skeleton joints, mid-hip pelvis, gendered ground truth,
    MVE_PA with the joints' similarity (see the module docstring)."""
    return Protocol(
        "emdb24",
        "smpl24",
        "mid_hip",
        True,
        "eth-ait/emdb evaluation_metrics.py",
        joints_from="skeleton",
        pa_vertices="joints",
    )


@PROTOCOLS.register("emdb24_regressed")
def emdb24_regressed() -> Protocol:
    """EMDB's joints and root with joints regressed from the vertices and PA-PVE solved on the vertices."""
    return Protocol("emdb24_regressed", "smpl24", "mid_hip", True, "mega (EMDB variant on J @ V)")


@PROTOCOLS.register("mega17")
def mega17(h36m_regressor: str | Path | Tensor = DEFAULT_H36M_REGRESSOR) -> Protocol:
    """MEGA / VQ-HPS: all 17 H36M joints, meshes centred on their vertex centroid."""
    return Protocol(
        "mega17", "h36m17", "centroid", True, "g-fiche/MEGA mega/utils/eval.py", _regressor(h36m_regressor)
    )


@PROTOCOLS.register("smpl24")
def smpl24() -> Protocol:
    """The body's 24 joints, mid-hip pelvis, one body for all: for the free body and embedded sets."""
    return Protocol("smpl24", "smpl24", "mid_hip", False, "mega (embedded benchmarks)")


def build_protocol(name: str, **kwargs: object) -> Protocol:
    """Build a registered protocol by name (kwargs: ``h36m_regressor`` for the H36M-based ones)."""
    return PROTOCOLS.build(name, **kwargs)
