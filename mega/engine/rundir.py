"""One run directory for every rank: the ``${mega_run_id:}`` resolver for ``hydra.run.dir``.

Under ``torchrun`` every rank runs the ``@hydra.main`` entry point and composes its own config before
any process group exists, so Hydra's usual ``${now:...}`` run directory can differ between ranks that
start a second apart (hydra issue #2070). The primary configs therefore write

    hydra:
      run:
        dir: outputs/${hydra:job.name}/${mega_run_id:}

and the scripts call :func:`register_resolvers` before ``main()``. ``${mega_run_id:}`` is, in order:

1. ``$MEGA_RUN_ID`` when set (a name you choose, e.g. a SLURM job id; identical on every rank).
2. A local timestamp ``YYYY-MM-DD_HH-MM-SS`` when the process is not under torchrun (``WORLD_SIZE`` unset
   or 1).
3. Under torchrun with the agent's store (the default for both the c10d and the static rendezvous), the
   timestamp of the *first rank to ask*, agreed through torchrun's TCP store at
   ``MASTER_ADDR:MASTER_PORT`` with one compare-and-set; every rank gets the same string. Workers that
   torchrun restarts (``--max-restarts``) get the same directory again, so ``engine.resume=auto``
   continues the run from its ``checkpoints/last.pt``.
4. Otherwise ``$TORCHELASTIC_RUN_ID`` (the ``--rdzv-id``), unless it is the literal "none" that torchrun
   uses when no id is given; then a clear error says what to set.

An explicit ``hydra.run.dir=...`` override always works as well (the same path on every rank).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from omegaconf import OmegaConf

RESOLVER = "mega_run_id"
STORE_KEY = "mega/run_id"
_cache: dict[str, str] = {}


def _timestamp() -> str:
    return time.strftime("%Y-%m-%d_%H-%M-%S")


def _agree_through_store(proposal: str, timeout_s: float) -> str:
    """Every rank proposes; the first proposal stored under ``STORE_KEY`` wins and is returned to all."""
    from torch.distributed import TCPStore

    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))
    # compare_set with expected "" sets the key only when it is absent and returns the stored value.
    agreed = store.compare_set(STORE_KEY, "", proposal)
    return agreed.decode() if isinstance(agreed, bytes) else str(agreed)


def run_id(timeout_s: float = 60.0) -> str:
    """The run id shared by every rank of this launch (see the module docstring for the rules).

    Args:
        timeout_s: how long to wait for torchrun's store.

    Returns:
        A string usable as a directory name, identical on every rank and cached for the process.
    """
    if "id" in _cache:
        return _cache["id"]
    env = os.environ
    if env.get("MEGA_RUN_ID"):
        rid = env["MEGA_RUN_ID"]
    elif int(env.get("WORLD_SIZE", "1")) <= 1:
        rid = _timestamp()
    elif env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and "MASTER_ADDR" in env:
        rid = _agree_through_store(_timestamp(), timeout_s)
    elif env.get("TORCHELASTIC_RUN_ID", "none") not in ("", "none"):
        rid = env["TORCHELASTIC_RUN_ID"]
    else:
        raise RuntimeError(
            "the ranks of this distributed launch cannot agree on a run directory: there is no torchrun "
            "agent store and no rendezvous id (TORCHELASTIC_RUN_ID is unset or 'none'). Set MEGA_RUN_ID=<name> "
            "in every rank's environment, pass --rdzv-id=<name> to torchrun, or override hydra.run.dir=<dir>."
        )
    _cache["id"] = rid
    return rid


def register_resolvers() -> None:
    """Register ``${mega_run_id:}`` with OmegaConf (idempotent). Call it before ``@hydra.main`` runs."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, run_id, use_cache=True)
