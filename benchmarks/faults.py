"""Kill a rank, T times: does ``torchrun --max-restarts`` recover, bitwise, and how much time is lost?

Trains the embedded default (``scripts/train_tokenizer.py``: mesh tokenizer, procedural motion, free
body), made small, with 2 CPU ranks under torchrun. For each rendezvous set-up it runs one uninterrupted
job (the reference), then T jobs in which rank ``--kill-rank`` SIGKILLs itself as it starts update
``--kill-at`` (``engine.fault.kill_rank/at_step``; checkpoints every ``--ckpt-every`` updates) and
torchrun restarts the worker group in place (``--max-restarts=2``). Per trial it records:

    recovered      the job exited 0 after the restart
    bitwise        the final checkpoint's model equals the reference's, tensor for tensor
    kill->resumed  seconds from the kill to the restarted workers' "resumed from" log line
    kill->end      seconds from the kill to the end of the job (a hang would show here; limit: --timeout)
    lost           job time minus the reference's (restart + redone updates)

Set-ups: ``standalone`` (--standalone), ``static`` (no --standalone: torchrun's default static
rendezvous on --master-port), ``c10d`` (--rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:PORT).

    nice -n 10 .venv/bin/python benchmarks/faults.py                      # T=10, standalone and static
    .venv/bin/python benchmarks/faults.py --trials 3 --modes c10d --steps 30
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from mega.engine.launch import rendezvous_args

REPO = Path(__file__).resolve().parents[1]


def run_job(folder: Path, args: argparse.Namespace, mode: str, kill: bool) -> dict:
    """One torchrun job in ``folder``; returns its outcome, timings and final model (or None)."""
    folder.mkdir(parents=True)
    overrides = [
        f"motion.root={args.work / 'motion'}", "motion.sequences.train=4", "motion.sequences.val=2", "motion.sequences.test=2",
        "tokenizer.hidden_dim=64", f"engine.max_steps={args.steps}", "engine.batch_size=16", "engine.warmup_steps=2",
        f"engine.ckpt_every={args.ckpt_every}", "engine.log_every=5", "engine.progress_bar=false", "engine.device=cpu",
        "logger=none", "threads=1", "eval_batch_size=64",
    ]  # fmt: skip
    if kill:
        overrides += [f"engine.fault.kill_rank={args.kill_rank}", f"engine.fault.at_step={args.kill_at}"]
    cmd = [
        str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", "--max-restarts=2",
        *rendezvous_args(mode, "bench"), str(REPO / "scripts" / "train_tokenizer.py"), *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("MEGA_RUN_ID", None)
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=args.timeout)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:  # a hang: the whole process tree is killed by run()
        code, output = (
            "timeout",
            (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace"),
        )
    end = time.time()
    (folder / "torchrun.log").write_text(output)
    runs = sorted((folder / "outputs" / "train_tokenizer").glob("*"))
    result = {
        "code": code,
        "seconds": end - start,
        "model": None,
        "kill_to_resumed": None,
        "kill_to_end": None,
    }
    if len(runs) == 1:
        last = runs[0] / "checkpoints" / "last.pt"
        if code == 0 and last.is_file():
            result["model"] = torch.load(last, weights_only=True)["model"]
        marker = runs[0] / "faults" / f"kill_rank{args.kill_rank}_step{args.kill_at}.fired"
        if kill and marker.is_file():
            killed = marker.stat().st_mtime
            result["kill_to_end"] = end - killed
            resumed = _resumed_time(runs[0] / "train_tokenizer.log", killed)
            result["kill_to_resumed"] = None if resumed is None else resumed - killed
    return result


def _resumed_time(log: Path, after: float) -> float | None:
    """Wall time of the first "resumed from" line logged after ``after`` (Hydra's log file, local time)."""
    if not log.is_file():
        return None
    for line in log.read_text().splitlines():
        m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*resumed from", line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if t >= after - 1:
                return t
    return None


def same(a: dict | None, b: dict | None) -> bool:
    return (
        a is not None and b is not None and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument(
        "--modes", default="standalone,static", help="comma-separated: standalone,static,c10d"
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--ckpt-every", type=int, default=10)
    parser.add_argument("--kill-rank", type=int, default=1)
    parser.add_argument("--kill-at", type=int, default=25)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a job counts as hung")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the runs (default: a temporary one)"
    )
    args = parser.parse_args()
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="mega_faults_"))).resolve()
    print(f"runs in {args.work}; {args.steps} updates, checkpoints every {args.ckpt_every}, rank {args.kill_rank} "
          f"killed at update {args.kill_at}, torchrun --nproc_per_node=2 --max-restarts=2", flush=True)  # fmt: skip
    rows = []
    for mode in args.modes.split(","):
        ref = run_job(args.work / mode / "reference", args, mode, kill=False)
        if ref["model"] is None:
            print(f"{mode}: the uninterrupted reference job failed ({ref['code']}); see "
                  f"{args.work / mode / 'reference' / 'torchrun.log'}", flush=True)  # fmt: skip
            continue
        trials = []
        for t in range(args.trials):
            r = run_job(args.work / mode / f"trial{t:02d}", args, mode, kill=True)
            r["bitwise"] = same(r["model"], ref["model"])
            trials.append(r)
            print(f"  {mode} trial {t + 1}/{args.trials}: exit {r['code']}, bitwise {r['bitwise']}, "
                  f"kill->resumed {_fmt(r['kill_to_resumed'])} s, kill->end {_fmt(r['kill_to_end'])} s, "
                  f"job {r['seconds']:.1f} s (reference {ref['seconds']:.1f} s)", flush=True)  # fmt: skip
        rows.append((mode, ref, trials))
    print(
        "\n| rendezvous | trials | recovered | bitwise equal | hung | kill -> resumed (s, median / max) "
        "| kill -> end (s, max) | time lost per fault (s, median) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode, ref, trials in rows:
        ok = [r for r in trials if r["code"] == 0]
        resumed = [r["kill_to_resumed"] for r in trials if r["kill_to_resumed"] is not None]
        ends = [r["kill_to_end"] for r in trials if r["kill_to_end"] is not None]
        lost = [r["seconds"] - ref["seconds"] for r in ok]
        print(f"| {mode} | {len(trials)} | {len(ok)} | {sum(r['bitwise'] for r in trials)} | "
              f"{sum(r['code'] == 'timeout' for r in trials)} | "
              f"{_fmt(statistics.median(resumed) if resumed else None)} / {_fmt(max(resumed) if resumed else None)} | "
              f"{_fmt(max(ends) if ends else None)} | {_fmt(statistics.median(lost) if lost else None)} |")  # fmt: skip


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
