"""Distributed plumbing: ranks from ``torchrun``'s environment, the device, and the autocast precision.

``torchrun --nproc_per_node=N script.py`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; a plain
``python script.py`` sets none of them and runs as rank 0 of 1 without a process group. The backend is
nccl on CUDA and gloo on CPU, so the same code runs in the CPU tests and on a GPU node.

Restarts in place (``torchrun --max-restarts=K``). Since torch 2.3 torchrun's workers share the agent's
TCP store (``TORCHELASTIC_USE_AGENT_STORE=True``): it lives in the agent, survives a restart, and keeps
the same ``MASTER_ADDR:MASTER_PORT`` (with ``--standalone``, an explicit ``--rdzv-backend=c10d``
endpoint, or the default static rendezvous alike). ``init_process_group`` writes its keys under a fixed
prefix (``default_pg/0/cpu/...``), so after a restart a new worker can read the address that a dead
worker of the previous attempt published: gloo then fails with ``connectFullMesh failed ...
Connection refused`` to a port of the previous attempt, or a rank waits for peers that will never come
(with the default 30-minute timeout, a silent hang). Measured with a bare gloo script on 2 CPU ranks:
1 of 5 restarts succeeded; with a prefix per attempt, 6 of 6.

:func:`setup_dist` therefore starts the process group itself:

- on a store prefixed with the rendezvous id, ``TORCHELASTIC_RESTART_COUNT`` and the try number, so
  every attempt only sees its own keys;
- with a start-up timeout of tens of seconds (``startup_timeout_s``): the connection and a first
  all-reduce must finish in that time, then the collective timeout is raised to ``timeout_s``;
- with a bounded retry of the start-up (``startup_retries``), on a fresh prefix each time; when all
  tries fail the process exits with an error, and torchrun restarts the worker group;
- under a watchdog (``faulthandler``, a C thread that needs no GIL) that dumps every thread's stack
  and exits the process if a start-up still hangs ``startup_timeout_s + 15`` seconds after it began.

Several nodes: the prefix needs every node's agent to count the same restarts. torchrun does not count
restarts caused by a membership change (a node joining an elastic ``--nnodes=MIN:MAX`` job), so for
elastic multi-node jobs also export ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` on every node: torchrun then
gives every rendezvous round a fresh store (rank 0 hosts it on a new port), which removes stale keys at
the source (the bare gloo script above: 5 of 5 restarts with it). This module works with either store.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist

from mega.errors import UserError

log = logging.getLogger(__name__)

WATCHDOG_MARGIN_S = 15.0


class DistStartupError(UserError, RuntimeError):
    """The process group could not start within the start-up timeout, after every retry."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        local_rank: rank on this node (selects the GPU).
        world_size: number of processes.
        device: the device this rank trains on.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when a process group with more than one rank is in use."""
        return self.world_size > 1


def setup_dist(
    device: str = "auto",
    timeout_s: float = 1800.0,
    quiet_workers: bool = True,
    startup_timeout_s: float = 60.0,
    startup_retries: int = 1,
) -> DistInfo:
    """Read ranks from the environment, pick the device and start the process group if needed.

    Args:
        device: "auto" (``cuda:LOCAL_RANK`` when CUDA is available, else CPU), "cpu" or "cuda".
        timeout_s: collective timeout of the process group once it has started.
        quiet_workers: on ranks other than 0, raise the root logger's level to WARNING so that the
            console and the (shared) Hydra log file only get rank 0's info lines.
        startup_timeout_s: how long the start-up (store, connections, a first all-reduce) may take
            before it is abandoned; the environment variable ``MEGA_DIST_STARTUP_TIMEOUT_S`` overrides it.
        startup_retries: further tries of the start-up after a failed one, each on a fresh store prefix.

    Returns:
        The ``DistInfo`` of this process.

    Raises:
        DistStartupError: when every try failed (torchrun then restarts the worker group, if allowed).
    """
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    if world_size > 1 and not tdist.is_initialized():
        startup_timeout_s = float(os.environ.get("MEGA_DIST_STARTUP_TIMEOUT_S", startup_timeout_s))
        start_process_group(dev, rank, world_size, timeout_s, startup_timeout_s, startup_retries)
        global _WORKER
        _WORKER = True
    if quiet_workers and rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    info = DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)
    log.info("rank %d/%d on %s", rank, world_size, dev)
    return info


def store_prefix(attempt: int) -> str:
    """The store prefix of start-up try ``attempt`` of this worker group (same on every rank of it)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return f"mega/pg/{run_id}/restart{restart}/try{attempt}"


def _open_store(rank: int, world_size: int, timeout: timedelta) -> tdist.Store:
    """The TCP store at ``MASTER_ADDR:MASTER_PORT``: torchrun's agent store, or hosted by rank 0."""
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        raise DistStartupError(
            f"WORLD_SIZE={world_size} but MASTER_ADDR/MASTER_PORT are not set: launch with torchrun "
            "(torchrun --nproc_per_node=N script.py ...) or set both variables on every rank"
        )
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    return tdist.TCPStore(
        host,
        int(port),
        world_size,
        is_master=(rank == 0 and not agent_store),
        timeout=timeout,
        wait_for_workers=False,
        multi_tenant=not agent_store,
    )


def start_process_group(
    dev: torch.device,
    rank: int,
    world_size: int,
    timeout_s: float = 1800.0,
    startup_timeout_s: float = 60.0,
    startup_retries: int = 1,
) -> None:
    """Start the default process group on a per-attempt store prefix, failing fast (see the module doc).

    Args:
        dev: this rank's device (nccl on CUDA, gloo otherwise).
        rank: global rank.
        world_size: number of ranks.
        timeout_s: collective timeout once started.
        startup_timeout_s: limit of each start-up try.
        startup_retries: further tries after a failed one.

    Raises:
        DistStartupError: when every try failed.
    """
    backend = "nccl" if dev.type == "cuda" else "gloo"
    startup = timedelta(seconds=startup_timeout_s)
    errors: list[str] = []
    tries = startup_retries + 1
    limit = f"start-up timeout {startup_timeout_s:.0f} s"
    faulthandler.dump_traceback_later(
        tries * startup_timeout_s + WATCHDOG_MARGIN_S, exit=True, file=sys.stderr
    )
    try:
        store = _open_store(rank, world_size, startup)
        for attempt in range(tries):
            prefix = store_prefix(attempt)
            log.info("starting the %s process group (store prefix %s, %s)", backend, prefix, limit)
            try:
                _start_on_prefix(store, prefix, backend, dev, rank, world_size, startup, timeout_s)
                return
            except Exception as err:  # gloo/nccl/store raise RuntimeError, DistError, TimeoutError ...
                first_line = (str(err).splitlines() or [""])[0][:300]
                errors.append(f"try {attempt + 1}: {type(err).__name__}: {first_line}")
                log.warning("rank %d: process-group start-up %s failed: %s", rank, prefix, errors[-1])
                if tdist.is_initialized():
                    tdist.destroy_process_group()
    except DistStartupError:
        raise
    except Exception as err:  # the store itself could not be reached
        errors.append(f"store {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}: {err}")
    finally:
        faulthandler.cancel_dump_traceback_later()
    raise DistStartupError(
        f"rank {rank}/{world_size}: the {backend} process group did not start ({'; '.join(errors)}). Under "
        "torchrun --max-restarts=K the worker group is restarted; otherwise check that every rank was "
        "launched and can reach MASTER_ADDR:MASTER_PORT, or raise MEGA_DIST_STARTUP_TIMEOUT_S"
    )


def _start_on_prefix(
    store: Any,
    prefix: str,
    backend: str,
    dev: torch.device,
    rank: int,
    world_size: int,
    startup: timedelta,
    timeout_s: float,
) -> None:
    """One start-up try on ``store`` under ``prefix``: the process group, one all-reduce of ones (every rank
    is connected and answers), then the collective timeout of the running group. Raises on failure."""
    kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
    pg_store = tdist.PrefixStore(prefix, store)
    tdist.init_process_group(
        backend, store=pg_store, rank=rank, world_size=world_size, timeout=startup, **kwargs
    )
    ready = torch.ones(1, device=dev)
    tdist.all_reduce(ready)
    if int(ready.item()) != world_size:
        raise RuntimeError(f"start-up all-reduce gave {ready.item()}, expected {world_size}")
    tdist.distributed_c10d._set_pg_timeout(timedelta(seconds=timeout_s))
    store.set_timeout(timedelta(seconds=timeout_s))


#: Whether this process joined a process group of several ranks (a torchrun worker): see :func:`end_worker`.
_WORKER = False


def end_worker(code: int) -> None:
    """End a torchrun worker now with exit status ``code`` (no-op in a process that started no group).

    DDP keeps its gloo process group alive after ``destroy_process_group`` (its connection and work
    threads, ``gloo_tcp_loop`` / ``pt_gloo_runloop``, still run; PyTorch 2.13), and tearing them down at
    interpreter exit sometimes aborts the process ("terminate called without an active exception",
    SIGABRT): measured on 2 gloo ranks, about 1 launch in 40 on a busy machine, after the last update
    and its checkpoint. torchrun then reports a finished run as failed (or a preempted one as crashed
    instead of exit 75). So a worker, once its script is done, destroys the group, flushes its logs and
    output and leaves with ``os._exit``, skipping the teardown. Called by :func:`mega.errors.entry_point`.
    """
    if not _WORKER:
        return
    cleanup_dist()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken: nothing left to write
            pass
    os._exit(code)


def cleanup_dist() -> None:
    """Destroy the process group (no-op without one). Call it in a ``finally`` at the end of a script."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a copy; identity without a process group).

    Args:
        x: any-shaped floating tensor on this rank's device.

    Returns:
        Tensor of the same shape holding the mean over ranks.
    """
    if not (tdist.is_available() and tdist.is_initialized()):
        return x.clone()
    y = x.detach().clone()
    tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
    return y / tdist.get_world_size()


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """Element-wise max of ``x`` over ranks (a copy; identity without a process group)."""
    y = x.detach().clone()
    if tdist.is_available() and tdist.is_initialized():
        tdist.all_reduce(y, op=tdist.ReduceOp.MAX)
    return y


def all_gather_object(obj: Any) -> list[Any]:
    """Picklable ``obj`` of every rank, indexed by rank (``[obj]`` without a process group)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain fp32, no autocast).

    "auto" picks bf16 where the hardware runs bf16 matmuls natively: CUDA GPUs with bf16 support, and
    CPUs with AMX or AVX512-BF16 (measured on this project's CPU: a 512x512 bf16 matmul is ~2.7x faster
    than fp32 on one core). Elsewhere "auto" means fp32.

    Args:
        precision: "auto", "bf16" or "fp32".
        device: the training device.

    Returns:
        ``torch.bfloat16`` or None.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        native = [
            getattr(torch.cpu, f, lambda: False)()
            for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        ]
        return torch.bfloat16 if any(native) else None
    return None
