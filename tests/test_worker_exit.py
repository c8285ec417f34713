"""A torchrun worker leaves through ``mega.engine.dist.end_worker``: after its script (``entry_point``) it
exits with the script's status via ``os._exit``, its output flushed, skipping the interpreter teardown in
which DDP's leaked gloo threads sometimes aborted the process (SIGABRT after a finished run; reproduced
about once in 40 two-rank launches on a busy machine). A process without a multi-rank group is untouched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import atexit, sys
import mega.engine.dist as dist
from mega.errors import entry_point

dist._WORKER = sys.argv[1] == "worker"
atexit.register(lambda: print("atexit handlers ran", flush=True))


class Stop(Exception):
    exit_code = 75


@entry_point
def main(mode):
    print("script done")  # block-buffered (a pipe): only a flush before os._exit shows it
    if mode == "stop":
        raise Stop("stopped for preemption")


main(sys.argv[2])
print("after main")
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("mode, code", [("ok", 0), ("stop", 75)])
def test_a_worker_leaves_with_its_status_and_its_output_flushed(tmp_path, mode, code):
    out = _run(tmp_path, "worker", mode)
    assert out.returncode == code, out.stderr[-2000:]
    assert "script done" in out.stdout
    assert "after main" not in out.stdout and "atexit handlers ran" not in out.stdout  # left via os._exit
    if mode == "stop":
        assert "stopped for preemption" in out.stderr


@pytest.mark.parametrize("mode, code", [("ok", 0), ("stop", 75)])
def test_a_process_without_a_group_ends_as_usual(tmp_path, mode, code):
    out = _run(tmp_path, "single", mode)
    assert out.returncode == code, out.stderr[-2000:]
    assert "script done" in out.stdout and "atexit handlers ran" in out.stdout
    assert ("after main" in out.stdout) == (mode == "ok")
