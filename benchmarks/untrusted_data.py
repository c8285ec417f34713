"""Data you did not make: crafted pickles, fuzzed readers, bad training samples and preemption, measured.

Four tables (the tests run small versions of each; this runs the large ones):

1. crafted pickles: for each user-supplied pickle format (SMPL ``.pkl``, 3DPW ``.pkl``, a shard's
   ``data.pyd``, an npz object array) a file whose payload would create a marker file; was it executed,
   and what did the reader say (tests/fixtures_untrusted.py). Run it with ``PYTHONPATH`` on an older
   checkout to see "before".
2. fuzzed readers: ``--budget`` mutated files per reader (tests/fuzz_readers.py, in a child process under
   a memory limit): cases, outcomes, the slowest case.
3. bad training samples: tests/engine_ddp_worker.py on sample files of which 0, 1 or budget+1 are broken
   (``max_bad_fraction=0.05`` of 40 samples: 2 allowed), one process and 2 ranks under torchrun.
4. preemption: SIGTERM (to the process / to torchrun) and SIGUSR1 (to every process, torchrun passing it
   on) in the middle of a run, then the same command again: exit status, the update it stopped after,
   and whether the final weights equal an uninterrupted run's bit for bit.

    nice -n 10 .venv/bin/python benchmarks/untrusted_data.py                 # all four, budget 300
    .venv/bin/python benchmarks/untrusted_data.py --only pickles,fuzz --budget 1000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def crafted_pickles() -> None:
    from fixtures_untrusted import CRAFTED, read_with_project_reader

    import mega

    print(f"\n## Crafted pickles (mega from {Path(mega.__file__).parent})\n")
    print("| format | payload executed | what the reader said |\n|---|---|---|")
    for kind, make in CRAFTED.items():
        with tempfile.TemporaryDirectory() as tmp:
            marker = Path(tmp) / "marker"
            path = make(Path(tmp) / "data", marker)
            try:
                read_with_project_reader(kind, path)
                outcome = "read it"
            except Exception as err:  # noqa: BLE001 (reported)
                outcome = f"{type(err).__name__}: {str(err).replace(tmp, '<tmp>')[:110]}"
            print(f"| {kind} | {'YES' if marker.exists() else 'no'} | {outcome} |")


def fuzz(budget: int, seed: int) -> None:
    from fuzz_readers import READERS

    print(f"\n## Fuzzed readers ({budget} cases per reader, seed {seed})\n")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cases.json"
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "tests" / "fuzz_readers.py"),
                "--budget",
                str(budget),
                "--seed",
                str(seed),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            errors="replace",
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        seconds = time.perf_counter() - start
        if not out.exists():
            progress = out.with_suffix(".progress")
            print(
                f"the fuzz process died (exit {proc.returncode}) in {progress.read_text() if progress.exists() else '?'}"
            )
            print(proc.stderr[-3000:])
            return
        cases = json.loads(out.read_text())
    print(
        "| reader | cases | read | user error (one line, names the file) | failures | slowest case (CPU ms) | mutations |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in READERS:
        mine = [c for c in cases if c["reader"] == name]
        outcomes = Counter("FAIL" if c["outcome"].startswith("FAIL") else c["outcome"] for c in mine)
        kinds = Counter(c["mutation"].split(":")[0] if ":" in c["mutation"] else "bytes" for c in mine)
        print(
            f"| {name} | {len(mine)} | {outcomes['read']} | {outcomes['user error']} | {outcomes['FAIL']} | "
            f"{1000 * max(c['cpu_s'] for c in mine):.1f} | {dict(kinds)} |"
        )
    for c in [c for c in cases if c["outcome"].startswith("FAIL")][:20]:
        print(f"  FAIL {c['reader']} {c['mutation']}: {c['outcome']}")
    print(f"\n{len(cases)} cases in {seconds:.0f} s (exit status {proc.returncode})")


def bad_samples(work: Path) -> None:
    from engine_ddp_worker import write_sample_files
    from faults_launch import launch

    print("\n## Bad training samples (40 samples, max_bad_fraction=0.05: 2 allowed; 12 updates)\n")
    print("| ranks | bad files | exit | updates done | bad_samples counted | list rows | what happened |")
    print("|---|---|---|---|---|---|---|")
    for nproc in (1, 2):
        for bad in ({}, {9: "truncated"}, {5: "truncated", 17: "text", 30: "truncated"}):
            tmp = work / f"bad{nproc}_{len(bad)}"
            tmp.mkdir(parents=True)
            data = write_sample_files(tmp / "data", bad)
            run = launch(
                tmp,
                "run",
                {"ckpt_every": 0},
                run_dir=tmp / "run",
                nproc=nproc,
                timeout=300,
                extra={"data_dir": str(data), "max_bad_fraction": 0.05},
            )
            steps = [int(m) for m in re.findall(r"step (\d+)/12", run.output)]
            counted = re.findall(r"bad_samples (\d+)", run.output)
            listed = tmp / "run" / "bad_samples.tsv"
            rows = len(listed.read_text().splitlines()) - 1 if listed.exists() else 0
            said = next(
                (ln.split("error: ", 1)[1][:90] for ln in run.output.splitlines() if "error: " in ln),
                "finished" if run.returncode == 0 else "?",
            )
            print(
                f"| {nproc} | {len(bad)} | {run.returncode} | {max(steps, default=0)} | "
                f"{counted[-1] if counted else '-'} | {rows} | {said.replace(str(tmp), '<tmp>')} |"
            )


def preemption(work: Path) -> None:
    from engine_ddp_worker import write_sample_files
    from faults_launch import launch, same_weights

    handle = ("--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",)
    print("\n## Preemption (12 updates, one broken sample file, no periodic checkpoint)\n")
    print(
        "| ranks | signal (to) | exit | stopped after update | resumed run | bitwise equal to uninterrupted |"
    )
    print("|---|---|---|---|---|---|")
    for nproc in (1, 2):
        base = work / f"pre{nproc}"
        base.mkdir(parents=True)
        data = write_sample_files(base / "data", {9: "truncated"})
        extra = {"data_dir": str(data), "max_bad_fraction": 0.05}
        ref = launch(
            base, "ref", {"ckpt_every": 0}, run_dir=base / "ref", nproc=nproc, timeout=300, extra=extra
        )
        for sig, target in ((signal.SIGTERM, "launcher"), (signal.SIGUSR1, "all")):
            run_dir = base / f"run_{sig.name}"
            first = launch(
                base,
                f"{sig.name}_a",
                {"ckpt_every": 0},
                run_dir=run_dir,
                nproc=nproc,
                timeout=300,
                extra={**extra, "sleep_s": 0.2},
                interrupt=("step 4/12", sig, target),
                torchrun_args=handle,
            )
            stopped = re.findall(r"stopped after update (\d+)", first.output)
            again = launch(
                base,
                f"{sig.name}_b",
                {"ckpt_every": 0},
                run_dir=run_dir,
                nproc=nproc,
                timeout=300,
                extra=extra,
            )
            equal = again.returncode == 0 and all(
                same_weights(again.weights(r), ref.weights(0)) for r in range(nproc)
            )
            to = "process" if nproc == 1 else ("torchrun" if target == "launcher" else "every process")
            print(
                f"| {nproc} | {sig.name} ({to}) | {first.returncode} | {stopped[0] if stopped else '-'} | "
                f"exit {again.returncode} | {'yes' if equal else 'NO'} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="pickles,fuzz,bad,preempt")
    parser.add_argument("--budget", type=int, default=300, help="fuzz cases per reader")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "pickles" in parts:
        crafted_pickles()
    if "fuzz" in parts:
        fuzz(args.budget, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if "bad" in parts:
            bad_samples(Path(tmp))
        if "preempt" in parts:
            preemption(Path(tmp))


if __name__ == "__main__":
    main()
