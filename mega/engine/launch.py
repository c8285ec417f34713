"""torchrun command lines for local multi-process runs (fault tests and benchmarks).

Three rendezvous set-ups, the ones users launch with: ``standalone`` (``--standalone``), ``static``
(an explicit master address and a free port) and ``c10d`` (an explicit ``--rdzv-backend=c10d``
endpoint on a free port, with a job id).
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendezvous_args(mode: str, job: str = "mega") -> list[str]:
    """torchrun arguments of a rendezvous set-up: ``standalone`` | ``static`` | ``c10d``."""
    if mode == "standalone":
        return ["--standalone"]
    if mode == "static":
        return ["--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    if mode == "c10d":
        return [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{free_port()}",
            f"--rdzv-id={job}{os.getpid()}",
        ]
    raise ValueError(f"unknown rendezvous mode {mode!r}: standalone | static | c10d")
