"""``msa pipeline`` (stages as ordinary ``msa fit`` subprocesses, substitutions, skip when up to date,
``--only``, ``--dry-run``, one-line errors) and ``msa export`` (store entries keyed by checkpoint content)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from msa_lightning.errors import ConfigError
from tests.conftest import assert_one_line_error, msa_in_process


def _msa(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _fit_args(data: Path, cache: Path, epochs: int) -> list[str]:
    return [
        "--model=TFNModule",
        "--model.lr=3e-3",
        "--data=MOSIDataModule",
        f"--data.path={data}",
        f"--data.cache_dir={cache}",
        "--data.batch_size=16",
        "--trainer.accelerator=cpu",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def two_stages(synthetic_mosi, cache_dir, tmp_path_factory):
    """A 2-stage pipeline: `first` fits one epoch and exports; `second` continues from first's last.ckpt."""
    root = tmp_path_factory.mktemp("pipeline")
    spec = {
        "name": "two",
        "out": str(root / "runs"),
        "stages": [
            {
                "name": "first",
                "args": _fit_args(synthetic_mosi, cache_dir, 1),
                "export": {"outputs": ["M", "features.fusion"], "splits": ["train", "test"]},
            },
            {
                "name": "second",
                "needs": ["first"],
                "args": _fit_args(synthetic_mosi, cache_dir, 2) + ["--ckpt_path=${first.last_ckpt}"],
            },
        ],
    }
    path = _write(root / "two.yaml", spec)
    proc = _msa("pipeline", str(path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return path, root / "runs", proc


def test_pipeline_runs_stages_in_order_with_substitutions_and_export(two_stages, synthetic_mosi, cache_dir):
    from msa_lightning.data.reader import read_feature_file
    from msa_lightning.experiments.pipeline import read_record
    from msa_lightning.store import Entry, content_hash

    path, runs, proc = two_stages
    first, second = read_record(runs / "first"), read_record(runs / "second")
    assert first["status"] == second["status"] == "finished"
    assert proc.stderr.index("stage first: msa fit") < proc.stderr.index("stage second: msa fit")
    # stage 2 continued from stage 1's last checkpoint: 4 steps of stage 1 + 4 of its own
    assert torch.load(second["last_ckpt"], weights_only=False)["global_step"] == 8
    assert f"--ckpt_path={first['last_ckpt']}" in second["command"]
    # stage 1's export: the store entry of its best checkpoint, rows in the file's id order
    assert f"-> {first['export']}" in proc.stderr
    entry = Entry(first["export"])
    splits = read_feature_file(synthetic_mosi)
    for split in ("train", "test"):
        assert entry.meta["ids"][split] == [str(i) for i in splits[split].ids]
        assert entry[f"{split}/M"].shape == (len(splits[split].ids),)
        assert entry[f"{split}/features.fusion"].shape[0] == len(splits[split].ids)
        assert np.isfinite(entry[f"{split}/M"]).all()
    assert "valid/M" not in entry
    assert entry.meta["inputs"]["checkpoint"] == content_hash(first["best_ckpt"])
    assert entry.meta["checkpoint"] == str(Path(first["best_ckpt"]).resolve())


def test_rerun_skips_finished_stages_and_only_and_dry_run(two_stages, capsys):
    from msa_lightning.experiments.pipeline import pipeline_plan, read_record

    path, runs, _ = two_stages
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*.ckpt")}
    again = _msa("pipeline", str(path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stage first is up to date, skipped" in again.stderr
    assert "stage second is up to date, skipped" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.ckpt")} == before  # nothing was refitted
    lines = pipeline_plan(path, only="second")
    assert len(lines) == 1 and lines[0].startswith("[second] msa fit ")
    assert f"--ckpt_path={read_record(runs / 'first')['last_ckpt']}" in lines[0]


def test_changed_stage_command_reruns_it(two_stages, tmp_path):
    """A stage whose command line changed is not skipped (here: --only, with a changed learning rate)."""
    from msa_lightning.experiments.pipeline import read_record

    path, runs, _ = two_stages
    spec = yaml.safe_load(path.read_text())
    spec["stages"][1]["args"] = [a.replace("--model.lr=3e-3", "--model.lr=1e-3") for a in spec["stages"][1]["args"]]
    changed = _write(path.parent / "changed.yaml", spec)
    before = read_record(runs / "second")
    proc = _msa("pipeline", str(changed), "--only", "second")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stage second: msa fit" in proc.stderr and "up to date" not in proc.stderr
    after = read_record(runs / "second")
    assert after["started"] >= before["started"] and "--model.lr=1e-3" in after["command"]


@pytest.mark.parametrize(
    "stages, message",
    [
        (
            [{"name": "a", "args": ["--x=${b.best_ckpt}"], "needs": ["a0"]}, {"name": "a0", "args": []}],
            "stage 'a' refers to ${b.best_ckpt}, but no stage is named 'b'",
        ),
        (
            [{"name": "a", "needs": ["b"], "args": []}, {"name": "b", "needs": ["a"], "args": []}],
            "the needs form a cycle: a -> b -> a",
        ),
        (
            [{"name": "a", "args": []}, {"name": "b", "args": ["--x=${a.last_ckpt}"]}],
            "stage 'b' refers to ${a.last_ckpt} but does not list 'a' in its needs",
        ),
        (
            [{"name": "a", "args": []}, {"name": "b", "needs": ["a"], "args": ["--x=${a.export}"]}],
            "stage 'b' refers to ${a.export}, but stage 'a' has no 'export' section",
        ),
        ([{"name": "a", "needs": ["zz"], "args": []}], "stage 'a' needs 'zz', but no stage has that name"),
    ],
    ids=["unknown-reference", "cycle", "missing-needs", "no-export", "unknown-need"],
)
def test_pipeline_errors_name_the_problem(stages, message, tmp_path):
    from msa_lightning.experiments.pipeline import load_pipeline

    path = _write(tmp_path / "bad.yaml", {"name": "bad", "out": str(tmp_path / "runs"), "stages": stages})
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_pipeline_error_is_one_line_from_the_command(tmp_path):
    path = _write(
        tmp_path / "bad.yaml",
        {
            "name": "bad",
            "stages": [{"name": "a", "needs": ["b"], "args": []}, {"name": "b", "needs": ["a"], "args": []}],
        },
    )
    proc = _msa("pipeline", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"msa: error: pipeline {path}: the needs form a cycle: a -> b -> a"]
    assert not (tmp_path / "runs").exists()


def test_export_is_keyed_by_checkpoint_content(two_stages, synthetic_mosi, cache_dir, tmp_path, caplog):
    from msa_lightning.experiments.export import export_command
    from msa_lightning.experiments.pipeline import read_record

    first = read_record(two_stages[1] / "first")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(Path(first["best_ckpt"]).read_bytes())
    args = _fit_args(synthetic_mosi, cache_dir, 1)
    with caplog.at_level(logging.INFO, logger="msa_lightning"):
        a = export_command(str(ckpt), args, outputs=["M"], splits=["test"])
    assert f"msa: exported: M of {ckpt}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="msa_lightning"):
        again = export_command(str(ckpt), args, outputs=["M"], splits=["test"])
    assert again.path == a.path and "export up to date" in caplog.text
    # the same file name with other weights: a new entry with other numbers, never the stale arrays
    state = torch.load(ckpt, weights_only=False)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point() and v.dim() == 2)
    state["state_dict"][name] = state["state_dict"][name] + 0.5
    torch.save(state, ckpt)
    b = export_command(str(ckpt), args, outputs=["M"], splits=["test"])
    assert b.path != a.path
    assert not np.array_equal(a["test/M"], b["test/M"])


def test_export_command_line_errors(two_stages, tmp_path, capsys):
    stage_folder = two_stages[1] / "first"  # its best checkpoint and the config.yaml saved by its fit
    proc = _msa("export", str(stage_folder), "--outputs", "features.nope", "--splits", "test")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("msa: error: export: TFNModule has no output 'features.nope'; its outputs: M, features.fusion")
    )
    assert "Traceback" not in proc.stderr
    # `heldout` exists only in a fold run of K-fold stacking (its export is tested in tests/fmlmsn/test_kfold.py)
    proc = msa_in_process(capsys, "export", stage_folder, "--splits", "heldout")
    assert_one_line_error(proc, "export splits: 'heldout' is the held-out fold of a K-fold stacking run")


def test_stage_test_runs_msa_test_of_the_best_checkpoint(
    synthetic_mosi, cache_dir, tmp_path, capsys, stages_in_process
):
    """`test: true` added to a finished stage runs only `msa test` of its best checkpoint, into the stage folder,
    where the report reads test metrics; a third run does nothing (the pipeline and its stages in-process: the
    fixture above runs them as subprocesses)."""
    from msa_lightning.experiments.pipeline import read_record
    from msa_lightning.experiments.results import stage_metrics

    stage = {"name": "only", "args": _fit_args(synthetic_mosi, cache_dir, 1)}
    spec = {"name": "tested", "out": str(tmp_path / "runs"), "stages": [stage]}
    assert msa_in_process(capsys, "pipeline", _write(tmp_path / "p.yaml", spec)).returncode == 0
    folder = tmp_path / "runs" / "only"
    assert stage_metrics(folder, read_record(folder), "test") is None

    stage["test"] = True
    proc = msa_in_process(capsys, "pipeline", _write(tmp_path / "p.yaml", spec))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "stage only: msa fit" not in proc.stderr and "stage only: msa test" in proc.stderr
    record = read_record(folder)
    assert record["tested"] == record["best_ckpt"]
    metrics = stage_metrics(folder, record, "test")
    assert metrics is not None and np.isfinite(metrics["mae"])

    proc = msa_in_process(capsys, "pipeline", _write(tmp_path / "p.yaml", spec))
    assert "is up to date, skipped" in proc.stderr and "msa test" not in proc.stderr
    assert [args[0] for args in stages_in_process] == ["fit", "test"]


def test_stage_test_must_be_a_boolean(tmp_path):
    spec = {"name": "x", "out": str(tmp_path), "stages": [{"name": "a", "args": [], "test": "yes"}]}
    proc = _msa("pipeline", str(_write(tmp_path / "p.yaml", spec)))
    assert proc.returncode == 2 and "stage 'a': 'test' must be true or false, found 'yes'" in proc.stderr


def _one_error(proc: subprocess.CompletedProcess, *parts: str) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("msa: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def test_pipeline_file_encodings_and_an_out_that_is_a_file(tmp_path):
    """A BOM and CRLF line ends are read; a Latin-1 byte and an `out:` that is a file are one error line each."""
    text = yaml.safe_dump(
        {
            "name": "enc",
            "out": str(tmp_path / "runs"),
            "stages": [{"name": "a", "args": ["--model=TFNModule", "--trainer.max_epochs=1"]}],
        },
        sort_keys=False,
    )
    windows = tmp_path / "windows.yaml"
    windows.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    proc = _msa("pipeline", str(windows), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[a] msa fit --model=TFNModule --trainer.max_epochs=1 " in proc.stdout

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(text.replace("name: enc", "name: enc # caf\xe9").encode("latin-1"))
    _one_error(_msa("pipeline", str(latin1), "--dry-run"), str(latin1), "line 1", "not UTF-8", "0xe9")

    (tmp_path / "taken").write_text("not a folder\n")
    taken = _write(
        tmp_path / "taken.yaml", {"name": "x", "out": str(tmp_path / "taken"), "stages": [{"name": "a", "args": []}]}
    )
    _one_error(_msa("pipeline", str(taken)), str(taken), f"out {str(tmp_path / 'taken')!r} is an existing file")
    assert (tmp_path / "taken").read_text() == "not a folder\n"
