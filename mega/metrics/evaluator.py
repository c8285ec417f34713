"""Run a predictor over a benchmark and score every sample under a named protocol.

No shuffling, no dropped last batch, and every number is a mean over samples of per-sample errors
(never a mean of batch means), so results do not depend on the batch size. Outputs:

- ``per_sample.csv``: one row per sample (index, image, sequence, frame, person, gender, protocol,
  every metric in mm / cm);
- ``summary.json``: dataset, protocol (with its description), predictor, counts, and the metrics, with
  best-of-Q numbers kept apart from single-hypothesis ones; for a predictor that gives its own global
  rotation, ``orientation``: the mean and median geodesic error of that rotation (degrees);
- a printed table (:func:`format_table`).

Single-hypothesis numbers (``metrics``) come from the one prediction per image, or, with Q samples,
from the deterministic prediction if the predictor gives one, else from the mean-of-Q mesh (the
summary says which). With Q > 1 the summary adds ``best_of_q`` (per-metric minimum over samples),
``mean_of_q`` (the mean mesh's errors) and ``diversity``: APD of the root-aligned protocol joints (cm),
the per-vertex standard deviation averaged over vertices (mm) and, with a deterministic prediction,
the distance of the mean-of-Q mesh to it (mm), as in MEGA's supplementary Table 4.

Under ``torchrun`` (a process group with more than one rank) each rank scores the samples
``rank, rank + W, rank + 2W, ...``; the rows are gathered to every rank and put back in dataset
order, so the CSV and the summary are the same as a one-process run's: no sample lost or counted
twice.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from mega.atomic import write_json, write_text
from mega.body.rotations import axis_angle_to_matrix, geodesic_angle
from mega.metrics.errors import apd, best_of_q, mean_of_q, per_vertex_std, pve
from mega.metrics.predictors import Predictor, PredictorOutput
from mega.metrics.protocols import METRIC_NAMES, BodyFactory, Protocol

log = logging.getLogger(__name__)

MM, CM = 1000.0, 100.0
META_COLUMNS = ("index", "image", "sequence", "frame", "person", "gender")


@dataclass
class EvaluationResult:
    """Per-sample values (mm; APD in cm) and the summary written to JSON."""

    per_sample: dict[str, Tensor]
    meta: dict[str, list[Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def _pose_with_joints(
    bodies: BodyFactory, genders: list[str], params: dict[str, Tensor], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Vertices (B, V, 3) and skeleton (FK) joints (B, 24, 3) of per-sample parameters, each posed
    with its gender's body."""
    out: Tensor | None = None
    joints: Tensor | None = None
    for gender in sorted(set(genders)):
        idx = torch.tensor([i for i, g in enumerate(genders) if g == gender], device=device)
        body = bodies(gender).to(device)
        sel = {k: None if v is None else v.to(device)[idx].float() for k, v in params.items()}
        posed = body(  # root as matrices: a (3, 3) axis-angle batch would read as one matrix
            global_orient=axis_angle_to_matrix(sel["global_orient"].reshape(len(idx), 3)),
            body_pose=sel["body_pose"].reshape(len(idx), 23, -1),
            betas=sel["betas"],
            transl=sel["transl"],
        )
        verts = posed.vertices
        if out is None:
            out = verts.new_zeros(len(genders), *verts.shape[1:])
            joints = verts.new_zeros(len(genders), *posed.joints.shape[1:])
        out[idx] = verts
        joints[idx] = posed.joints
    assert out is not None and joints is not None
    return out, joints


def _pose(bodies: BodyFactory, genders: list[str], params: dict[str, Tensor], device: torch.device) -> Tensor:
    """Vertices (B, V, 3) of per-sample parameters, each posed with its gender's body."""
    return _pose_with_joints(bodies, genders, params, device)[0]


class Evaluator:
    """Scores predictors on a benchmark dataset under one protocol.

    Args:
        protocol: the named protocol (joints, root, ground-truth body).
        bodies: ``gender -> body model``; poses ground truth (gendered or neutral, as the protocol
            says) and parameter predictions (neutral unless the prediction names a gender).
        batch_size: samples per forward pass (results do not depend on it).
        num_workers: DataLoader workers.
        device: where bodies and metrics run.
        progress: show a progress bar.
    """

    def __init__(
        self,
        protocol: Protocol,
        bodies: BodyFactory,
        batch_size: int = 64,
        num_workers: int = 0,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.protocol = protocol
        self.bodies = bodies
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = torch.device(device)
        self.progress = progress
        self.regressor = protocol.regressor_for(bodies("neutral")).to(self.device)

    def _prediction(self, out: PredictorOutput, batch_size: int) -> tuple[Tensor, Tensor | None]:
        """(B, Q, V, 3) predicted meshes and (B, Q, 24, 3) skeleton joints (None for vertex outputs)."""
        q = out.num_hypotheses()
        if out.vertices is not None:
            verts = out.vertices.to(self.device).float()
            return (verts if q is not None else verts[:, None]), None
        reps = q or 1
        params = {
            "global_orient": out.global_orient,
            "body_pose": out.body_pose,
            "betas": out.betas,
            "transl": out.transl,
        }
        flat = {}
        for key, value in params.items():
            if value is None:
                flat[key] = torch.zeros(batch_size * reps, 10) if key == "betas" else None
            else:
                flat[key] = value.reshape(batch_size * reps, *value.shape[(2 if q is not None else 1) :])
        gender = (
            out.gender if out.gender is not None and self.protocol.gendered_gt else ["neutral"] * batch_size
        )
        verts, joints = _pose_with_joints(
            self.bodies, [g for g in gender for _ in range(reps)], flat, self.device
        )
        return verts.view(batch_size, reps, *verts.shape[1:]), joints.view(
            batch_size, reps, *joints.shape[1:]
        )

    @torch.no_grad()
    def _score_batch(self, batch: dict[str, Any], predictor: Predictor) -> dict[str, Tensor]:
        b = len(batch["index"])
        genders = [self.protocol.gt_gender(g) for g in batch["gender"]]
        gt_params = {k: batch[k] for k in ("global_orient", "body_pose", "betas", "transl")}
        gt, gt_joints = _pose_with_joints(
            self.bodies, genders, gt_params, self.device
        )  # (B, V, 3), (B, 24, 3)
        out = predictor(batch)
        pred, pred_joints = self._prediction(out, b)  # (B, Q, V, 3), (B, Q, 24, 3) or None
        if not torch.isfinite(pred).all():
            bad = sorted(
                {
                    batch["image"][i]
                    for i in torch.nonzero(~torch.isfinite(pred).flatten(1).all(1)).flatten().tolist()
                }
            )
            raise ValueError(f"predictor returned NaN/inf for {len(bad)} samples, e.g. {bad[:3]}")
        q = pred.shape[1]
        skeleton = {}
        if self.protocol.uses_skeleton and pred_joints is not None:  # FK joints on both sides (emdb24)
            skeleton = {
                "pred_joints": pred_joints.flatten(0, 1),
                "gt_joints": gt_joints.repeat_interleave(q, dim=0),
            }
        errs = self.protocol.errors(
            pred.flatten(0, 1), gt.repeat_interleave(q, dim=0), self.regressor, **skeleton
        )
        errs = {k: v.view(b, q) * MM for k, v in errs.items()}  # (B, Q) each
        if q == 1 and out.deterministic_vertices is None:
            row = {k: v[:, 0] for k, v in errs.items()}
        else:
            row = self._multi_hypothesis_row(pred, gt, errs, out.deterministic_vertices)
        if out.global_rot is not None:
            gt_rot = axis_angle_to_matrix(batch["global_orient"].reshape(b, 3).float()).to(self.device)
            row["rot_err_deg"] = torch.rad2deg(geodesic_angle(out.global_rot.to(self.device).float(), gt_rot))
        return row

    def _multi_hypothesis_row(
        self, pred: Tensor, gt: Tensor, errs: dict[str, Tensor], det: Tensor | None
    ) -> dict[str, Tensor]:
        """Per-sample numbers for Q hypotheses (B, Q, V, 3) and an optional deterministic mesh (B, V, 3)."""
        b, q = pred.shape[:2]
        mean_mesh = mean_of_q(pred)
        mean_errs = self.protocol.errors(mean_mesh, gt, self.regressor)
        if det is not None:
            det = det.to(self.device).float()
        single = mean_errs if det is None else self.protocol.errors(det, gt, self.regressor)
        best = best_of_q(errs)
        row: dict[str, Tensor] = {}
        for name in METRIC_NAMES:
            row[name] = single[name] * MM
            row[f"best_of_q_{name}"] = best[name]
            row[f"mean_of_q_{name}"] = mean_errs[name] * MM
        joints, verts = self.protocol.align(pred.flatten(0, 1), self.regressor)
        row["apd_cm"] = apd(joints.view(b, q, *joints.shape[1:])) * CM
        row["vertex_std_mm"] = per_vertex_std(verts.view(b, q, *verts.shape[1:])).mean(dim=1) * MM
        if det is not None:
            _, det_aligned = self.protocol.align(det, self.regressor)
            _, mean_aligned = self.protocol.align(mean_mesh, self.regressor)
            row["dist_to_det_mm"] = pve(mean_aligned, det_aligned) * MM
        return row

    def run(
        self, dataset: Dataset, predictor: Predictor, predictor_name: str = "predictor"
    ) -> EvaluationResult:
        """Score ``predictor`` on every sample of ``dataset``.

        Args:
            dataset: a :class:`mega.data.benchmarks.index.BenchmarkDataset` (or anything yielding its items).
            predictor: ``batch -> PredictorOutput``.
            predictor_name: label for the summary.
        Returns:
            per-sample values and the summary.
        """
        if len(dataset) == 0:
            raise ValueError("the benchmark dataset is empty; check benchmark.split / benchmark.subset")
        rank, world = _rank_world()
        positions = list(range(rank, len(dataset), world))
        shard = dataset if world == 1 else Subset(dataset, positions)
        loader = DataLoader(
            shard, batch_size=self.batch_size, shuffle=False, drop_last=False, num_workers=self.num_workers
        )
        values: dict[str, list[Tensor]] = {}
        meta: dict[str, list[Any]] = {c: [] for c in META_COLUMNS}
        with tqdm(
            total=len(dataset),
            desc=f"eval {self.protocol.name}",
            disable=not self.progress or rank != 0,
            unit="img",
        ) as bar:
            for batch in loader:
                row = self._score_batch(batch, predictor)
                for key, value in row.items():
                    values.setdefault(key, []).append(value.detach().double().cpu())
                for c in META_COLUMNS:
                    col = batch[c]
                    meta[c].extend(col.tolist() if isinstance(col, Tensor) else list(col))
                bar.update(len(batch["index"]) * world)
        per_sample = {k: torch.cat(v) for k, v in values.items()}
        if world > 1:
            per_sample, meta = _gather_in_order(positions, per_sample, meta, len(dataset), world)
        n = len(meta["index"])
        if n != len(dataset) or any(len(v) != n for v in per_sample.values()):
            raise RuntimeError(f"evaluated {n} samples but the dataset has {len(dataset)}")
        result = EvaluationResult(per_sample, meta)
        result.summary = self._summary(dataset, per_sample, n, predictor_name)
        return result

    def _summary(
        self, dataset: Dataset, per_sample: dict[str, Tensor], n: int, predictor: str
    ) -> dict[str, Any]:
        index = getattr(dataset, "index", None)
        multi = "best_of_q_mpjpe" in per_sample
        source = (
            ("deterministic" if "dist_to_det_mm" in per_sample else "mean_of_q") if multi else "prediction"
        )
        mean = {k: float(v.mean()) if n else float("nan") for k, v in per_sample.items()}
        summary: dict[str, Any] = {
            "dataset": getattr(index, "dataset", type(dataset).__name__),
            "split": getattr(index, "split", None),
            "subset": getattr(index, "subset", None),
            "protocol": self.protocol.name,
            "protocol_info": self.protocol.describe(),
            "predictor": predictor,
            "num_samples": n,
            "num_sequences": len(set(getattr(index, "arrays", {}).get("sequence", [])))
            if index is not None
            else None,
            "units": {"errors": "mm", "apd": "cm"},
            "single_hypothesis_source": source,
            "metrics": {k: mean[k] for k in METRIC_NAMES},
        }
        if "rot_err_deg" in per_sample:
            err = per_sample["rot_err_deg"]
            summary["orientation"] = {
                "rot_err_deg": mean["rot_err_deg"],
                "rot_err_deg_median": float(err.median()),
            }
        if multi:
            summary["best_of_q"] = {k: mean[f"best_of_q_{k}"] for k in METRIC_NAMES}
            summary["mean_of_q"] = {k: mean[f"mean_of_q_{k}"] for k in METRIC_NAMES}
            summary["diversity"] = {
                k: mean[k] for k in ("apd_cm", "vertex_std_mm", "dist_to_det_mm") if k in mean
            }
        return summary


def _rank_world() -> tuple[int, int]:
    """(rank, world size) of the running process group, (0, 1) without one."""
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


def _gather_in_order(
    positions: list[int], per_sample: dict[str, Tensor], meta: dict[str, list[Any]], n: int, world: int
) -> tuple[dict[str, Tensor], dict[str, list[Any]]]:
    """Gather every rank's rows and order them by dataset position.

    Args:
        positions: dataset positions this rank scored, in its order.
        per_sample: name -> (len(positions),) values of this rank.
        meta: column -> len(positions) values of this rank.
        n: dataset length; every position must arrive exactly once.
    Returns:
        per-sample values (n,) and metadata columns in dataset order.
    """
    parts: list[Any] = [None] * world
    tdist.all_gather_object(parts, (positions, per_sample, meta))  # gloo / nccl, CPU tensors pickled
    all_pos = [p for part in parts for p in part[0]]
    if sorted(all_pos) != list(range(n)):
        raise RuntimeError(f"gathered {len(all_pos)} rows for {n} samples (lost or duplicated samples)")
    order = torch.as_tensor(all_pos).argsort()
    keys = next(part[1].keys() for part in parts if part[0])  # a rank may have had no sample
    values = {k: torch.cat([part[1][k] for part in parts if part[0]])[order] for k in keys}
    columns = {c: [v for part in parts for v in part[2][c]] for c in meta}
    columns = {c: [col[i] for i in order.tolist()] for c, col in columns.items()}
    return values, columns


def write_results(result: EvaluationResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``per_sample.csv`` and ``summary.json`` into ``out_dir`` atomically.

    Returns:
        the CSV and JSON paths.
    """
    out_dir = Path(out_dir)
    metrics = list(result.per_sample)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*META_COLUMNS, "protocol", *metrics])
    protocol = result.summary.get("protocol", "")
    for i in range(len(result.meta["index"])):
        values = [f"{float(result.per_sample[m][i]):.4f}" for m in metrics]
        writer.writerow([*(result.meta[c][i] for c in META_COLUMNS), protocol, *values])
    csv_path, json_path = out_dir / "per_sample.csv", out_dir / "summary.json"
    write_text(csv_path, buf.getvalue())
    write_json(json_path, result.summary)
    return csv_path, json_path


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the summary, headed by dataset, protocol and predictor."""
    title = (
        f"{summary['dataset']} ({summary.get('split')}, {summary.get('subset')}) | protocol {summary['protocol']} | "
        f"predictor {summary['predictor']} | {summary['num_samples']} samples"
    )
    lines = [title, "-" * len(title)]
    sections = [
        ("", summary["metrics"]),
        ("best-of-Q ", summary.get("best_of_q", {})),
        ("mean-of-Q ", summary.get("mean_of_q", {})),
    ]
    for prefix, metrics in sections:
        for name, value in metrics.items():
            lines.append(f"{prefix + name.upper().replace('_', '-'):<22}{value:>10.2f} mm")
    if "orientation" in summary:
        o = summary["orientation"]
        lines.append(f"{'ROT-ERR':<22}{o['rot_err_deg']:>10.2f} deg (median {o['rot_err_deg_median']:.1f})")
    for name, value in summary.get("diversity", {}).items():
        label, unit = name.rsplit("_", 1)
        lines.append(f"{label.upper().replace('_', '-'):<22}{value:>10.2f} {unit}")
    if "best_of_q" in summary:
        lines.append(f"(single-hypothesis numbers from: {summary['single_hypothesis_source']})")
    return "\n".join(lines)
