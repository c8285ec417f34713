"""Data: files -> batches.

``DATASETS`` is the registry of the ``data`` config group (group name == registry name). Modules
register into it when imported; motion data (``synthetic_motion``, ``amass``, ``bedlam``) lives in
:mod:`mega.data.motion.dataset`, so import that module (or call :func:`mega.data.motion.dataset.build_motion_dataset`)
before building a motion dataset by name.
"""

from __future__ import annotations

from mega.registry import Registry

DATASETS = Registry("data")
