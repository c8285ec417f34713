"""Where a stage finds its input when none is given: where the previous stage wrote it.

For each artifact, in order: the path given; a fixed place under ``data/checkpoints/`` (a file put there
by hand); the quickstart's output (``outputs/quickstart/<stage>/``, ``make quickstart``); the newest run
of the stage that writes it (``outputs/<script>/<run>/``). Nothing found is a :class:`StageInputError`: one
line (no traceback) naming the file that is needed and the command that makes it.

    tokenizer.pt   scripts/train_tokenizer.py   -> pretrain.py, train_hmr.py     (find_tokenizer)
    pretrained.pt  scripts/pretrain.py          -> train_hmr.py                  (find_pretrained)
    pretrained.pt  scripts/pretrain.py          -> generate.py                   (find_pretrained_model)
    hmr.pt         scripts/train_hmr.py         -> eval.py, demo.py, the web app (find_hmr)
"""

from __future__ import annotations

from pathlib import Path

import torch

from mega.errors import UserError

QUICKSTART = Path("outputs/quickstart")
MAKE_TOKENIZER = {
    "mesh": "python scripts/train_tokenizer.py",
    "pose": "python scripts/train_tokenizer.py experiment=pose_tokenizer_cpu",
}


class StageInputError(UserError, FileNotFoundError):
    """A stage's input file does not exist; the message names it and the command that makes it."""


def newest(pattern: str) -> list[Path]:
    """Files matching ``pattern`` (relative to the working directory), newest first."""
    return sorted(Path().glob(pattern), key=lambda p: -p.stat().st_mtime)


def tokenizer_kind(path: Path) -> str:
    """``pose`` or ``mesh``: the kind of a tokenizer checkpoint (from its registry name)."""
    name = str(torch.load(path, map_location="cpu", weights_only=True).get("name", ""))
    return "pose" if name.startswith("pose") else "mesh"


def find_tokenizer(checkpoint: str | None, kind: str | None = "mesh") -> Path:
    """The tokenizer checkpoint: ``checkpoint``, else ``data/checkpoints/tokenizer_<kind>.pt``, else the
    quickstart's, else the newest ``outputs/train_tokenizer/*/tokenizer.pt`` (of ``kind``; None = any)."""
    how = f"make one with `{MAKE_TOKENIZER[kind or 'mesh']}` (or pass tokenizer.checkpoint=PATH)"
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise StageInputError(f"tokenizer.checkpoint={checkpoint} does not exist; {how}")
        return Path(checkpoint)
    default = Path(f"data/checkpoints/tokenizer_{kind or 'mesh'}.pt")
    if default.is_file():
        return default
    runs = [QUICKSTART / "tokenizer/tokenizer.pt", *newest("outputs/train_tokenizer/*/tokenizer.pt")]
    runs = [p for p in runs if p.is_file() and (kind is None or tokenizer_kind(p) == kind)]
    if runs:
        return runs[0]
    raise StageInputError(
        f"no {kind or ''} tokenizer: {default} does not exist and neither "
        f"{QUICKSTART}/tokenizer nor an outputs/train_tokenizer run holds one; {how}, then rerun"
    )


def find_pretrained(init: str | None, tok_path: Path, tok_sha: str) -> str | None:
    """``transformer.init``: a path, null (from scratch) or ``auto``: the quickstart's ``pretrained.pt``
    or the newest ``outputs/pretrain/*/pretrained.pt``, pre-trained with this tokenizer (same hash)."""
    from mega.engine import load_checkpoint

    if init in (None, "", "null", "none"):
        return None
    if init != "auto":
        return init
    for path in [QUICKSTART / "pretrain/pretrained.pt", *newest("outputs/pretrain/*/pretrained.pt")]:
        if path.is_file() and load_checkpoint(path).get("tokenizer", {}).get("sha256") == tok_sha:
            return str(path)
    raise StageInputError(
        f"transformer.init=auto: no outputs/pretrain/*/pretrained.pt was pre-trained with tokenizer {tok_path} "
        f"({tok_sha[:12]}); make one with `python scripts/pretrain.py tokenizer.checkpoint={tok_path}` and rerun "
        "(or pass transformer.init=PATH, or transformer.init=null to train from scratch)"
    )


def _given_or_newest(checkpoint: str | None, stage: str, name: str) -> Path | None:
    """``checkpoint`` as given (its loader names a missing file), else the quickstart's ``<stage>/<name>``,
    else the newest ``outputs/<stage>/*/<name>``; None when there is none."""
    if checkpoint:
        return Path(checkpoint)
    runs = [QUICKSTART / stage / name, *newest(f"outputs/{stage}/*/{name}")]
    return next((path for path in runs if path.is_file()), None)


def find_pretrained_model(checkpoint: str | None) -> Path:
    """The pre-trained transformer for generation: ``checkpoint``, else the quickstart's ``pretrained.pt``,
    else the newest ``outputs/pretrain/*/pretrained.pt`` (whatever its tokenizer)."""
    path = _given_or_newest(checkpoint, "pretrain", "pretrained.pt")
    if path is None:
        raise StageInputError(
            f"no pre-trained model: {QUICKSTART}/pretrain/pretrained.pt does not exist and no outputs/pretrain run "
            "holds one; pass checkpoint=PATH/pretrained.pt, or make one with `python scripts/pretrain.py` "
            "(or `make quickstart`)"
        )
    return path


def find_hmr(checkpoint: str | None) -> Path:
    """The HMR model: ``checkpoint``, else the quickstart's ``hmr.pt``, else the newest
    ``outputs/train_hmr/*/hmr.pt``."""
    path = _given_or_newest(checkpoint, "train_hmr", "hmr.pt")
    if path is None:
        raise StageInputError(
            f"no trained model: {QUICKSTART}/train_hmr/hmr.pt does not exist and no outputs/train_hmr run holds "
            "one; pass checkpoint=PATH/hmr.pt, or train one with `make quickstart` (or `python scripts/train_hmr.py`)"
        )
    return path
