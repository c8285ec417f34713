"""Checkpoint files: atomic writes, a content hash checked on load, clear errors, a short history.

A checkpoint is one ``torch.save`` dict written atomically (temporary file in the same folder, fsync,
``os.replace``), so a crash while writing never leaves a half-written ``last.pt``. It loads with
``weights_only=True``: only tensors and plain Python containers, no pickled code.

Integrity: :func:`save_checkpoint` records a hash of the content, :func:`load_checkpoint` recomputes it,
so a file damaged after it was written (a flipped block, a partial copy) is refused with its name.
A write that fails (e.g. ``ENOSPC``: disk full) leaves the previous file untouched and says so.
What a training checkpoint holds and how a run resumes from one: :mod:`mega.engine.checkpoint`.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from mega.errors import UserError

log = logging.getLogger(__name__)

FORMAT = "mega.engine.checkpoint/1"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file is missing, corrupt, truncated or not an engine checkpoint."""


class CorruptCheckpointError(CheckpointError):
    """The file cannot be read or fails its integrity check (an older checkpoint may be used instead).

    ``reason`` holds the short cause ("truncated or not a checkpoint (...)", "content hash differs").
    """

    reason: str = ""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint is readable but belongs to another config (model shapes, data order)."""

    collective = True  # every rank compares the same file with the same config


class DiskFullError(CheckpointError):
    """Writing a checkpoint failed for lack of space; the previous checkpoint is intact."""


def content_hash(state: Any) -> str:
    """sha256 over every tensor's dtype, shape and bytes and every other value's repr, in key order."""
    h = hashlib.sha256()
    for key, leaf in _leaves(state, ""):
        h.update(key.encode())
        if isinstance(leaf, torch.Tensor):
            t = leaf.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()


def _leaves(obj: Any, key: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            yield from _leaves(obj[k], f"{key}/{k}")
    elif isinstance(obj, (list, tuple)):
        yield f"{key}:{type(obj).__name__}{len(obj)}", None
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{key}/{i}")
    else:
        yield key, obj


def history_paths(path: Path, keep: int) -> list[Path]:
    """``[last.pt, last-1.pt, ..., last-(keep-1).pt]`` for ``path`` = ``.../last.pt``."""
    return [path] + [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, keep)]


def save_checkpoint(
    path: str | Path, state: Mapping[str, Any], keep: int = 1, _fail_after: int | None = None
) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``), with its content hash.

    Args:
        path: destination file; its folder is created if needed.
        state: tensors and plain containers (what ``torch.load(weights_only=True)`` accepts).
        keep: how many versions to keep: the older ones move to ``<stem>-1<suffix>``, ``-2``, ...
        _fail_after: fault injection for tests: raise ``ENOSPC`` after writing this many bytes.

    Returns:
        The destination path.

    Raises:
        DiskFullError: the disk (or quota) is full; ``path`` and its history are left as they were.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    state = {k: v for k, v in state.items() if k != "integrity"}
    state["integrity"] = {"sha256": content_hash(state)}
    try:
        with open(tmp, "wb") as f:
            torch.save(state, _FailingWriter(f, _fail_after) if _fail_after is not None else f)
            f.flush()
            os.fsync(f.fileno())
        _shift_history(path, keep)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as err:  # torch.save wraps the file's OSError in a RuntimeError (as __context__)
        code = _disk_full_errno(err)
        if code is not None:
            free = shutil.disk_usage(path.parent).free
            kept = [str(p) for p in history_paths(path, keep) if p.exists()]
            raise DiskFullError(
                f"disk full while writing checkpoint {path} ({os.strerror(code)}; {free / 2**20:.0f} MiB free "
                f"on {path.parent}). Nothing was replaced: "
                + (
                    f"the earlier checkpoints are intact ({', '.join(kept)})"
                    if kept
                    else "no earlier checkpoint exists"
                )
                + ". Free some space (or lower engine.keep_last) and resume with the same command"
            ) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _disk_full_errno(err: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT when ``err`` or an exception in its cause/context chain is that OSError."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err.errno
        if "No space left on device" in str(err):
            return errno.ENOSPC
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


class _FailingWriter:
    """A file wrapper that raises ``OSError(ENOSPC)`` once ``limit`` bytes were written (fault injection)."""

    def __init__(self, f: Any, limit: int) -> None:
        self.f, self.left = f, limit

    def write(self, data: bytes) -> int:
        if len(data) > self.left:
            self.f.write(bytes(data)[: self.left])
            self.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _shift_history(path: Path, keep: int) -> None:
    """Move ``last-i`` to ``last-(i+1)`` and link ``last`` to ``last-1``; ``last`` itself stays in place."""
    if keep <= 1 or not path.exists():
        return
    names = history_paths(path, keep)
    for older, newer in zip(reversed(names[1:]), reversed(names[:-1])):
        if newer == path:
            link = path.with_name(f".{older.name}.link-{os.getpid()}")
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)
            except OSError:  # a file system without hard links
                shutil.copyfile(path, link)
            os.replace(link, older)
        elif newer.exists():
            os.replace(newer, older)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", required: tuple[str, ...] = ()
) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, with clear errors.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded.
        required: keys that must be present (e.g. ``("model", "step")``).

    Returns:
        The saved dict (with its ``integrity`` entry).

    Raises:
        CheckpointError: naming the file and what to do when it is missing or incomplete;
            ``CorruptCheckpointError`` when it is unreadable or its content hash differs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path, or start without resuming")
    advice = (
        "Delete or move it and resume from an earlier checkpoint in the same folder (engine.resume=<file>), "
        "or start a fresh run."
    )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip/pickle errors differ by how the file was damaged
        detail = (str(err).splitlines() or [""])[0].split(". ")[0][:160]
        corrupt = CorruptCheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be read ({type(err).__name__}: {detail}). {advice}"
        )
        corrupt.reason = f"unreadable ({type(err).__name__}: {detail})"
        raise corrupt from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict")
    recorded = state.get("integrity", {}).get("sha256") if isinstance(state.get("integrity"), dict) else None
    if recorded is not None:
        actual = content_hash({k: v for k, v in state.items() if k != "integrity"})
        if actual != recorded:
            corrupt = CorruptCheckpointError(
                f"checkpoint {path} is corrupt: its content hash ({actual[:12]}...) differs from the one recorded "
                f"when it was written ({recorded[:12]}...). {advice}"
            )
            corrupt.reason = "its content hash differs from the recorded one"
            raise corrupt
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {missing} (keys present: {sorted(state)}); "
            "it was not written by mega.engine or is from an incompatible version"
        )
    return state
