"""Errors a person can read: one error type for expected user errors, and the entry points' handler.

An *expected* error is one the user can fix without reading code: a missing, corrupt or wrong file, a
bad config value, a missing licensed asset, a disk that is full. Code that detects one raises
:class:`UserError` (or a subclass, or one of the data readers' own error types listed in
``KNOWN_USER_ERRORS``) with a message that names the file or field and says what to do.

Every script's entry point is wrapped once, under ``@hydra.main``::

    @hydra.main(config_path="../configs", config_name="train_x", version_base="1.3")
    @entry_point
    def main(cfg): ...

Then a user error prints ``error: <message>`` on stderr (prefixed with ``[rank N]`` under torchrun)
and the process exits with status 1, without a traceback. Anything else (a bug) keeps its full
traceback. ``HYDRA_FULL_ERROR=1`` or ``MEGA_VERBOSE=1`` shows the full traceback for user errors too.
An exception with an integer ``exit_code`` attribute (``mega.engine.preemption.Preempted``) is a clean
stop: its one line is printed (``preempted: ...``) and the process exits with that status.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 1

# Error types of other modules that are user errors by contract (module, class name). They are looked
# up only in modules that are already imported, so listing them costs no import.
KNOWN_USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("mega.body.model_files", "ModelFileError"),
    ("mega.data.motion.amass", "MotionFileError"),
    ("mega.data.errors", "BenchmarkError"),
)


class UserError(Exception):
    """An expected error caused by the user's input; its message names the file/field and the fix.

    ``collective = True`` (on the class or the instance) marks an error that every rank of a
    distributed job raises with the same message; only rank 0 prints it.
    """

    collective: bool = False


class ConfigError(UserError, ValueError):
    """A config value is invalid (the message names the key, the value and what is accepted)."""


def verbose() -> bool:
    """True when ``HYDRA_FULL_ERROR=1`` or ``MEGA_VERBOSE=1``: user errors keep their traceback."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HYDRA_FULL_ERROR", "MEGA_VERBOSE"))


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is an expected user error (see the module docstring)."""
    if isinstance(err, UserError):
        return True
    for module, name in KNOWN_USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


def format_user_error(err: BaseException, label: str = "error") -> str:
    """``"error: <message>"``, prefixed with ``[rank N]`` when the process is one rank of several."""
    message = str(err) or type(err).__name__
    if isinstance(err, KeyError) and len(err.args) == 1:  # KeyError's str() adds quotes
        message = str(err.args[0])
    prefix = f"[rank {os.environ.get('RANK', '0')}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    return f"{prefix}{label}: {message}"


def report_user_error(err: BaseException, hint: bool = True) -> None:
    """Print ``err`` as one message on stderr, with a hint on how to see the traceback."""
    if getattr(err, "collective", False) and os.environ.get("RANK", "0") != "0":
        return  # rank 0 prints the same message
    sys.stdout.flush()
    tail = "\n(set MEGA_VERBOSE=1 or HYDRA_FULL_ERROR=1 for the full traceback)" if hint else ""
    sys.stderr.write(format_user_error(err, getattr(err, "label", "error")) + tail + "\n")
    sys.stderr.flush()


def entry_point(fn: F) -> F:
    """Wrap a script's ``main``: user errors print one message and exit with status 1, without a traceback.

    Place it directly under ``@hydra.main`` (Hydra unwraps it to find the script's config folder).
    Other exceptions, and every exception when :func:`verbose` is on, propagate unchanged. A torchrun
    worker (a process group of several ranks) that ends normally or with one of those statuses leaves
    through :func:`mega.engine.dist.end_worker` (``os._exit`` after flushing: no abort in gloo's teardown).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mega.engine.dist import end_worker  # a torchrun worker leaves here (see end_worker)

        try:
            result = fn(*args, **kwargs)
        except Exception as err:
            code = getattr(err, "exit_code", None)
            if isinstance(code, int):  # a clean stop with its own status (preemption: 75)
                report_user_error(err, hint=False)
                end_worker(code)
                raise SystemExit(code) from None
            if verbose() or not is_user_error(err):
                raise
            report_user_error(err)
            end_worker(EXIT_USER_ERROR)
            raise SystemExit(EXIT_USER_ERROR) from None
        end_worker(0)
        return result

    return wrapper  # type: ignore[return-value]
