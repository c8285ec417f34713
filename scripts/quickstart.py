"""`make quickstart`: the main job end to end at CPU scale, resumable, one line per stage and one table.

    python scripts/quickstart.py                      # from nothing: ~7 min on 2 idle cores; seconds when done
    python scripts/quickstart.py force=[eval_stochastic,demo_heldout]
    python scripts/quickstart.py stream=false         # stage output only in outputs/quickstart/logs/

Stages (each one the project's own script, in a fixed run directory under ``run_dir``):

    motion         synthetic motion data (mega.data.motion.dataset)                 -> data/synthetic_motion/
    images         scripts/prepare_data.py benchmark=synthetic_images         -> images (in the background: beside the next two)
    tokenizer      scripts/train_tokenizer.py                               -> tokenizer/tokenizer.pt
    pretrain       scripts/pretrain.py                                      -> pretrain/pretrained.pt
    train_hmr      scripts/train_hmr.py experiment=hmr_cpu                  -> train_hmr/hmr.pt
    eval_<s>       scripts/eval.py with sampler s, or its eval.decoding arguments (and predictor=mean_pose)  -> eval/<s>/summary.json
    demo_*         scripts/demo.py on held-out images (+ the sports2d video) -> demo/<name>/*.png

A stage whose output exists is skipped; a stage that was killed restarts in its run directory, where
the training scripts resume from their last checkpoint. At the end: a table of PVE / MPJPE / PA-MPJPE
per sampler with the ``mean_pose`` floor, and the paths of the pictures.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.atomic import write_json
from mega.demo.examples import write_heldout_detections
from mega.errors import UserError, entry_point

log = logging.getLogger("quickstart")
ROOT = Path(__file__).resolve().parents[1]
METRICS = ("pve", "mpjpe", "pa_mpjpe")


class StageFailed(UserError, RuntimeError):
    """A stage's script exited with an error (the message names its log)."""


@dataclass
class Stage:
    """One step: a command, the file that proves it is done, and an optional precondition."""

    name: str
    cmd: list[str]
    done: Path
    skip_reason: str | None = None  # set: the stage is skipped with this line (e.g. no video)
    prepare: Callable[[], list[str]] | None = None  # run first (writes inputs); returns extra arguments
    background: bool = False  # runs alongside the stages after it (its own core), joined when needed
    needs: tuple[str, ...] = ()  # background stages whose output this one reads (waited for first)
    threads: int | None = None  # OMP / torch threads of this stage; None: the run's ``threads``


def _py(cfg: DictConfig) -> str:
    return cfg.python or sys.executable


def _script(cfg: DictConfig, name: str, run_dir: Path, *args: str) -> list[str]:
    return [_py(cfg), str(ROOT / "scripts" / name), *args, f"hydra.run.dir={run_dir}"]


def benchmark_index(cfg: DictConfig) -> Path:
    return Path(cfg.images.root) / "benchmark_test_all.npz"


def detector_ready() -> bool:
    """The BlazePose extra is installed (``make detector``)."""
    from mega.detection.blazepose import detector_available

    return detector_available()


def build_stages(cfg: DictConfig) -> list[Stage]:
    """The ordered stages for this config: training (data, tokenizer, pre-training, HMR), evaluation, demo."""
    return training_stages(cfg) + eval_stages(cfg) + demo_stages(cfg)


def training_stages(cfg: DictConfig) -> list[Stage]:
    """Motion data, tokenizer, pre-training, images (+ the test benchmark index), HMR training."""
    run = Path(cfg.run_dir)
    tok, pre, hmr = run / "tokenizer/tokenizer.pt", run / "pretrain/pretrained.pt", run / "train_hmr/hmr.pt"
    mo, im = cfg.motion, cfg.images
    seqs = f"{{train: {mo.sequences.train}, val: {mo.sequences.val}, test: {mo.sequences.test}}}"
    motion_data = [f"motion.root={mo.root}", f"motion.seed={mo.seed}", f"motion.sequences={seqs}"]
    motion_code = (
        "import mega; from mega.data.motion import ensure_synthetic_motion; "
        f"ensure_synthetic_motion({str(mo.root)!r}, seed={int(mo.seed)}, "
        f"sequences={dict(OmegaConf.to_container(mo.sequences))!r})"
    )
    sizes = f"{{train: {im.sizes.train}, val: {im.sizes.val}, test: {im.sizes.test}}}"
    gen_motion = f"benchmark.generate.motion={{root: {mo.root}, seed: {mo.seed}, sequences: {seqs}}}"
    index = benchmark_index(cfg)
    threads = f"threads={cfg.threads}"
    tok_args = ["logger=none", threads, *motion_data, *cfg.tokenizer.args]
    pre_args = [
        f"tokenizer.checkpoint={tok}",
        threads,
        f"token_cache_dir={run / 'token_cache'}",
        *motion_data,
        *cfg.pretrain.args,
    ]
    img_args = [
        "benchmark=synthetic_images",
        f"benchmark.root={im.root}",
        f"benchmark.generate.sizes={sizes}",
        gen_motion,
        f"benchmark.index={index}",
        *im.args,
    ]
    hmr_args = [
        "experiment=hmr_cpu",
        "logger=none",
        f"tokenizer.checkpoint={tok}",
        f"transformer.init={pre}",
        f"images.root={im.root}",
        f"threads={cfg.train_hmr.threads}",
        *cfg.train_hmr.args,
    ]
    stages = [
        Stage("motion", [_py(cfg), "-c", motion_code], Path(mo.root) / "MANIFEST.json"),
        Stage(
            "images",
            _script(cfg, "prepare_data.py", run / "images", *img_args),
            index,
            background=bool(cfg.images.background),
        ),
        Stage("tokenizer", _script(cfg, "train_tokenizer.py", run / "tokenizer", *tok_args), tok),
        Stage("pretrain", _script(cfg, "pretrain.py", run / "pretrain", *pre_args), pre),
        Stage(
            "train_hmr",
            _script(cfg, "train_hmr.py", run / "train_hmr", *hmr_args),
            hmr,
            needs=("images",),
            threads=int(cfg.train_hmr.threads),
        ),
    ]
    return stages


def eval_stages(cfg: DictConfig) -> list[Stage]:
    """``scripts/eval.py`` on the test split: the ``mean_pose`` floor, then the trained model per sampler row."""
    run = Path(cfg.run_dir)
    hmr = run / "train_hmr/hmr.pt"
    stages = []
    bench = [
        "benchmark=synthetic_images",
        f"benchmark.root={cfg.images.root}",
        "benchmark.split=test",
        "protocol=smpl24",
        "body_model=free",
        "progress=false",
    ]
    stages.append(
        Stage(
            "eval_mean_pose",
            _script(cfg, "eval.py", run / "eval/mean_pose", *bench, "predictor=mean_pose", *cfg.eval.args),
            run / "eval/mean_pose/summary.json",
        )
    )
    for name, q in cfg.eval.samplers.items():
        decoding = cfg.eval.decoding.get(name, [f"sampler={name}"])
        args = [*bench, f"checkpoint={hmr}", *decoding, f"num_samples={q}", *cfg.eval.args]
        stages.append(
            Stage(
                f"eval_{name}",
                _script(cfg, "eval.py", run / f"eval/{name}", *args),
                run / f"eval/{name}/summary.json",
            )
        )
    return stages


def demo_stages(cfg: DictConfig) -> list[Stage]:
    """``scripts/demo.py`` on held-out images (deterministic, stochastic, pose-guided) and on the video."""
    run = Path(cfg.run_dir)
    hmr = run / "train_hmr/hmr.pt"
    stages = []
    demo = run / "demo"
    dets = demo / "heldout_detections.json"
    common = [f"checkpoint={hmr}", f"detections={dets}", f"threads={cfg.threads}", *cfg.demo.args]

    def heldout_inputs() -> list[str]:
        paths = write_heldout_detections(cfg.images.root, cfg.demo.num_images, dets)
        return ["inputs=[" + ",".join(paths) + "]"]

    q = int(cfg.demo.uncertainty_samples)
    for name, extra in (
        ("heldout", ["sampler=deterministic"]),
        ("heldout_uncertainty", ["sampler=stochastic", f"num_samples={q}"]),
        (
            "heldout_pose_guided",
            [*cfg.eval.decoding.pose_guided, "compare=deterministic", *cfg.demo.pose_guided_args],
        ),
    ):
        stages.append(
            Stage(
                f"demo_{name}",
                _script(cfg, "demo.py", demo / name, *common, *extra),
                demo / name / "summary.json",
                prepare=heldout_inputs,
            )
        )
    video = Path(cfg.demo.video) if cfg.demo.video else None
    skip = None
    if video is None or not video.is_file():
        skip = f"no video at {video} (`make media` puts sports2d's demo video there)"
    elif not detector_ready():
        skip = "the BlazePose extra is not installed (`make detector`)"
    vargs = [
        f"checkpoint={hmr}",
        f"inputs=[{video}]",
        "detector=blazepose",
        *cfg.eval.decoding.pose_guided,
        "compare=deterministic",
        f"threads={cfg.threads}",
        *cfg.demo.pose_guided_args,
        *cfg.demo.video_args,
    ]
    stages.append(
        Stage(
            "demo_video",
            _script(cfg, "demo.py", demo / "video", *vargs),
            demo / "video/summary.json",
            skip_reason=skip,
        )
    )
    return stages


def run_stage(stage: Stage, log_path: Path, stream: bool, threads: int) -> None:
    """Run one stage's command; its output goes to ``log_path`` (and the terminal with ``stream``)."""
    cmd = list(stage.cmd) + (stage.prepare() if stage.prepare is not None else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        out.write((" ".join(cmd) + "\n\n").encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            out.write(chunk)
            if stream:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        code = proc.wait()
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise StageFailed(f"stage {stage.name} failed (exit {code}); its log: {log_path}\n{tail}")


def run_stages(stages: list[Stage], cfg: DictConfig, run: Path) -> dict[str, float]:
    """Run the stages in order (a ``background`` one beside the next, joined before a stage that
    ``needs`` it or at the end); one line per stage; returns the seconds of those that ran."""
    times: dict[str, float] = {}
    background: dict[str, tuple[threading.Thread, list[BaseException], float, str]] = {}

    def join(name: str) -> None:
        thread, errors, t0, head = background.pop(name)
        thread.join()
        if errors:
            raise errors[0]
        times[name] = time.perf_counter() - t0
        print(f"{head} done in {_fmt(times[name])} (in the background)", flush=True)

    for i, stage in enumerate(stages, 1):
        head = f"[{i:>2}/{len(stages)}] {stage.name:<26}"
        for name in stage.needs:
            if name in background:
                join(name)
        if cfg.only and stage.name not in cfg.only:
            continue
        if stage.skip_reason:
            print(f"{head} skipped: {stage.skip_reason}", flush=True)
            continue
        if stage.done.exists() and stage.name not in cfg.force:
            print(f"{head} done already ({stage.done})", flush=True)
            continue
        log_path = run / "logs" / f"{stage.name}.log"
        if stage.background:  # its output goes to its log only (two progress bars would interleave)
            print(f"{head} running in the background ... (log: {log_path})", flush=True)
            errors: list[BaseException] = []
            thread = threading.Thread(target=_run_into, args=(stage, log_path, int(cfg.threads), errors))
            thread.start()
            background[stage.name] = (thread, errors, time.perf_counter(), head)
            continue
        print(f"{head} running ... (log: {log_path})", flush=True)
        t0 = time.perf_counter()
        run_stage(stage, log_path, bool(cfg.stream), stage.threads or int(cfg.threads))
        times[stage.name] = time.perf_counter() - t0
        print(f"{head} done in {_fmt(times[stage.name])}", flush=True)
    for name in list(background):
        join(name)
    return times


def _run_into(stage: Stage, log_path: Path, threads: int, errors: list[BaseException]) -> None:
    """:func:`run_stage` for a background thread: its error is kept for the join, not lost."""
    try:
        run_stage(stage, log_path, False, threads)
    except BaseException as err:  # noqa: BLE001  (re-raised in the main thread by the join)
        errors.append(err)


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s" if seconds >= 60 else f"{seconds:.1f}s"


def final_table(cfg: DictConfig) -> tuple[str, dict]:
    """PVE / MPJPE / PA-MPJPE (mm) per sampler and the mean_pose floor, from the eval runs' summaries.

    A sampler with Q > 1 gets three rows: its single hypothesis (the evaluator's ``metrics``: the
    deterministic mesh), the mean of the Q samples, and the best of Q (an oracle choice, MEGA's metric)."""
    run = Path(cfg.run_dir)
    rows: dict[str, dict] = {}
    for name in ["mean_pose", *cfg.eval.samplers]:
        path = run / f"eval/{name}/summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        rows[name] = dict(summary.get("metrics", {}))
        if "orientation" in summary:  # the model's own global rotation (mean_pose uses the true one)
            rows[name]["rot_err_deg"] = summary["orientation"]["rot_err_deg"]
        for key, tag in (("mean_of_q", "mean of Q"), ("best_of_q", "best of Q")):
            if key in summary:
                rows[f"{name} ({tag})"] = summary[key]
    lines = [
        f"{'sampler':<30}{'Q':>4}"
        + "".join(f"{m.upper().replace('_', '-'):>11}" for m in METRICS)
        + f"{'ROT-ERR deg':>13}"
    ]
    for name, metrics in rows.items():
        base = name.split(" (")[0]
        q = "-" if base == "mean_pose" else str(cfg.eval.samplers[base])
        label = "mean_pose (floor)" if name == "mean_pose" else name
        vals = "".join(f"{metrics[m]:>11.1f}" if m in metrics else f"{'-':>11}" for m in METRICS)
        rot = f"{metrics['rot_err_deg']:>13.1f}" if "rot_err_deg" in metrics else f"{'-':>13}"
        lines.append(f"{label:<30}{q:>4}{vals}{rot}")
    return "\n".join(lines), rows


@hydra.main(config_path="../configs", config_name="quickstart", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    stages = build_stages(cfg)
    names = [s.name for s in stages]
    for key in ("force", "only"):
        unknown = sorted(set(cfg[key]) - set(names))
        if unknown:
            raise UserError(f"{key}={unknown}: unknown stage(s); the stages are {names}")
    run = Path(cfg.run_dir)
    t_all = time.perf_counter()
    times = run_stages(stages, cfg, run)
    total = time.perf_counter() - t_all
    table, rows = final_table(cfg)
    pictures = []
    for summary in sorted((run / "demo").glob("*/summary.json")):
        pictures += json.loads(summary.read_text()).get("pictures", [])
    print(
        f"\nquickstart: {_fmt(total)} in all ({', '.join(f'{k} {_fmt(v)}' for k, v in times.items()) or 'nothing to do'})"
    )
    print(f"\ntest split of {cfg.images.root} (protocol smpl24, mm):\n{table}")
    if pictures:
        print("\npictures:\n" + "\n".join(f"  {p}" for p in pictures))
    write_json(
        run / "quickstart.json",
        {"seconds": total, "stage_seconds": times, "metrics": rows, "pictures": pictures},
    )


if __name__ == "__main__":
    main()
