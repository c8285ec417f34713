"""Bad training samples: replaced deterministically, logged, counted, listed, within a budget (in-process).

The dataset is tests/engine_ddp_worker.py's regression data stored one sample per file, with files broken
at known indices (truncated ``.npy``, a text file). The independent check of "replaced deterministically":
a run on the broken files ends with the same weights, bit for bit, as a run without skipping on a copy
where each broken file holds the sample of its replacement index. 2 ranks and real signals:
tests/test_preemption.py.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch
from engine_ddp_worker import SampleFiles, make_model, mse_loss, write_sample_files
from faults_launch import same_weights
from fixtures_engine import small_engine

from mega.engine import DistInfo, EngineConfig, seed_everything, train
from mega.engine.bad_samples import LIST_NAME, BadSampleBudgetError, SkippingDataset, replacement
from mega.engine.preemption import EXIT_PREEMPTED, Preempted
from mega.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
BAD = {5: "truncated", 17: "text"}


def _engine(**kw) -> EngineConfig:
    return EngineConfig(**small_engine(**{"max_steps": 12, "warmup_steps": 2, "ckpt_every": 0, **kw}))


def _train(run_dir, folder, fraction=0.05, loss_fn=mse_loss, **kw):
    seed_everything(0)
    model = make_model()
    result = train(
        model,
        loss_fn,
        SampleFiles(folder),
        engine=_engine(**kw),
        dist=DistInfo(),
        run_dir=run_dir,
        max_bad_fraction=fraction,
    )
    return model, result


def test_bad_files_are_replaced_listed_and_counted(tmp_path, caplog):
    folder = write_sample_files(tmp_path / "data", BAD)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    model, result = _train(tmp_path / "run", folder)
    assert result.step == 12 and result.metrics["train/bad_samples"] == 2.0
    for index in BAD:
        assert f"bad training sample {index} skipped" in caplog.text and f"{index:04d}.npy" in caplog.text
    rows = (tmp_path / "run" / LIST_NAME).read_text().splitlines()
    assert rows[0] == "index\treplacement\treason" and [int(r.split("\t")[0]) for r in rows[1:]] == [5, 17]
    assert all(f"{i:04d}.npy: unreadable sample" in r for i, r in zip(BAD, rows[1:]))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing deleted or rewritten

    # independent computation: the broken files replaced by their replacement's sample, no skipping
    fixed = write_sample_files(tmp_path / "fixed")
    for index in BAD:
        instead = replacement(0, index, 1, 40)
        assert instead not in BAD
        (fixed / f"{index:04d}.npy").write_bytes((fixed / f"{instead:04d}.npy").read_bytes())
    expected, _ = _train(tmp_path / "ref", fixed, fraction=None)
    assert same_weights(model.state_dict(), expected.state_dict())

    clean, result = _train(tmp_path / "clean", write_sample_files(tmp_path / "clean_data"))  # 0 bad files
    plain, _ = _train(tmp_path / "plain", tmp_path / "clean_data", fraction=None)
    assert result.metrics["train/bad_samples"] == 0.0 and not (tmp_path / "clean" / LIST_NAME).exists()
    assert same_weights(clean.state_dict(), plain.state_dict())


def test_budget_plus_one_stops_with_the_list(tmp_path):
    folder = write_sample_files(tmp_path / "data", {**BAD, 30: "truncated"})  # 3 bad; 5 % of 40 = 2 allowed
    with pytest.raises(BadSampleBudgetError) as err:
        _train(tmp_path / "run", folder)
    message = str(err.value)
    assert (
        "3 of 40 training samples are unreadable, more than images.max_bad_fraction=0.05 allows (2)"
        in message
    )
    assert str(tmp_path / "run" / LIST_NAME) in message and isinstance(err.value, UserError)
    assert len((tmp_path / "run" / LIST_NAME).read_text().splitlines()) == 4
    assert (folder / "0030.npy").stat().st_size == 100  # the broken file is left as it was
    with pytest.raises(
        UserError, match=r"00(05|17|30)\.npy: unreadable sample"
    ):  # no budget: the first one stops
        _train(tmp_path / "strict", folder, fraction=None)


def test_exact_resume_across_a_skipped_sample(tmp_path):
    """SIGTERM in update 7 (after both bad samples were met): a checkpoint, Preempted; the same call
    resumes, re-reads the list, and ends bitwise equal to an uninterrupted run."""
    folder = write_sample_files(tmp_path / "data", BAD)
    reference, _ = _train(tmp_path / "ref", folder)
    calls = []

    def signalled(model, batch, rng):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag: update 7 finishes
        return mse_loss(model, batch, rng)

    with pytest.raises(Preempted) as err:
        _train(tmp_path / "run", folder, loss_fn=signalled)
    assert err.value.step == 7 and err.value.exit_code == EXIT_PREEMPTED == 75
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the old handler is back
    model, result = _train(tmp_path / "run", folder)
    assert result.start_step == 7 and result.metrics["train/bad_samples"] == 2.0
    assert same_weights(model.state_dict(), reference.state_dict())


def test_skipping_images_names_the_file_and_keeps_bugs(tmp_path):
    from fixtures_images import write_npz_dataset

    from mega.data.images.dataset import ImageNpzDataset

    write_npz_dataset(tmp_path, n=6, ext=".jpg")
    images = tmp_path / "images"
    truncated, text = images / "ours_001.jpg", images / "ours_004.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    text.write_text("this is not a JPEG\n")
    data = SkippingDataset(ImageNpzDataset(tmp_path / "ours.npz", tmp_path, crop_size=32), seed=0)
    reports = [r for i in range(6) for r in data[i][1]]
    assert (
        [r[0] for r in reports] == [1, 4] and str(truncated) in reports[0][2] and str(text) in reports[1][2]
    )
    assert data[1][0]["index"] == reports[0][1]  # the replacement's sample

    class Buggy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise KeyError("a bug, not a bad file")

    with pytest.raises(KeyError):
        SkippingDataset(Buggy(), seed=0)[0]


def test_evaluation_never_skips_a_bad_sample(tmp_path, free_body):
    """Benchmarks are not training sets: a broken image stops the evaluation with its name."""
    from fixtures_images import write_npz_dataset

    from mega.data.benchmarks.eval_views import ImageBenchmarkView
    from mega.data.crop import ImageDataError
    from mega.data.images.dataset import ImageNpzDataset
    from mega.metrics.evaluator import Evaluator
    from mega.metrics.predictors import build_predictor
    from mega.metrics.protocols import build_protocol

    write_npz_dataset(tmp_path, n=4, ext=".jpg")
    broken = tmp_path / "images" / "ours_002.jpg"
    broken.write_bytes(broken.read_bytes()[:300])
    view = ImageBenchmarkView(ImageNpzDataset(tmp_path / "ours.npz", tmp_path, crop_size=32))
    evaluator = Evaluator(build_protocol("smpl24"), lambda gender: free_body, batch_size=2, progress=False)
    with pytest.raises(ImageDataError, match=r"ours_002\.jpg.*truncated"):
        evaluator.run(view, build_predictor("oracle"))
