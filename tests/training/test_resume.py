"""Runs resume exactly: ``last.ckpt`` is the latest epoch; a run killed (kill -9 at an epoch boundary or
mid-epoch) or interrupted (Ctrl-C, mid-epoch) and resumed ends bit-identical to the uninterrupted run:
weights and buffers (Self-MM's ULGM state included), the CSV log, the best score; in the same run folder.

The interrupted and the resumed runs are ``msa fit`` in processes of their own: one ``python -m msa_lightning.cli``
subprocess, the others forked from a fork server that imported the suite once (:func:`fork_msa_fit`); the kill
comes from :class:`SignalAt`, a callback the process imports from this file (``--trainer.callbacks+=``) that
signals its own process. The uninterrupted reference runs are ``msa fit`` in the test process (``make_cli``).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

TESTS = Path(__file__).resolve().parent
EPOCHS = 3


class SignalAt(L.Callback):
    """Send ``sig`` to this process at the start of training step ``step`` or of epoch ``epoch``
    (an epoch starts after the previous epoch's checkpoints are written)."""

    def __init__(self, step: int = -1, epoch: int = -1, sig: str = "SIGKILL") -> None:
        self.step, self.epoch, self.sig = step, epoch, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.sig))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), getattr(signal, self.sig))


class WorseningScore(L.Callback):
    """Log ``val/worsening``, a score that gets worse every epoch (its best checkpoint stays at epoch 0)."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("val/worsening", float(trainer.current_epoch))


# ---------------------------------------------------------------------------------------------- helpers
def _msa_fit(args: list[str], extra_callback: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    cmd = [sys.executable, "-m", "msa_lightning.cli", "fit", *args]
    if extra_callback is not None:
        import json

        cmd.append("--trainer.callbacks+=" + json.dumps(extra_callback))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _forked_msa_fit_main(args: list[str], out: str, err: str) -> None:
    """The body of a forked ``msa fit`` process (see :func:`fork_msa_fit`): stdout and stderr into files, the
    settings :func:`_msa_fit` gives its subprocesses, then the command's entry point."""
    for path, fd in ((out, 1), (err, 2)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(file, fd)
        os.close(file)
    os.environ.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    torch.set_num_threads(1)
    from msa_lightning.cli import main

    main(["fit", *args])


@pytest.fixture(scope="module")
def fork_msa_fit(tmp_path_factory):
    """``msa fit`` in a process of its own, forked from a fork server that imported the suite once: the same
    process boundary as :func:`_msa_fit` (a real SIGKILL, a real Ctrl-C, the exit status, a resume from the
    files alone) without the seconds of imports every new ``python -m msa_lightning.cli`` pays. The server
    is a fresh interpreter, not this test process: a forked run inherits none of the test's state."""
    import json
    import multiprocessing
    from multiprocessing import forkserver
    from types import SimpleNamespace

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["msa_lightning.cli", "test_resume"])
    logs = tmp_path_factory.mktemp("forked_logs")
    count = iter(range(10**6))

    def run(args: list[str], extra_callback: dict | None = None, timeout: int = 300) -> SimpleNamespace:
        if extra_callback is not None:
            args = [*args, "--trainer.callbacks+=" + json.dumps(extra_callback)]
        n = next(count)
        out, err = logs / f"{n}.out", logs / f"{n}.err"
        proc = context.Process(target=_forked_msa_fit_main, args=(args, str(out), str(err)))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise AssertionError(f"msa fit did not end in {timeout} s: {err.read_text()[-3000:]}")
        return SimpleNamespace(returncode=proc.exitcode, stdout=out.read_text(), stderr=err.read_text())

    yield run
    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is not None:  # the server holds the suite's imports (memory) until the worker ends otherwise
        stop()


def _fit_in_this_process(args: list[str]) -> None:
    """``msa fit`` here, for the uninterrupted reference runs (no process boundary to test in them; each
    ``msa`` process costs seconds of imports): one torch thread, as in the subprocesses, so that the float
    results can be bit-identical to theirs."""
    from msa_lightning.experiments.lightning_cli import make_cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_cli(["fit", *args])
    finally:
        torch.set_num_threads(threads)


def _signal_at(**kwargs) -> dict:
    return {"class_path": "test_resume.SignalAt", "init_args": kwargs}


def _tfn_args(data: Path, cache: Path, runs: Path) -> list[str]:
    return [
        "--model=TFNModule",
        "--model.lr=3e-3",
        "--data=MOSIDataModule",
        f"--data.path={data}",
        f"--data.cache_dir={cache}",
        "--data.batch_size=16",
        "--trainer.accelerator=cpu",
        f"--trainer.max_epochs={EPOCHS}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={runs}",
    ]


def _run_dir(runs: Path) -> Path:
    versions = sorted((runs / "msa").glob("version_*"))
    assert len(versions) == 1, f"expected one run folder, found {versions}"  # a resume writes into the same one
    return versions[0]


def _final_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _val_rows(run: Path) -> list[dict]:
    return [r for r in _rows(run) if r.get("val/mae")]


def _assert_same_run(resumed: Path, reference: Path, compare_all_rows: bool = True) -> None:
    a, b = _final_state(reference), _final_state(resumed)
    assert (b["epoch"], b["global_step"]) == (a["epoch"], a["global_step"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"parameters/buffers differ after the resume: {different[:5]}"
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))
    # the best score and checkpoint survive the resume
    ckpt_a = next(v for k, v in a["callbacks"].items() if k.startswith("ModelCheckpoint"))
    ckpt_b = next(v for k, v in b["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert torch.equal(ckpt_a["best_model_score"], ckpt_b["best_model_score"])
    assert Path(ckpt_a["best_model_path"]).name == Path(ckpt_b["best_model_path"]).name
    assert Path(ckpt_b["best_model_path"]).parent == resumed / "checkpoints"
    # the logged metrics: the validation rows (every epoch) are identical, as floats written by the logger
    assert _val_rows(resumed) == _val_rows(reference)
    assert len(_val_rows(reference)) == EPOCHS
    if compare_all_rows:
        assert _rows(resumed) == _rows(reference)


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tfn_reference(synthetic_mosi, cache_dir, tmp_path_factory) -> tuple[Path, Path]:
    runs = tmp_path_factory.mktemp("reference")
    _fit_in_this_process(_tfn_args(synthetic_mosi, cache_dir, runs))
    return _run_dir(runs), synthetic_mosi


# ---------------------------------------------------------------------------------------------- tests
def test_last_checkpoint_is_the_latest_epoch_when_the_score_stops_improving(synthetic_mosi, cache_dir, tmp_path):
    """Lightning 2.x ties save_last to top-k saves: without MSACheckpoint, last.ckpt stays at epoch 0 here."""
    from msa_lightning.experiments.lightning_cli import make_cli

    make_cli(
        [
            "fit",
            *_tfn_args(synthetic_mosi, cache_dir, tmp_path),
            "--trainer.max_epochs=3",
            "--trainer.callbacks+=test_resume.WorseningScore",
            "--checkpoint.monitor=val/worsening",
        ]
    )
    run = _run_dir(tmp_path)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 3 * 4  # 64 training samples, batch 16
    assert [p.name for p in (run / "checkpoints").glob("best*.ckpt")] == ["best-00.ckpt"]


def test_kill_at_epoch_boundary_then_ctrl_c_mid_epoch_resume_bit_identical(
    tfn_reference, cache_dir, tmp_path, fork_msa_fit
):
    """kill -9 right after epoch 0's checkpoints -> resume from last.ckpt -> Ctrl-C in the middle of epoch 1
    -> resume from interrupted.ckpt -> the same weights, optimiser state, best score and log as one run.
    The killed run is the command line itself (``python -m msa_lightning.cli fit``), the others forked."""
    reference, data = tfn_reference
    args = _tfn_args(data, cache_dir, tmp_path)
    killed = _msa_fit(args, _signal_at(epoch=1))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = _run_dir(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4

    interrupted = fork_msa_fit(args + [f"--ckpt_path={last}"], _signal_at(step=6, sig="SIGINT"))
    assert (
        f"msa: resuming {last} at epoch 1, step 4; logs -> {run}; checkpoints -> {run / 'checkpoints'}"
        in interrupted.stdout
    )
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    ckpt = run / "checkpoints" / "interrupted.ckpt"
    assert f"msa: interrupted at epoch 1, step 7; resume with --ckpt_path {ckpt}" in interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    assert torch.load(ckpt, weights_only=False)["global_step"] == 7  # the running step finished, no more
    assert torch.load(last, weights_only=False)["global_step"] == 4  # last.ckpt stays the epoch's end

    resumed = fork_msa_fit(args + [f"--ckpt_path={ckpt}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # every row but the epoch-mean training row of the interrupted epoch, which averages only the steps
    # after the resume (Lightning keeps no running epoch means in checkpoints)
    _assert_same_run(run, reference, compare_all_rows=False)
    without_epoch_1_mean = lambda rows: [r for r in rows if not (r.get("train/loss_epoch") and r["epoch"] == "1")]  # noqa: E731
    assert without_epoch_1_mean(_rows(run)) == without_epoch_1_mean(_rows(reference))


def test_ctrl_c_in_the_last_step_of_an_epoch_finishes_the_epoch(tfn_reference, cache_dir, tmp_path, fork_msa_fit):
    """Ctrl-C during an epoch's last step: its validation and last.ckpt are written, then the run stops."""
    reference, data = tfn_reference
    args = _tfn_args(data, cache_dir, tmp_path)
    interrupted = fork_msa_fit(args, _signal_at(step=7, sig="SIGINT"))
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    run = _run_dir(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    assert f"resume with --ckpt_path {last}" in interrupted.stderr
    assert torch.load(last, weights_only=False)["global_step"] == 8
    assert not (run / "checkpoints" / "interrupted.ckpt").exists()
    resumed = fork_msa_fit(args + [f"--ckpt_path={last}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(run, reference)


def test_self_mm_ulgm_state_resumes_exactly_after_a_mid_epoch_kill(synthetic_mosi, cache_dir, tmp_path, fork_msa_fit):
    args = [
        "--model=SelfMMModule",
        "--model.text_model=tiny-bert",
        "--model.audio_hidden=8",
        "--model.vision_hidden=8",
        "--model.audio_out=8",
        "--model.vision_out=8",
        "--model.text_head_dim=8",
        "--model.audio_head_dim=8",
        "--model.vision_head_dim=8",
        "--model.fusion_dim=16",
        "--model.lr=3e-3",
        "--data=MOSIDataModule",
        f"--data.path={synthetic_mosi}",
        f"--data.cache_dir={cache_dir}",
        "--data.batch_size=16",
        "--trainer.accelerator=cpu",
        f"--trainer.max_epochs={EPOCHS}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
    ]
    _fit_in_this_process(args + [f"--trainer.logger.init_args.save_dir={tmp_path / 'ref'}"])
    resumed_args = args + [f"--trainer.logger.init_args.save_dir={tmp_path / 'run'}"]
    killed = fork_msa_fit(resumed_args, _signal_at(step=6))  # mid-epoch 1: resumes from the end of epoch 0
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = _run_dir(tmp_path / "run")
    # the run folder instead of the file: `msa fit` resumes from its last.ckpt
    resumed = fork_msa_fit(resumed_args + [f"--ckpt_path={run}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = _final_state(run)["state_dict"]
    assert any("ulgm" in k and "centers" in k for k in final)  # the ULGM buffers are part of the comparison
    _assert_same_run(run, _run_dir(tmp_path / "ref"))
