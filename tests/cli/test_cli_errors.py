"""Bad input to the real ``msa`` command: one ``msa: error:`` line naming the problem, exit 2, no traceback.

Each case runs the console script in a subprocess, as a user would; ``--debug`` brings the traceback back.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import assert_one_line_error, msa_in_process

from msa_lightning.data import MOSIDataModule
from msa_lightning.errors import ConfigError, DataError

MSA = str(Path(sys.executable).with_name("msa"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
ENV.pop("MSA_DEBUG", None)


class RaiseOnTrainStart(L.Callback):
    """An expected error on every DDP rank after the ranks were launched (imported by the subprocess)."""

    def on_train_start(self, trainer, pl_module) -> None:
        raise ConfigError(f"planted setting error seen by rank {trainer.global_rank}")


class _FailsInWorker(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        raise DataError(f"planted: clip {i} of the training data is unreadable")


class WorkerFailsData(MOSIDataModule):
    """A training loader whose worker process meets a bad sample (imported by the subprocess)."""

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_FailsInWorker(), num_workers=1)


def run_msa(*args: str, cwd: Path, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MSA, *map(str, args)], cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout
    )


def fit_args(tmp_path: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--model=TFNModule",
        "--data=MOSIDataModule",
        f"--data.cache_dir={cache_dir}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, synthetic_mosi) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    corrupt = folder / "corrupt.pkl"
    corrupt.write_bytes(b"this is not a pickle")
    data = pickle.load(open(synthetic_mosi, "rb"))
    data["valid"] = {key: value[:0] for key, value in data["valid"].items()}
    empty = folder / "empty_valid.pkl"
    pickle.dump(data, open(empty, "wb"))
    return {"corrupt": corrupt, "empty_valid": empty}


def cases(synthetic_mosi: Path, bad: dict[str, Path]) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """name -> (extra command-line arguments, words the error line must contain)."""
    mosi = f"--data.path={synthetic_mosi}"
    return {
        "missing_file": (["--data.path=/nonexistent/mosi.pkl"], ("/nonexistent/mosi.pkl", "not found")),
        "corrupt_file": ([f"--data.path={bad['corrupt']}"], (str(bad["corrupt"]), "pickle")),
        "wrong_dataset": ([mosi, "--data=SIMSDataModule"], (str(synthetic_mosi), "sims", "regression_labels")),
        "audio_dim_conflict": (
            [mosi, "--model.init_args.audio_dim=74"],
            ("model.init_args.audio_dim=74", "audio features of size 5"),
        ),
        "missing_local_model": (
            [mosi, "--model=BertLSTMModule", "--model.init_args.text_model=/nonexistent"],
            ("'/nonexistent'", "not available"),
        ),
        "unknown_hub_model": (
            [mosi, "--model=BertLSTMModule", "--model.init_args.text_model=no-such-org/no-such-bert"],
            ("no-such-org/no-such-bert", "not available"),
        ),
        "missing_transcripts": (
            [
                mosi,
                "--model=SWRMModule",
                "--model.init_args.text_model=tiny-bert",
                "--data=msa_lightning.papers.swrm.data.MOSIASRDataModule",
                "--data.tokenizer=tiny-bert",
                "--data.asr=ibm",
                "--data.transcripts=/nonexistent/ibm.tsv",
                "--data.positions=false",
            ],
            ("/nonexistent/ibm.tsv", "transcript"),
        ),
        "empty_split": ([f"--data.path={bad['empty_valid']}"], ("'valid'", "empty")),
        "negative_lr": ([mosi, "--model.lr=-0.001"], ("lr", "-0.001")),
        "zero_batch_size": ([mosi, "--data.batch_size=0"], ("data.init_args.batch_size", "0")),
    }


CASES = [
    "missing_file",
    "corrupt_file",
    "wrong_dataset",
    "audio_dim_conflict",
    "missing_local_model",
    "unknown_hub_model",
    "missing_transcripts",
    "empty_split",
    "negative_lr",
    "zero_batch_size",
]


#: cases run as the installed `msa` script in a subprocess, as a user runs it; the others go through the same entry
#: point in this process (its error boundary and exit status), without paying a Python start each
SUBPROCESS_CASES = {"missing_file", "corrupt_file", "missing_local_model", "unknown_hub_model"}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_error(case, synthetic_mosi, cache_dir, bad_files, tmp_path, capsys):
    extra, needles = cases(synthetic_mosi, bad_files)[case]
    args = fit_args(tmp_path, cache_dir, *extra)
    if case in SUBPROCESS_CASES:
        proc = run_msa(*args, cwd=tmp_path)
    else:
        proc = msa_in_process(capsys, *args, cwd=tmp_path, env={"WANDB_MODE": "offline"})
    assert_one_line_error(proc, *needles)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_debug_shows_the_traceback(synthetic_mosi, cache_dir, tmp_path, monkeypatch):
    args = fit_args(tmp_path, cache_dir, f"--data.path={synthetic_mosi}", "--model.init_args.audio_dim=74")
    proc = run_msa(*args[:1], "--debug", *args[1:], cwd=tmp_path)
    assert proc.returncode not in (0, 2)
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
    assert "audio features of size 5" in proc.stderr

    from msa_lightning.cli import main

    monkeypatch.setenv("MSA_DEBUG", "1")  # the environment variable does the same (in-process here)
    monkeypatch.setenv("JSONARGPARSE_DEBUG", "false")  # main() sets it for --debug: undone after the test
    with pytest.raises(ConfigError, match="audio features of size 5"):
        main(args)


def in_process(argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)`` as the console script runs it: the exit status and stderr."""
    from msa_lightning.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_suite_subcommands_share_the_boundary(tmp_path, capsys):
    code, err = in_process(["report", str(tmp_path / "no_such_run")], capsys)
    assert code == 2 and err.startswith("msa: error:") and "no_such_run" in err and "summary.csv" in err
    code, err = in_process(["data", "inspect", str(tmp_path / "missing.pkl")], capsys)
    assert code == 2 and err.startswith("msa: error:") and "missing.pkl" in err


def test_parse_errors_name_the_config_key(tmp_path, capsys):
    """jsonargparse's report (usage of every option, the Union branches) condensed to the key and the reason."""
    proc = run_msa("fit", "--model=TFNModule", "--model.init_args.dropout=abc", cwd=tmp_path)
    line = assert_one_line_error(proc, "model.init_args.dropout", "abc", "float", "TFNModule")
    assert line.startswith("msa: error: model.init_args.dropout:")
    assert len(proc.stderr.strip().splitlines()) == 2, proc.stderr  # the message and where --help is
    code, err = in_process(["fit", "--model=TFNModule", "--model.init_args.no_such_arg=1"], capsys)
    assert code == 2 and err.startswith("msa: error: model:") and "no_such_arg" in err and "not accepted" in err
    code, err = in_process(["fit", "--model=NoSuchModule"], capsys)
    assert code == 2 and "no class named 'NoSuchModule'" in err.splitlines()[0]
    code, err = in_process(["fit", "--model=TFNModule", "--trainer.max_epochs=x"], capsys)
    assert code == 2 and err.splitlines()[0] == "msa: error: trainer.max_epochs: Expected a int; got 'x'"


def test_no_litlogger_tip_or_pytree_deprecation(synthetic_mosi, cache_dir, tmp_path):
    proc = run_msa(*fit_args(tmp_path, cache_dir, f"--data.path={synthetic_mosi}"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "litlogger" not in output and "LeafSpec" not in output
    assert "`Trainer.fit` stopped" in output  # Lightning's other messages still arrive


def test_expected_error_under_two_process_ddp(synthetic_mosi, cache_dir, tmp_path):
    """Both ranks fail: rank 0 reports once and stops rank 1; no traceback, no process left behind."""
    env = {
        **ENV,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = run_msa(
        *fit_args(
            tmp_path,
            cache_dir,
            f"--data.path={synthetic_mosi}",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",
            "--trainer.callbacks+=test_cli_errors.RaiseOnTrainStart",
        ),
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert_one_line_error(proc, "planted setting error seen by rank 0")
    time.sleep(1)
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(tmp_path).encode() in cmdline.read_bytes():
                leftovers.append(cmdline.parent.name)
        except OSError:  # the process ended meanwhile
            pass
    assert not leftovers


def test_error_in_a_loader_worker_is_one_line(synthetic_mosi, cache_dir, tmp_path):
    """torch re-raises a worker's error with the worker's traceback inside the message: the user sees
    the original message and which worker, on one line."""
    env = {
        **ENV,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    args = fit_args(tmp_path, cache_dir, f"--data.path={synthetic_mosi}")
    args[2] = "--data=test_cli_errors.WorkerFailsData"
    proc = run_msa(*args, cwd=tmp_path, env=env)
    assert_one_line_error(proc, "planted: clip 0 of the training data is unreadable (in DataLoader worker process 0)")
    assert "Original Traceback" not in proc.stderr


def test_model_that_cannot_run_on_the_data_names_both(tmp_path, cache_dir, capsys):
    """A frame-feature model on raw clips: one error naming both classes and the fields the data lacks.
    (It used to blame a missing data_facts(); setting audio_dim as that advised ended in an AttributeError.)"""
    from msa_lightning.media.synthetic import make_synthetic_raw

    raw = make_synthetic_raw(tmp_path / "raw")
    args = fit_args(tmp_path, cache_dir, f"--data.path={raw}")
    args[2] = "--data=RawMediaDataModule"
    needles = (
        "TFNModule cannot run on RawMediaDataModule",
        "['audio', 'audio_lengths', 'vision', 'vision_lengths']",
        "feature-file DataModule",
    )
    assert_one_line_error(run_msa(*args, cwd=tmp_path), *needles)
    code, err = in_process([*args, "--model.init_args.audio_dim=5", "--model.init_args.vision_dim=20"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("msa: error:")]
    assert code == 2 and len(lines) == 1 and all(n in lines[0] for n in needles), err
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


#: suite subcommand, bad arguments -> (the parser named in the hint, the message)
SUITE_PARSE_ERRORS = [
    (["data"], "msa data", "the following arguments are required: action"),
    (["data", "inspect"], "msa data inspect", "the following arguments are required: file"),
    (["data", "synth", "--out", "x.pkl", "--dataset", "nope"], "msa data synth", "argument --dataset: invalid choice"),
    (["data", "convert"], "msa data convert", "the following arguments are required: file"),
    (["data", "wer", "--nope"], "msa data wer", "unrecognized arguments: --nope"),
    (["seeds", "--out", "x"], "msa seeds", "the following arguments are required: --config"),
    (["report"], "msa report", "the following arguments are required: runs"),
    (["quickstart", "--epochs", "x"], "msa quickstart", "argument --epochs: invalid int value: 'x'"),
    (["plot", "hybrid-shift"], "msa plot hybrid-shift", "the following arguments are required: --ckpt"),
    (["export"], "msa export", "the following arguments are required: checkpoint"),
    (["export", "run", "--splits", "nope"], "msa export", "argument --splits: invalid choice: 'nope'"),
    (["pipeline"], "msa pipeline", "the following arguments are required: file"),
    (["transcribe", "--nope"], "msa transcribe", "the following arguments are required: --model"),
    (["pretrain-data"], "msa pretrain-data", "the following arguments are required: action"),
    (["pretrain-data", "build"], "msa pretrain-data build", "the following arguments are required: --transcripts"),
]


def test_suite_subcommand_parse_errors_are_one_line(tmp_path, capsys):
    """argparse errors of every suite subcommand: `msa: error:` and where --help is; no usage, exit 2."""
    for argv, prog, message in SUITE_PARSE_ERRORS:
        code, err = in_process(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 2, (argv, err)
        assert lines[0].startswith(f"msa: error: {message}"), (argv, err)
        assert lines[1] == f"(`{prog} --help` lists the options)", (argv, err)
    for argv, prog, message in (SUITE_PARSE_ERRORS[1], SUITE_PARSE_ERRORS[10]):  # the console script too
        proc = run_msa(*argv, cwd=tmp_path)
        assert_one_line_error(proc, message)
        assert (
            "usage:" not in proc.stderr
            and proc.stderr.strip().splitlines()[-1] == f"(`{prog} --help` lists the options)"
        )
