"""Errors of the data layer: a file is missing, unreadable or malformed (the message names file and field).

Shared by the three rooms and :mod:`mega.data.crop`; the image-specific ones (``ImageDataError``,
``MissingImageError``) derive from these in :mod:`mega.data.crop`.
"""

from __future__ import annotations


class BenchmarkError(ValueError):
    """A data or benchmark file is missing, unreadable or malformed; the message names file and field."""


class MissingFileError(BenchmarkError, FileNotFoundError):
    """A data root, annotation file, image or index does not exist."""
