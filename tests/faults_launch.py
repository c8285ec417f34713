"""Launch tests/engine_ddp_worker.py under torchrun for the fault tests (shared by tests/test_faults.py).

``launch(tmp, overrides, mode=..., restarts=...)`` writes the worker's Hydra config and runs torchrun
with 2 gloo ranks in one of the three rendezvous set-ups users run:

    standalone   torchrun --standalone ...
    static       torchrun --master-port=P ...               (no --standalone: the static rendezvous)
    c10d         torchrun --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:P --rdzv-id=ID ...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from fixtures_engine import small_engine

from mega.engine.launch import rendezvous_args

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "engine_ddp_worker.py"

# 2 ranks x batch 4 over 40 samples: 5 updates per epoch; 12 updates cross two epochs.
ENGINE = small_engine(max_steps=12, warmup_steps=2, device="cpu", ckpt_every=3, keep_last=2)


@dataclass
class Launch:
    """What a torchrun launch left: exit status, output, seconds, and each rank's result (if written)."""

    returncode: int
    output: str
    seconds: float
    results: list[dict | None]

    def weights(self, rank: int = 0) -> dict[str, torch.Tensor]:
        result = self.results[rank]
        assert result is not None, self.output[-4000:]
        return result["model"]


def launch(
    tmp: Path,
    name: str,
    engine: dict | None = None,
    mode: str = "standalone",
    restarts: int = 0,
    run_dir: Path | None = None,
    model: str = "mlp",
    timeout: float = 120.0,
    env: dict | None = None,
    nproc: int = 2,
    interrupt: tuple[str, int, str] | None = None,
    extra: dict | None = None,
    torchrun_args: tuple[str, ...] = (),
) -> Launch:
    """Run the worker under torchrun with 2 ranks; ``run_dir`` None = ``${mega_run_id:}`` under ``tmp/out``.

    ``nproc=1`` runs the worker as a plain process (no torchrun). ``interrupt=(text, signal, target)``
    sends ``signal`` once ``text`` appears in the output, to the launched process (``"launcher"``: torchrun
    or the single worker) or to it and all its descendants (``"all"``: as SLURM signals every process of
    a job step; torchrun starts its workers in sessions of their own). ``extra``: more top-level keys of
    the worker's config; ``torchrun_args``: more torchrun options.
    """
    out = tmp / f"{name}.result"
    conf = {
        "defaults": [{"engine": "default"}, "_self_"],
        "hydra": {
            "searchpath": [f"file://{REPO / 'configs'}"],
            "run": {"dir": str(run_dir) if run_dir else f"{tmp}/out/${{mega_run_id:}}"},
        },
        "engine": {**ENGINE, **(engine or {})},
        "model": model,
        "out": str(out),
        **(extra or {}),
    }
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(conf))
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", **(env or {})}
    full_env.pop("MEGA_RUN_ID", None)
    worker = [str(WORKER), "--config-path", str(tmp), "--config-name", name]
    cmd = (
        [
            str(Path(sys.executable).with_name("torchrun")),
            f"--nproc_per_node={nproc}",
            f"--max-restarts={restarts}",
            "--monitor-interval=0.2",
            *rendezvous_args(mode, "faults"),
            *torchrun_args,
            *worker,
        ]
        if nproc > 1
        else [sys.executable, *worker]
    )
    start = time.perf_counter()
    if interrupt is None:
        proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    else:
        returncode, output = _run_interrupted(cmd, full_env, tmp, timeout, *interrupt)
    seconds = time.perf_counter() - start
    results = []
    for rank in range(nproc):
        path = Path(f"{out}.rank{rank}")
        results.append(torch.load(path, weights_only=True) if path.exists() else None)
    return Launch(returncode, output, seconds, results)


def _run_interrupted(cmd: list[str], env: dict, cwd: Path, timeout: float, text: str, sig: int, target: str):
    """Run ``cmd`` in its own session, send ``sig`` when ``text`` appears; (exit status, merged output)."""
    env = {**env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    lines, sent = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not sent and text in line:
                for pid in [proc.pid, *_descendants(proc.pid)] if target == "all" else [proc.pid]:
                    os.kill(pid, sig)
                sent = True
        proc.wait()
    finally:
        timer.cancel()
    assert sent, f"'{text}' never appeared:\n" + "".join(lines)[-4000:]
    return proc.returncode, "".join(lines)


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bitwise equality of two state dicts."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
