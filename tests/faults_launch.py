"""Launch tests/engine_ddp_worker.py under torchrun for the fault tests (shared by tests/test_faults.py).

``launch(tmp, overrides, mode=..., restarts=...)`` writes the worker's Hydra config and runs torchrun
with 2 gloo ranks in one of the three rendezvous set-ups users run:

    standalone   torchrun --standalone ...
    static       torchrun --master-port=P ...               (no --standalone: the static rendezvous)
    c10d         torchrun --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:P --rdzv-id=ID ...
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from mega.engine.launch import rendezvous_args

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "engine_ddp_worker.py"

# 2 ranks x batch 4 over 40 samples: 5 updates per epoch; 12 updates cross two epochs.
ENGINE = {
    "max_steps": 12, "batch_size": 4, "lr": 1e-2, "warmup_steps": 2, "device": "cpu", "precision": "fp32",
    "log_every": 1, "progress_bar": False, "ckpt_every": 3, "keep_last": 2,
}  # fmt: skip


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
) -> Launch:
    """Run the worker under torchrun with 2 ranks; ``run_dir`` None = ``${mega_run_id:}`` under ``tmp/out``."""
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
    }
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(conf))
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", **(env or {})}
    full_env.pop("MEGA_RUN_ID", None)
    cmd = [
        str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", f"--max-restarts={restarts}",
        "--monitor-interval=0.2", *rendezvous_args(mode, "faults"),
        str(WORKER), "--config-path", str(tmp), "--config-name", name,
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    seconds = time.perf_counter() - start
    results = []
    for rank in (0, 1):
        path = Path(f"{out}.rank{rank}")
        results.append(torch.load(path, weights_only=True) if path.exists() else None)
    return Launch(proc.returncode, proc.stdout + proc.stderr, seconds, results)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bitwise equality of two state dicts."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
