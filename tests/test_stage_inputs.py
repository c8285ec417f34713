"""A stage's default input is where the previous stage wrote it: the quickstart's output before older runs,
and a one-line error naming the file and the command that makes it when there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mega.errors import UserError
from mega.stage_inputs import QUICKSTART, StageInputError, find_hmr, find_pretrained_model, find_tokenizer

REPO = Path(__file__).resolve().parents[1]


def _touch(path: Path, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_find_hmr_prefers_the_quickstart_then_the_newest_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageInputError, match="make quickstart") as err:
        find_hmr(None)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert find_hmr("given.pt") == Path(
        "given.pt"
    )  # a given path is used as is (load_hmr names it if missing)
    _touch(Path("outputs/train_hmr/old/hmr.pt"), mtime=0)
    new = _touch(Path("outputs/train_hmr/new/hmr.pt"))
    assert find_hmr(None) == new
    quick = _touch(QUICKSTART / "train_hmr/hmr.pt", mtime=0)
    assert find_hmr(None) == quick


def test_find_pretrained_model_for_generation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageInputError, match="scripts/pretrain.py") as err:
        find_pretrained_model(None)
    assert "\n" not in str(err.value)
    new = _touch(Path("outputs/pretrain/new/pretrained.pt"))
    assert find_pretrained_model(None) == new
    quick = _touch(QUICKSTART / "pretrain/pretrained.pt", mtime=0)
    assert find_pretrained_model(None) == quick
    assert find_pretrained_model("given.pt") == Path("given.pt")


def test_find_tokenizer_takes_the_quickstart_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(Path("outputs/train_tokenizer/run/tokenizer.pt"), mtime=0)
    quick = _touch(QUICKSTART / "tokenizer/tokenizer.pt", mtime=0)
    assert find_tokenizer(None, kind=None) == quick
    default = _touch(Path("data/checkpoints/tokenizer_mesh.pt"), mtime=0)
    assert find_tokenizer(None, kind=None) == default


@pytest.mark.parametrize(
    "script,needs",
    [("train_hmr.py", "python scripts/train_tokenizer.py"), ("eval.py", "make quickstart")],
)
def test_bare_command_without_inputs_says_what_to_run_in_one_line(tmp_path, script, needs):
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needs in errors[0] and "Traceback" not in out.stderr, out.stderr[-2000:]
