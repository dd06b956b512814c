"""``msa sweep``: the shipped W&B sweep run offline by W&B's engine on a tiny synthetic file (one sweep folder
shared by the end-to-end checks: a first call with two workers, an interrupted call, a call that resumes), the
report, the one-line errors, and the engine glue (grid exhaustion, run_cap, hyperband's view of the trials)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, assert_one_line_error, msa_in_process, run_msa
from tests.experiments.hold_callback import HOLD_ENV, HoldAtSecondEpoch

pytest.importorskip("sweeps")
pytest.importorskip("wandb")

SHIPPED = "configs/sweeps/tfn_mosi.yaml"


def _overrides(data: Path) -> list[str]:
    # tiny and quick: the sweep's own parameters stay as the engine draws them
    return [
        f"--data.path={data}",
        "--trainer.max_epochs=3",
        "--data.num_workers=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.callbacks+={HoldAtSecondEpoch.__module__}.HoldAtSecondEpoch",  # a no-op unless HOLD_ENV is set
    ]


def _wait_for(condition, timeout: float = 240.0) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.05)


def _trial_pid(out: Path, index: int) -> int | None:
    """The process id of the sweep's trial ``index`` once the runner has started it (None before)."""
    try:
        trials = json.loads((out / "sweep.json").read_text())["trials"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    return trials[index].get("pid") if len(trials) > index else None


def _history_epochs(folder: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (folder / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep_calls(synthetic_mosi, cache_dir, tmp_path_factory):
    """Three calls on one folder: 2 trials on 2 workers; a call interrupted (Ctrl-C) during its trial; a call that
    resumes that trial. Returns the folder and the three results."""
    out = tmp_path_factory.mktemp("sweep") / "tfn"
    args = [SHIPPED, "--out", out, "--", *_overrides(synthetic_mosi)]
    release = out.parent / "release-trial-0003"
    env = {"MSA_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    # the runner of the first and the last call in this process (its trials are subprocesses either way); the
    # interrupted call is the real command, a subprocess that gets the Ctrl-C
    first = msa_in_process(None, "sweep", *args[:1], "--count", "2", "--workers", "2", *args[1:], cwd=REPO, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "msa"), "sweep", SHIPPED, "--count", "1", *map(str, args[1:])],
        cwd=REPO,
        env={**os.environ, **env, HOLD_ENV: str(release)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the interrupted trial holds at the start of its second epoch (one checkpoint written) until the runner has
    # passed the Ctrl-C on to it: no race with its remaining epochs
    trial_log = out / "trial-0003" / "output.log"
    _wait_for(lambda: Path(f"{release}.held").exists())
    proc.send_signal(signal.SIGINT)  # Ctrl-C of the runner: it asks the trial once to save and stop
    _wait_for(lambda: trial_log.is_file() and "msa: Ctrl-C" in trial_log.read_text())
    Path(release).touch()
    stdout, stderr = proc.communicate(timeout=240)
    interrupted = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    state_after_interrupt = json.loads((out / "sweep.json").read_text())
    resumed = msa_in_process(None, "sweep", SHIPPED, "--count", "1", *args[1:], cwd=REPO, env=env)
    return out, first, interrupted, state_after_interrupt, resumed


@pytest.mark.slow
def test_sweep_runs_trials_ranks_them_and_logs_offline(sweep_calls):
    out, first, *_ = sweep_calls
    state = json.loads((out / "sweep.json").read_text())
    first_two = state["trials"][:2]
    assert [t["name"] for t in first_two] == ["trial-0001", "trial-0002"]
    assert all(t["state"] == "finished" and t["exitcode"] == 0 for t in first_two)
    definition = yaml.safe_load((REPO / SHIPPED).read_text())
    for trial in first_two:
        assert set(trial["values"]) == set(definition["parameters"])  # every parameter drawn by the engine
        lr = trial["values"]["model.lr"]
        assert definition["parameters"]["model.lr"]["min"] <= lr <= definition["parameters"]["model.lr"]["max"]
        folder = out / trial["name"]
        assert f"--model.lr={lr}" in trial["command"] and trial["command"][0] == "fit"
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        epochs = _history_epochs(folder)
        assert epochs == list(range(len(epochs))) and epochs  # one row per validation epoch
        runs = list((folder / "wandb").glob(f"offline-run-*-{state['sweep_id']}-{trial['name']}"))
        assert len(runs) == 1, list((folder / "wandb").iterdir())  # W&B offline, the trial's stable run id
    # the ranked table: printed and in report.md, best val/mae first
    table = [line for line in first.stdout.splitlines() if line.startswith("| ") and "trial-" in line]
    assert len(table) == 2
    values = [float(line.split("|")[4]) for line in table]
    assert values == sorted(values)
    assert "| 1 | trial-000" in (out / "report.md").read_text()
    assert (out / "metric_vs_params.png").stat().st_size > 1000
    assert "wandb sync" in first.stdout


@pytest.mark.slow
def test_interrupted_trial_resumes_and_counts_once(sweep_calls):
    out, _, interrupted, state_after_interrupt, resumed = sweep_calls
    assert_one_line_error(interrupted, "interrupted", "trial-0003")
    trials = state_after_interrupt["trials"]
    assert [t["name"] for t in trials] == ["trial-0001", "trial-0002", "trial-0003"]
    assert trials[2]["state"] == "interrupted"
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "trial-0003: resuming from" in resumed.stderr  # progress lines go to stderr, the report to stdout
    state = json.loads((out / "sweep.json").read_text())
    assert [t["name"] for t in state["trials"]] == ["trial-0001", "trial-0002", "trial-0003"]  # no new trial
    third = state["trials"][2]
    assert third["state"] == "finished" and third["runs"] == 2 and third["values"] == trials[2]["values"]
    epochs = _history_epochs(out / "trial-0003")
    assert sorted(set(epochs)) == [0, 1, 2]  # every epoch of --trainer.max_epochs=3 validated, none lost


@pytest.mark.slow
def test_report_of_a_sweep_folder(sweep_calls, capsys):
    out = sweep_calls[0]
    (out / "metric_vs_params.png").unlink()
    proc = msa_in_process(capsys, "report", out)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "trial-" in line]
    assert [line.split("|")[1].strip() for line in rows] == ["1", "2", "3"]
    assert (out / "metric_vs_params.png").is_file()


# ---------------------------------------------------------------------------------------------- bad input
def _write_sweep(path: Path, **changes) -> Path:
    definition = {
        "program": "msa",
        "method": "grid",
        "metric": {"name": "val/mae", "goal": "minimize"},
        "parameters": {"model.dropout": {"values": [0.1]}},
        "command": ["${program}", "fit", "--config", "configs/baselines/lf_dnn_mosi.yaml", "${args}"],
    }
    definition.update(changes)
    path.write_text(yaml.safe_dump(definition))
    return path


def test_method_the_engine_lacks_is_one_line(tmp_path):
    sweep = _write_sweep(tmp_path / "s.yaml", method="hyperopt")
    proc = run_msa("sweep", sweep, "--count", "1", "--out", tmp_path / "out", cwd=REPO)
    assert_one_line_error(proc, str(sweep), "method 'hyperopt'", "grid, random, bayes")
    assert not (tmp_path / "out" / "sweep.json").exists()


def test_unknown_parameter_key_is_one_line(tmp_path, capsys, synthetic_mosi):
    sweep = _write_sweep(tmp_path / "s.yaml", parameters={"model.dropoutt": {"values": [0.1, 0.2]}})
    proc = msa_in_process(capsys, "sweep", sweep, "--count", "1", "--out", tmp_path / "out", cwd=REPO)
    assert_one_line_error(proc, str(sweep), "parameter 'model.dropoutt'")
    assert not (tmp_path / "out" / "sweep.json").exists()  # nothing started


def test_metric_no_trial_logs_is_one_line(tmp_path, capsys, synthetic_mosi, cache_dir):
    sweep = _write_sweep(tmp_path / "s.yaml", metric={"name": "val/maee", "goal": "minimize"})
    overrides = [f"--data.path={synthetic_mosi}", "--trainer.max_epochs=1", "--data.num_workers=0"]
    proc = msa_in_process(
        capsys,
        "sweep",
        sweep,
        "--count",
        "2",
        "--out",
        tmp_path / "out",
        "--",
        *overrides,
        cwd=REPO,
        env={"MSA_CACHE_DIR": str(cache_dir)},
    )
    line = assert_one_line_error(proc, "metric 'val/maee' is not logged", "val/mae")
    assert "trial-0001" in line
    assert not (tmp_path / "out" / "trial-0002").exists()  # the sweep stopped at the first finished trial


# ---------------------------------------------------------------------------------------------- engine glue
def _sweep_with_histories(tmp_path: Path, definition: dict, histories: dict[str, tuple[str, list[float]]]):
    from msa_lightning.experiments.sweep import Sweep, Trial

    sweep = Sweep(tmp_path, "s.yaml", definition, [], "0000abcd")
    for i, (name, (state, curve)) in enumerate(histories.items()):
        sweep.trials.append(Trial(name, {"a": i + 1}, state=state))
        (tmp_path / name).mkdir()
        rows = [json.dumps({"epoch": e, "step": e, "loss": v}) for e, v in enumerate(curve)]
        (tmp_path / name / "history.jsonl").write_text("\n".join(rows) + "\n")
    return sweep


def test_hyperband_sees_each_trials_curve(tmp_path):
    """The engine's hyperband on the trials' history files: the running trial behind at band 2 is stopped."""
    from msa_lightning.experiments.sweep import _engine, engine_runs

    definition = {
        "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "early_terminate": {"type": "hyperband", "max_iter": 5, "eta": 2, "s": 2},
        "parameters": {"a": {"values": [1, 2, 3, 4, 5]}},
    }
    sweep = _sweep_with_histories(
        tmp_path,
        definition,
        {
            "a": ("finished", [10, 9]),
            "b": ("running", [10, 10]),
            "c": ("running", [10, 8, 8]),
            "d": ("interrupted", [10, 7, 7]),
            "e": ("stopped", [10, 6, 6]),
        },
    )
    stopped = {r.name for r in _engine().stop_runs(definition, engine_runs(sweep), validate=True)}
    assert stopped == {"b"}  # behind the others at the first band; finished and stopped trials are never picked


def test_grid_ends_and_run_cap_caps(tmp_path):
    from msa_lightning.experiments.sweep import propose

    definition = {
        "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"a": {"values": [1, 2]}},
    }
    sweep = _sweep_with_histories(tmp_path, definition, {"x": ("finished", [1.0])})
    assert propose(sweep) == {"a": 2}  # the grid point not yet run
    sweep.trials[0].values = {"a": 2}
    sweep.trials.append(type(sweep.trials[0])("y", {"a": 1}, state="failed"))
    assert propose(sweep) is None  # every point ran (a failed one too)
    random = {**definition, "method": "random", "run_cap": 2}
    sweep.definition = random
    assert propose(sweep) is None
