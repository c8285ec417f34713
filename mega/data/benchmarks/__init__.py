"""Benchmarks: evaluation data as a compact index of ground truth per person (3DPW, EMDB, the synthetic
test split) and the datasets the evaluator reads.

``BENCHMARKS`` is the one registry of this room: name -> index builder that reads a benchmark's
original files (:func:`build_index`; ``scripts/prepare_data.py`` saves the index once). The index format
and the dataset over it: :mod:`.index`; the readers: :mod:`.threedpw`, :mod:`.emdb`,
:mod:`.synthetic_images`; what ``scripts/eval.py`` evaluates (crops for a model): :mod:`.eval_views`.
"""

from __future__ import annotations

from typing import Any

from mega.data.benchmarks.emdb import build_emdb_index
from mega.data.benchmarks.index import BenchmarkDataset, BenchmarkIndex, make_body_factory
from mega.data.benchmarks.synthetic_images import build_synthetic_index
from mega.data.benchmarks.threedpw import build_3dpw_index
from mega.registry import Registry

BENCHMARKS = Registry("benchmark")
BENCHMARKS.register("3dpw")(build_3dpw_index)
BENCHMARKS.register("emdb")(build_emdb_index)
BENCHMARKS.register("synthetic_images")(build_synthetic_index)


def build_index(name: str, **kwargs: Any) -> BenchmarkIndex:
    """Read a benchmark's original files into an index (``3dpw``, ``emdb``, ``synthetic_images``; kwargs:
    the reader's)."""
    return BENCHMARKS.build(name, **kwargs)


__all__ = ["BENCHMARKS", "BenchmarkDataset", "BenchmarkIndex", "build_index", "make_body_factory"]
