"""``msa pipeline FILE --set KEY=VALUE --seeds ...``: settings for every stage that has the key, paths relative to
the pipeline file, the tables of ``msa seeds`` per seed, ``msa report --ttest`` on them, and a failed stage that
leaves no folder behind."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import assert_one_line_error, cli_calls_in_process, msa_in_process, run_msa  # noqa: E402


@pytest.fixture(scope="module")
def experiment(synthetic_mosi, cache_dir, tmp_path_factory):
    """An experiment folder as a user keeps one: the pipeline file, its stage config and its data side by side,
    every path in the pipeline file relative to it; the command runs from another folder."""
    root = tmp_path_factory.mktemp("seeded")
    exp = root / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "mosi.pkl").symlink_to(synthetic_mosi)
    stage = {
        "model": {"class_path": "TFNModule", "init_args": {"lr": 3e-3}},
        "data": {"class_path": "MOSIDataModule", "init_args": {"batch_size": 16, "cache_dir": str(cache_dir)}},
        "trainer": {"accelerator": "cpu", "max_epochs": 3, "enable_progress_bar": False, "enable_model_summary": False},
    }
    (exp / "stage.yaml").write_text(yaml.safe_dump(stage))
    pipeline = {
        "name": "tfn",
        "out": "runs",
        "stages": [{"name": "tfn", "args": ["--config", "stage.yaml", "--data.init_args.path=data/mosi.pkl"]}],
    }
    (exp / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return exp, elsewhere


@pytest.fixture(scope="module")
def seeded(experiment):
    """`msa pipeline --seeds 1111 1112` through the console script's entry point in this process, its stages too
    (``cli_calls_in_process``: four Python starts would cost more than the runs). The real command, a subprocess,
    is test_another_pipelines_tables_are_refused_by_the_real_command below."""
    exp, elsewhere = experiment
    ran: list[list[str]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "call", cli_calls_in_process(ran))
        proc = msa_in_process(
            None, "pipeline", exp / "pipeline.yaml", "--seeds", "1111", "1112", "--set", "trainer.max_epochs=1",
            cwd=elsewhere,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert [args[0] for args in ran] == ["fit", "test"] * 2
    return exp, elsewhere, proc


def test_seeds_write_the_tables_of_msa_seeds(seeded):
    from msa_lightning.experiments.results import read_per_seed_csv, read_summary_csv

    exp, elsewhere, proc = seeded
    runs = exp / "runs"  # the file's `out`, relative to its folder, not to where the command ran
    assert not list(elsewhere.iterdir())
    per_seed = read_per_seed_csv(runs)
    assert sorted(per_seed) == [1111, 1112]
    assert per_seed[1111]["mae"] != per_seed[1112]["mae"]  # each seed its own run
    name, summary = read_summary_csv(runs / "summary.csv")
    mean = (per_seed[1111]["mae"] + per_seed[1112]["mae"]) / 2
    assert name == "tfn" and summary["mae"][0] == pytest.approx(mean)
    assert json.loads((runs / "seeds.json").read_text())["pipeline"] == str(exp / "pipeline.yaml")
    for seed in (1111, 1112):
        record = json.loads((runs / f"seed{seed}" / "tfn" / "stage.json").read_text())
        command = record["command"]
        assert f"--seed_everything={seed}" in command and "--trainer.max_epochs=1" in command  # --set
        assert str(exp / "stage.yaml") in command and f"--data.init_args.path={exp / 'data' / 'mosi.pkl'}" in command
        assert record["tested"] == record["best_ckpt"]  # the result stage ends with `msa test`
    assert "tfn (mean ± std, n=2)" in proc.stdout


def test_report_ttest_of_a_pipeline_against_a_baseline(seeded, tmp_path):
    exp, elsewhere, _ = seeded
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    with open(baseline / "per_seed.csv", "w", newline="") as f:
        csv.writer(f).writerows([["seed", "mae", "corr"], [1111, 1.5, 0.1], [1112, 1.7, 0.2], [1113, 1.6, 0.3]])
    proc = run_msa("report", str(exp / "runs"), str(baseline), "--ttest", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Paired t-test over 2 seeds (1111, 1112)" in proc.stdout
    assert [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| m")][1:] == [
        "mae"
    ]  # the metrics both logged


def test_another_pipelines_tables_are_refused_by_the_real_command(seeded):
    """The real `msa pipeline --seeds` (a subprocess, as the README runs it) on the folder of the seeds above with
    another setting: the tables there belong to another pipeline run, refused with one line before any stage."""
    exp, elsewhere, _ = seeded
    before = sorted(p.name for p in (exp / "runs").iterdir())
    proc = run_msa(
        "pipeline", exp / "pipeline.yaml", "--seeds", "1113", "--set", "trainer.max_epochs=2", cwd=elsewhere
    )  # fmt: skip
    assert_one_line_error(
        proc,
        str(exp / "runs"),
        "holds seeds 1111, 1112 of another config",
        "trainer.max_epochs=1 -> trainer.max_epochs=2",
    )
    assert sorted(p.name for p in (exp / "runs").iterdir()) == before  # no seed1113 folder


def test_set_a_key_no_stage_has_and_a_malformed_setting(experiment, capsys):
    exp, elsewhere = experiment
    pipeline = str(exp / "pipeline.yaml")
    proc = msa_in_process(capsys, "pipeline", pipeline, "--set", "model.init_args.text_model=tiny-bert", cwd=elsewhere)
    assert_one_line_error(proc, pipeline, "no stage has the setting 'model.init_args.text_model'")
    proc = msa_in_process(capsys, "pipeline", pipeline, "--set", "trainer.max_epochs", "--dry-run", cwd=elsewhere)
    assert_one_line_error(proc, "--set 'trainer.max_epochs': expected [STAGE:]KEY=VALUE")
    missing = exp / "missing.yaml"
    missing.write_text(yaml.safe_dump({"stages": [{"name": "a", "args": ["--config", "nope.yaml"]}]}))
    proc = msa_in_process(capsys, "pipeline", str(missing), "--dry-run", cwd=elsewhere)
    assert_one_line_error(proc, "stage 'a': config file 'nope.yaml' not found in " + str(exp))
    assert not list(elsewhere.iterdir())


def test_a_failed_stage_leaves_no_stray_folders(experiment, tmp_path, capsys):
    """The stage's `msa fit` (a subprocess) stops at its start (a negative learning rate given with --set): the
    pipeline ends with exit status 2 and the out folder it would have created is not there."""
    exp, elsewhere = experiment
    out = tmp_path / "nested" / "runs"
    proc = msa_in_process(capsys, "pipeline", str(exp / "pipeline.yaml"), "--set", "model.lr=-1", "--out", out)
    assert_one_line_error(proc, "pipeline tfn: stage 'tfn' failed (msa fit exited with 2")
    assert not (tmp_path / "nested").exists()
