"""Bad training samples are skipped within a budget, so one broken file does not end a long run.

With ``train(..., max_bad_fraction=f)`` (scripts: ``images.max_bad_fraction``) the training set is read
through :class:`SkippingDataset`. An item whose reading raises a *user* error (a corrupt or missing
image, a bad label row: the readers' one-line errors, see :func:`mega.errors.is_user_error`) is
replaced by another index drawn from ``(seed, index, attempt)`` only, so the replacement is the same on
every rank, in every DataLoader worker and after a resume: runs stay exact. Bugs (any other error)
still stop the run.

After each update the ranks exchange what they met (:meth:`BadSampleGuard.sync`, collective): each bad
sample is logged once with its file and reason, counted (``train/bad_samples`` in the logged metrics)
and listed in ``<run_dir>/bad_samples.tsv`` (index, replacement, reason; rewritten atomically by rank 0;
read back when the run resumes). The files themselves are never touched. When more than
``floor(f * len(dataset))`` distinct samples are bad, every rank stops with
:class:`BadSampleBudgetError` naming the list.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from mega.atomic import write_text
from mega.engine.dist import DistInfo, all_gather_object, all_reduce_max
from mega.engine.rng import stream_seed
from mega.errors import UserError, is_user_error

log = logging.getLogger(__name__)

LIST_NAME = "bad_samples.tsv"
Report = tuple[int, int, str]  # (bad index, the index read instead (-1: none yet), reason)


class BadSampleBudgetError(UserError):
    """More training samples were unreadable than ``images.max_bad_fraction`` allows."""

    collective = True


def replacement(seed: int, index: int, attempt: int, n: int) -> int:
    """The index read instead of ``index`` at try ``attempt`` (>= 1): a function of its arguments only."""
    return stream_seed(seed, 0, f"bad_sample/{index}/{attempt}") % n


class SkippingDataset(Dataset):
    """Item ``i`` -> ``(sample, reports)``: the sample of ``i``, or of its replacement when ``i`` is unreadable.

    Args:
        dataset: map-style dataset.
        seed: seeds the replacements.
        max_tries: indices tried for one item before giving up (each failure is reported).
    """

    def __init__(self, dataset: Dataset, seed: int, max_tries: int = 8) -> None:
        self.dataset, self.seed, self.max_tries = dataset, seed, max_tries

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[Any, list[Report]]:
        reports: list[Report] = []
        candidate = index
        for attempt in range(1, self.max_tries + 1):
            try:
                return self.dataset[candidate], reports
            except Exception as err:
                if not is_user_error(err):
                    raise
                reason = " ".join(str(err).split()) or type(err).__name__
                candidate_next = replacement(self.seed, index, attempt, len(self))
                reports.append((candidate, candidate_next, reason))
                candidate = candidate_next
        raise BadSampleBudgetError(
            f"sample {index} and its {self.max_tries - 1} replacements are all unreadable; the first: "
            f"{reports[0][2]}"
        )


class _CollateWithReports:
    """Collates the samples and passes the reports alongside: ``(batch, reports)``."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None) -> None:
        self.collate_fn = collate_fn or default_collate

    def __call__(self, items: list[tuple[Any, list[Report]]]) -> tuple[Any, list[Report]]:
        return self.collate_fn([sample for sample, _ in items]), [r for _, reports in items for r in reports]


class BadSampleGuard:
    """This rank's side of the skipping: wraps the data, gathers the reports, keeps the list and the budget.

    Args:
        dataset: the training set (map-style).
        max_bad_fraction: distinct bad samples allowed, as a fraction of ``len(dataset)``.
        run_dir: where ``bad_samples.tsv`` is written (and read back on resume).
        dist: this rank.
        seed: seeds the replacements.
    """

    def __init__(
        self, dataset: Dataset, max_bad_fraction: float, run_dir: str | Path, dist: DistInfo, seed: int
    ) -> None:
        if not 0 <= float(max_bad_fraction) < 1:
            raise UserError(f"images.max_bad_fraction must be in [0, 1), got {max_bad_fraction}")
        self.fraction, self.dist = float(max_bad_fraction), dist
        self.dataset = SkippingDataset(dataset, seed)
        self.budget = math.floor(self.fraction * len(dataset))
        self.path = Path(run_dir) / LIST_NAME
        self.known: dict[int, Report] = {r[0]: r for r in _read_list(self.path)}
        self._pending: list[Report] = []

    def collate(self, collate_fn: Callable[[list[Any]], Any] | None) -> _CollateWithReports:
        """The DataLoader collate function for :attr:`dataset` (wraps ``collate_fn``)."""
        return _CollateWithReports(collate_fn)

    def unwrap(self, batches: Iterator[tuple[Any, list[Report]]]) -> Iterator[Any]:
        """The batches alone; the reports are kept for :meth:`sync`."""
        for batch, reports in batches:
            self._pending.extend(reports)
            yield batch

    def sync(self) -> int:
        """Collective, after each update: merge every rank's reports, log and list new ones, check the budget.

        Returns:
            The number of distinct bad samples so far.

        Raises:
            BadSampleBudgetError: on every rank when the count exceeds the budget.
        """
        mine, self._pending = self._pending, []
        if self.dist.is_distributed:
            if all_reduce_max(torch.tensor(float(len(mine)), device=self.dist.device)).item() == 0:
                return len(self.known)
            mine = [r for part in all_gather_object(mine) for r in part]
        new = {}
        for report in mine:
            if report[0] not in self.known and report[0] not in new:
                new[report[0]] = report
        if not new:
            return len(self.known)
        self.known.update(new)
        count = len(self.known)
        if self.dist.is_main:
            for index, instead, reason in new.values():
                log.warning(
                    "bad training sample %d skipped (read %d instead): %s [%d bad of %d allowed]",
                    index,
                    instead,
                    reason,
                    count,
                    self.budget,
                )
            rows = ["index\treplacement\treason"] + [
                f"{i}\t{j}\t{why}" for i, j, why in sorted(self.known.values())
            ]
            write_text(self.path, "\n".join(rows) + "\n")
        if count > self.budget:
            raise BadSampleBudgetError(
                f"{count} of {len(self.dataset)} training samples are unreadable, more than images.max_bad_fraction="
                f"{self.fraction:g} allows ({self.budget}); they are listed in {self.path} (the files were left as "
                "they are). Repair or remove them, or raise images.max_bad_fraction, then run the same command to "
                "resume"
            )
        return count


def _read_list(path: Path) -> list[Report]:
    """The rows of a ``bad_samples.tsv`` written by an earlier part of the run (none if absent)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        index, instead, reason = (line.split("\t", 2) + ["", ""])[:3]
        if index.strip().lstrip("-").isdigit():
            rows.append((int(index), int(instead) if instead.strip().lstrip("-").isdigit() else -1, reason))
    return rows
