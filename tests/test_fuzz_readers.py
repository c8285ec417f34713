"""Fuzzed readers (small budget; benchmarks/fuzz.py runs a large one): every mutated file of every reader a
user feeds either reads or raises the project's one-line user error naming the file, in under a second of
CPU, without crashing, hanging or allocating without bound (the loop runs in a child process under a
memory limit; see tests/fuzz_readers.py for the readers and the mutations)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fuzz_readers import READERS, classify

from mega.data.crop import ImageDataError

FUZZ = Path(__file__).with_name("fuzz_readers.py")


def test_classify_tells_user_errors_from_raw_ones(tmp_path):
    path = tmp_path / "labels.npz"
    assert classify(None, path) == "read"
    assert classify(ImageDataError(f"{path}: key 'pose' contains NaN"), path) == "user error"
    assert classify(KeyError("pose"), path).startswith("FAIL raw KeyError")
    assert classify(ImageDataError("a bad file"), path).startswith("FAIL user error without the file")
    assert classify(ImageDataError(f"{path}:\nline two"), path).startswith("FAIL multi-line")


def test_every_reader_survives_a_small_fuzz_budget(tmp_path):
    out = tmp_path / "cases.json"
    cmd = [sys.executable, str(FUZZ), "--budget", "12", "--seed", "1", "--out", str(out)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        errors="replace",  # OpenCV prints raw bytes of broken videos
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    progress = out.with_suffix(".progress")
    last = progress.read_text() if progress.exists() else "none"
    assert out.exists(), (
        f"the fuzz process died (exit {proc.returncode}) in case {last}:\n{proc.stderr[-3000:]}"
    )
    cases = json.loads(out.read_text())
    fails = [c for c in cases if c["outcome"].startswith("FAIL")]
    assert not fails, "\n".join(f"{c['reader']} {c['mutation']}: {c['outcome']}" for c in fails[:10])
    assert proc.returncode == 0 and len(cases) == 12 * len(READERS)
    assert {c["reader"] for c in cases if c["outcome"] == "user error"} == set(READERS)  # each reader was hit
