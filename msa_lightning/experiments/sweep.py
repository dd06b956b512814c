"""``msa sweep SWEEP.yaml --count N --out DIR``: a W&B sweep definition run locally and offline, by W&B's own
sweep engine (the ``sweeps`` package: ``grid``, ``random``, ``bayes``, parameter distributions, hyperband
``early_terminate``), without a W&B server.

* **Trials** are ordinary ``msa fit`` processes: the definition's ``command`` expanded as the W&B agent expands it
  (``${program}``, ``${args}``, ... through wandb's own macro functions), plus the overrides given after ``--``,
  with ``--trainer.default_root_dir DIR/<trial>`` and ``--checkpoint.dirpath DIR/<trial>/checkpoints``. Each
  trial's output goes to ``DIR/<trial>/output.log``; its validation metrics per epoch to
  ``DIR/<trial>/history.jsonl`` (:class:`~msa_lightning.training.callbacks.MetricsHistory`, switched on by
  ``MSA_METRICS_HISTORY``), which the engine reads: the objective for ``bayes``, learning curves for hyperband.
* **W&B** runs offline (``WANDB_MODE=offline`` unless set) with one group per sweep (``WANDB_RUN_GROUP``) and a
  stable run id per trial, so ``wandb sync DIR/trial-*/wandb/offline-run-*`` uploads the sweep later.
* **State** lives in ``DIR/sweep.json`` (the definition, the overrides, every trial with its parameter values and
  state), written atomically after every change. A second call continues the sweep: trials that were interrupted
  resume from their newest checkpoint (``interrupted.ckpt`` or ``last.ckpt``; with none, they run again), under
  the same name, so no trial is counted twice, and the engine sees every earlier trial. One process at a time
  holds ``DIR`` (a lock file).
* ``--workers K`` runs K trials at once, each with ``cpu_count // K`` threads or, on a machine with GPUs, one GPU
  (``CUDA_VISIBLE_DEVICES``).
* **Report**: trials ranked by the sweep's metric (its best value over the trial's validations, as the bayes engine
  scores a run) in ``DIR/report.md``, and the metric against each parameter in ``DIR/metric_vs_params.png``;
  printed at the end and by ``msa report DIR``.

``--count N`` is, as for ``wandb agent --count``, the number of trials this call runs (resumed ones included);
``run_cap`` in the definition caps the sweep's total; a grid ends when every point has run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from msa_lightning.checkpoints import METRICS_HISTORY_ENV, newest_resume_checkpoint, read_metrics_history
from msa_lightning.errors import ConfigError, MSAError
from msa_lightning.textfiles import read_yaml_mapping

logger = logging.getLogger(__name__)

STATE = "sweep.json"
LOCK = ".sweep.lock"
HISTORY = "history.jsonl"
REPORT = "report.md"
PLOT = "metric_vs_params.png"
#: the search methods of W&B's own engine (``custom`` needs an external scheduler)
METHODS = ("grid", "random", "bayes")
#: trial states; "running" on disk after the runner was killed, "interrupted" after a clean Ctrl-C
TERMINAL = ("finished", "stopped", "failed")
POLL_S = 0.5


class SweepInterrupted(MSAError):
    """Ctrl-C (or SIGTERM) stopped the sweep; its running trials saved checkpoints and resume next time."""


@dataclass
class Trial:
    name: str
    values: dict[str, Any]
    state: str = "running"
    exitcode: int | None = None
    command: list[str] = field(default_factory=list)
    runs: int = 0  # processes started for it (1 + resumes)
    seconds: float = 0.0  # wall time of its processes
    pid: int | None = None  # its `msa fit` process while it runs


@dataclass
class Sweep:
    """A sweep definition and its trials, as kept in ``DIR/sweep.json``."""

    out: Path
    source: str
    definition: dict
    overrides: list[str]
    sweep_id: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.definition.get("name") or Path(self.source).stem)

    @property
    def metric(self) -> str:
        return self.definition["metric"]["name"]

    @property
    def goal(self) -> str:
        return self.definition["metric"].get("goal", "minimize")

    @property
    def group(self) -> str:
        return f"{self.name}-{self.sweep_id}"

    def folder(self, trial: Trial) -> Path:
        return self.out / trial.name

    def history(self, trial: Trial) -> list[dict[str, float]]:
        return read_metrics_history(self.folder(trial) / HISTORY)

    def save(self) -> None:
        record = {
            "source": self.source,
            "definition": self.definition,
            "overrides": self.overrides,
            "sweep_id": self.sweep_id,
            "trials": [asdict(t) for t in self.trials],
        }
        tmp = self.out / (STATE + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, self.out / STATE)


# ---------------------------------------------------------------------------------------------- the definition
def _engine():
    """The ``sweeps`` package (W&B's engine), with its import-time pydantic notice silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic: "Valid config keys have changed in V2" (sweeps 0.3.0)
            import sweeps
    except ImportError:
        raise MSAError(
            "msa sweep needs W&B's sweep engine: pip install --no-deps -r requirements/no-deps.txt "
            "(the `sweeps` package; README: Sweeps)"
        ) from None
    return sweeps


def load_definition(path: str | Path) -> dict:
    """Read and check a W&B sweep YAML; every problem is one ConfigError naming the file."""
    where = f"sweep {path}"
    definition = read_yaml_mapping(path, "sweep", "method, metric, parameters and command")
    method = definition.get("method")
    if method not in METHODS:
        raise ConfigError(
            f"{where}: method {method!r}: W&B's sweep engine runs {', '.join(METHODS)} locally"
            + (" (custom needs an external scheduler)" if method == "custom" else "")
        )
    violations = _engine().schema_violations_from_proposed_config(definition)
    if violations:
        raise ConfigError(f"{where}: " + "; ".join(dict.fromkeys(v.splitlines()[0] for v in violations)))
    if not isinstance(definition.get("metric"), dict) or not definition["metric"].get("name"):
        raise ConfigError(f"{where}: no metric to rank the trials by (metric: {{name: val/mae, goal: minimize}})")
    if "scheduler" in definition:
        raise ConfigError(f"{where}: 'scheduler' needs an external engine; msa sweep runs W&B's own")
    program = str(definition.get("program", ""))
    if program not in ("msa", "") or "command" not in definition:
        raise ConfigError(
            f"{where}: trials are `msa fit` runs: give `program: msa` and a command "
            "[${program}, fit, --config, ..., ${args}]"
        )
    return definition


def trial_command(definition: dict, values: dict[str, Any], overrides: list[str], where: str) -> list[str]:
    """The ``msa fit`` arguments the W&B agent would run for ``values`` (its own macro expansion), then
    ``overrides``. ``${program}`` is the ``msa`` command; ``${env}``/``${interpreter}`` are dropped."""
    from wandb.sdk.launch.sweeps import utils as agent_macros

    words = agent_macros.create_sweep_command([str(w) for w in definition["command"]])
    expanded = agent_macros.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    expanded.update(program=["msa"], env=[], interpreter=[])
    args: list[str] = []
    for word in words:
        if word.startswith("${") and word.endswith("}"):
            macro = word[2:-1]
            if macro not in expanded or not isinstance(expanded[macro], list):
                raise ConfigError(f"{where}: command macro {word} is not one the W&B agent expands for msa")
            args += [str(w) for w in expanded[macro]]
        else:
            args.append(word)
    if args[:2] != ["msa", "fit"]:
        raise ConfigError(f"{where}: the command must run `msa fit ...` (it runs {' '.join(args[:2])!r})")
    return [*args[1:], *overrides]


def check_command(definition: dict, overrides: list[str], where: str) -> None:
    """``msa fit --print_config`` of one trial's command (values proposed by the engine): an unknown parameter
    key, a bad config or override is one ConfigError before any trial starts."""
    values = _values(_engine().next_run({**definition, "method": "random"}, [], validate=True))
    args = trial_command(definition, values, overrides, where)
    proc = subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", *args, "--print_config"],
        capture_output=True,
        text=True,
        env={**os.environ, "MSA_DEBUG": "0"},
    )
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.splitlines() if line.startswith("msa: error:")]
    message = lines[-1][len("msa: error:") :].strip() if lines else (proc.stderr.strip().splitlines() or ["?"])[-1]
    # jsonargparse names the option by its full key or, inside a class's arguments, by its last part
    named = [k for k in definition["parameters"] if k in message or f"'{k.rsplit('.', 1)[-1]}'" in message]
    what = f"parameter {named[0]!r}" if named else "the trial command"
    raise ConfigError(f"{where}: {what} is rejected by msa fit: {message}")


def _values(run) -> dict[str, Any]:
    """``{name: value}`` of an engine proposal (its config is ``{name: {"value": v}}``)."""
    return {k: v["value"] for k, v in run.config.items()}


# ---------------------------------------------------------------------------------------------- state
def open_sweep(out: Path, source: str, definition: dict, overrides: list[str]) -> Sweep:
    """The sweep kept in ``out`` (same definition and overrides, or a ConfigError), or a new one (its trial
    command checked first)."""
    path = out / STATE
    if not path.is_file():
        check_command(definition, list(overrides), f"sweep {source}")  # once, before the sweep exists
        digest = hashlib.sha256(f"{out.resolve()}{time.time_ns()}".encode()).hexdigest()[:8]
        sweep = Sweep(out, source, definition, list(overrides), digest)
        sweep.save()
        return sweep
    try:
        record = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path}: not a readable sweep state (JSON); move it away to start afresh") from None
    if record.get("definition") != definition:
        raise ConfigError(
            f"{out} holds a sweep of another definition ({record.get('source')}); give another --out "
            f"for {source}, or run that definition there"
        )
    if record.get("overrides") != list(overrides):
        raise ConfigError(
            f"{out} holds a sweep run with overrides {record.get('overrides')}, not {list(overrides)}: "
            "give the same overrides to continue it, or another --out"
        )
    trials = [Trial(**t) for t in record.get("trials", [])]
    return Sweep(out, record.get("source", source), definition, list(overrides), record["sweep_id"], trials)


def read_sweep(out: str | Path) -> Sweep:
    """The sweep kept in ``out`` (for reports)."""
    path = Path(out) / STATE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        raise MSAError(f"{out}: no sweep state ({STATE}) there; `msa sweep ... --out {out}` writes it") from None
    trials = [Trial(**t) for t in record.get("trials", [])]
    return Sweep(Path(out), record["source"], record["definition"], record["overrides"], record["sweep_id"], trials)


def is_sweep_folder(path: str | Path) -> bool:
    return (Path(path) / STATE).is_file()


@contextlib.contextmanager
def _holding(out: Path) -> Iterator[None]:
    """One ``msa sweep`` at a time in ``out``."""
    with open(out / LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise MSAError(f"{out}: another msa sweep is running there (it holds {out / LOCK})") from None
        yield


def engine_runs(sweep: Sweep) -> list:
    """Every trial as a ``sweeps.SweepRun``: its values, state (stopped by hyperband = finished; interrupted =
    running) and the history of its metric (each epoch once)."""
    sweeps = _engine()
    states = {"finished": "finished", "stopped": "finished", "failed": "failed"}
    runs = []
    for trial in sweep.trials:
        history = [{k: v for k, v in row.items() if k == sweep.metric} for row in sweep.history(trial)]
        runs.append(
            sweeps.SweepRun(
                name=trial.name,
                state=states.get(trial.state, "running"),
                config={k: {"value": v} for k, v in trial.values.items()},
                history=history,
                summary_metrics=history[-1] if history else {},
            )
        )
    return runs


def propose(sweep: Sweep) -> dict[str, Any] | None:
    """The engine's next parameter values, or None when the sweep is complete (a grid ran every point, or
    ``run_cap`` trials exist). Random draws are seeded by the sweep and the trial number (reproducible)."""
    import numpy as np

    cap = sweep.definition.get("run_cap")
    if cap is not None and len(sweep.trials) >= int(cap):
        return None
    np.random.seed(int(sweep.sweep_id, 16) % (2**31) + len(sweep.trials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's GP convergence notices (bayes on few points)
        run = _engine().next_run(sweep.definition, engine_runs(sweep), validate=True)
    return None if run is None else _values(run)


# ---------------------------------------------------------------------------------------------- running
@dataclass
class _Running:
    trial: Trial
    proc: subprocess.Popen
    slot: int
    started: float
    stopping: bool = False  # asked to stop by early termination


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _slot_env(slot: int, workers: int, gpus: int) -> dict[str, str]:
    """Each of ``workers`` concurrent trials: one GPU, or its share of the CPU threads."""
    if workers == 1:
        return {}
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        return {"CUDA_VISIBLE_DEVICES": ids[slot]}
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def _trial_env(sweep: Sweep, trial: Trial, slot_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **slot_env}
    env.setdefault("WANDB_MODE", "offline")  # never a login prompt; `wandb sync` later
    env.update(
        {
            "WANDB_RUN_GROUP": sweep.group,
            "WANDB_NAME": f"{sweep.name}-{trial.name}",
            "WANDB_RUN_ID": f"{sweep.sweep_id}-{trial.name}",
            "WANDB_RESUME": "allow",
            METRICS_HISTORY_ENV: str(sweep.folder(trial) / HISTORY),
        }
    )
    env.pop("MSA_DEBUG", None)
    # each trial starts its own W&B service: one inherited from the caller (a notebook, a test process that used
    # wandb) would outlive a killed trial and hold its run id, so the trial's resume would find the id "in use"
    env.pop("WANDB_SERVICE", None)
    return env


def _start(sweep: Sweep, trial: Trial, slot: int, slot_env: dict[str, str]) -> _Running:
    """Start (or resume) ``trial``'s ``msa fit``: a fresh one runs its command, an unfinished one continues from
    its newest checkpoint (none: it runs again from scratch, its old history dropped)."""
    folder = sweep.folder(trial)
    newest = newest_resume_checkpoint(folder / "checkpoints")
    resume: list[str] = []
    if trial.runs and newest is not None:
        resume = [f"--ckpt_path={newest}"]
        logger.info(f"msa: sweep {sweep.name}: {trial.name}: resuming from {newest}")
    elif trial.runs:
        (folder / HISTORY).unlink(missing_ok=True)  # a rerun from scratch: its epochs are new
        logger.info(f"msa: sweep {sweep.name}: {trial.name}: no checkpoint yet, running it again")
    folder.mkdir(parents=True, exist_ok=True)
    command = [*trial.command, *resume]
    trial.state, trial.runs = "running", trial.runs + 1
    sweep.save()
    log = open(folder / "output.log", "a")
    log.write(f"\n$ msa {' '.join(shlex.quote(a) for a in command)}\n")
    log.flush()
    proc = subprocess.Popen(
        [sys.executable, "-m", "msa_lightning.cli", *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_trial_env(sweep, trial, slot_env),
        start_new_session=True,  # Ctrl-C reaches the runner only, which asks each trial once to stop
    )
    log.close()
    trial.pid = proc.pid
    sweep.save()
    return _Running(trial, proc, slot, time.monotonic())


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _last_error(folder: Path) -> str:
    try:
        lines = (folder / "output.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("msa: error:")]
    return errors[-1] if errors else (lines[-1] if lines else "")


def best_value(sweep: Sweep, trial: Trial) -> tuple[float, int] | None:
    """The trial's best value of the sweep's metric over its validations, and the epoch; None if never logged."""
    points = [
        (row[sweep.metric], row["epoch"])
        for row in sweep.history(trial)
        if isinstance(row.get(sweep.metric), (int, float)) and math.isfinite(row[sweep.metric])
    ]
    if not points:
        return None
    return (max if sweep.goal == "maximize" else min)(points, key=lambda p: p[0])


def _finish(sweep: Sweep, running: _Running, interrupted: bool) -> None:
    trial, code = running.trial, running.proc.returncode
    trial.exitcode, trial.pid = code, None
    trial.seconds += time.monotonic() - running.started
    asked_to_stop = code in (130, -signal.SIGINT, -signal.SIGKILL)  # saved a checkpoint, or stopped before any
    if running.stopping and (code == 0 or asked_to_stop):
        trial.state = "stopped"
    elif code == 0:
        trial.state = "finished"
    elif interrupted and asked_to_stop:
        trial.state = "interrupted"
    else:
        trial.state = "failed"
    sweep.save()
    best = best_value(sweep, trial)
    score = f"{sweep.metric} {best[0]:.4f} (epoch {best[1]})" if best else f"no {sweep.metric}"
    if trial.state == "failed":
        logger.info(
            f"msa: sweep {sweep.name}: {trial.name} failed (exit {code}): {_last_error(sweep.folder(trial))} "
            f"[{sweep.folder(trial) / 'output.log'}]"
        )
    else:
        logger.info(f"msa: sweep {sweep.name}: {trial.name} {trial.state}: {score}")


def _check_metric_logged(sweep: Sweep, trial: Trial, where: str) -> None:
    """A trial that finished without ever logging the sweep's metric: the metric name is wrong."""
    if trial.state != "finished" or best_value(sweep, trial) is not None:
        return
    logged = sorted({k for row in sweep.history(trial) for k in row} - {"epoch", "step"})
    raise ConfigError(
        f"{where}: metric {sweep.metric!r} is not logged by the trials ({trial.name} logged "
        f"{', '.join(logged) or 'no validation metrics'}); fix metric.name"
    )


def _early_terminate(sweep: Sweep, running: list[_Running]) -> None:
    """Hyperband (``early_terminate``): trials the engine stops get one SIGINT (a checkpoint, then exit)."""
    if "early_terminate" not in sweep.definition:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        to_stop = {r.name for r in _engine().stop_runs(sweep.definition, engine_runs(sweep), validate=True)}
    for r in running:
        if r.trial.name in to_stop and not r.stopping and r.proc.poll() is None:
            r.stopping = True
            logger.info(f"msa: sweep {sweep.name}: {r.trial.name}: stopped early by hyperband")
            r.proc.send_signal(signal.SIGINT)


def _stop_all(running: list[_Running], grace_s: float = 120.0) -> None:
    """Ask every running trial once to stop (its Ctrl-C: a checkpoint after this step), wait, then kill."""
    for r in running:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for r in running:
        try:
            r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_sweep(path: str | Path, count: int, out: str | Path, overrides: list[str] = (), workers: int = 1) -> str:
    """Run up to ``count`` trials of the sweep ``path`` in ``out`` (continuing what is there); progress is logged.
    Returns the ranked report (also written to ``out``, :func:`write_report`)."""
    where = f"sweep {path}"
    if count < 1:
        raise ConfigError(f"--count {count}: run at least one trial")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: at least one")
    definition = load_definition(path)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the sweep's trials")
    gpus = _gpu_count() if workers > 1 else 0
    if gpus and workers > gpus:
        raise ConfigError(f"--workers {workers}: one GPU per trial, and this machine has {gpus}")
    out.mkdir(parents=True, exist_ok=True)
    with _holding(out):
        sweep = open_sweep(out, str(path), definition, list(overrides))
        logger.info(
            f"msa: sweep {sweep.name} ({definition['method']}, {sweep.goal} {sweep.metric}) in {out}: "
            f"{len(sweep.trials)} trial(s) so far; W&B group {sweep.group} (offline unless WANDB_MODE says otherwise)"
        )
        _run_trials(sweep, count, workers, gpus, where)
        return write_report(sweep)


def _run_trials(sweep: Sweep, count: int, workers: int, gpus: int, where: str) -> None:
    unfinished = [t for t in sweep.trials if t.state not in TERMINAL]
    running: list[_Running] = []
    started, exhausted = 0, False
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        while True:
            free = [s for s in range(workers) if s not in {r.slot for r in running}]
            while free and started < count and not exhausted:
                if unfinished:
                    trial = unfinished.pop(0)
                else:
                    values = propose(sweep)
                    if values is None:
                        exhausted = True
                        break
                    trial = Trial(f"trial-{len(sweep.trials) + 1:04d}", values, state="pending")
                    trial.command = [
                        *trial_command(sweep.definition, values, sweep.overrides, where),
                        f"--trainer.default_root_dir={sweep.folder(trial)}",
                        f"--checkpoint.dirpath={sweep.folder(trial) / 'checkpoints'}",
                    ]
                    sweep.trials.append(trial)
                    logger.info(f"msa: sweep {sweep.name}: {trial.name}: {_describe(values)}")
                slot = free.pop(0)
                running.append(_start(sweep, trial, slot, _slot_env(slot, workers, gpus)))
                started += 1
            if not running:
                break
            time.sleep(POLL_S)
            _early_terminate(sweep, running)
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                _finish(sweep, r, interrupted=False)
                try:
                    _check_metric_logged(sweep, r.trial, where)
                except ConfigError:
                    _stop_all(running)
                    for other in running:
                        _finish(sweep, other, interrupted=True)
                    raise
        if exhausted and started < count:
            logger.info(f"msa: sweep {sweep.name}: the engine proposes no more trials (sweep complete)")
    except KeyboardInterrupt:
        _stop_all(running)
        for r in running:
            _finish(sweep, r, interrupted=True)
        names = ", ".join(r.trial.name for r in running) or "no trial was running"
        raise SweepInterrupted(
            f"sweep {sweep.name} interrupted ({names}); `msa sweep {sweep.source} --out {sweep.out} ...` "
            "again continues it"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------- report
def ranked(sweep: Sweep) -> list[tuple[Trial, tuple[float, int] | None]]:
    """Trials with their best metric value, best first; those without one last (in trial order)."""
    scored = [(t, best_value(sweep, t)) for t in sweep.trials]
    sign = -1.0 if sweep.goal == "maximize" else 1.0
    return sorted(scored, key=lambda ts: (ts[1] is None, sign * ts[1][0] if ts[1] else 0.0))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_table(sweep: Sweep) -> str:
    params = list(sweep.definition["parameters"])
    head = ["rank", "trial", "state", sweep.metric, "epoch", *params, "epochs run", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for rank, (trial, best) in enumerate(ranked(sweep), 1):
        cells = [
            str(rank) if best else "-",
            trial.name,
            trial.state,
            f"{best[0]:.4f}" if best else "",
            str(best[1]) if best else "",
            *(_cell(trial.values.get(p, "")) for p in params),
            str(len(sweep.history(trial))),
            f"{trial.seconds:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_metric_vs_params(sweep: Sweep, path: Path) -> Path | None:
    """One panel per parameter: each trial's best metric against its value (log axis for log distributions;
    categories at even spacing). None when no trial has a value yet."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [(t, b) for t, b in ranked(sweep) if b is not None]
    if not scored:
        return None
    params = sweep.definition["parameters"]
    fig, axes = plt.subplots(1, len(params), figsize=(3.2 * len(params), 3.0), squeeze=False)
    for ax, (name, spec) in zip(axes[0], params.items()):
        xs = [t.values.get(name) for t, _ in scored]
        ys = [b[0] for _, b in scored]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, ys)
            if "log" in str(spec.get("distribution", "")):
                ax.set_xscale("log")
                # three labelled ticks spanning the trials' values: matplotlib's own labels every minor tick of a
                # range inside one decade, and they overlap at this width
                import numpy as np

                ticks = np.geomspace(min(xs), max(xs), 3) if max(xs) > min(xs) else [xs[0]]
                ax.set_xticks(ticks, [f"{t:.1e}" for t in ticks])
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            labels = list(dict.fromkeys(map(str, spec.get("values", xs))))
            ax.scatter([labels.index(str(x)) for x in xs], ys)
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlabel(name)
        ax.set_ylabel(sweep.metric)
    fig.suptitle(f"sweep {sweep.name}: best {sweep.metric} per trial ({sweep.goal})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(sweep: Sweep) -> str:
    """``DIR/report.md`` and ``DIR/metric_vs_params.png``; returns the text printed to the user."""
    counts = {s: sum(t.state == s for t in sweep.trials) for s in dict.fromkeys(t.state for t in sweep.trials)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no trials"
    text = (
        f"# sweep {sweep.name} ({sweep.definition['method']}): {summary}; ranked by {sweep.goal} {sweep.metric}\n\n"
        + report_table(sweep)
    )
    (sweep.out / REPORT).write_text(text + "\n")
    plot = plot_metric_vs_params(sweep, sweep.out / PLOT)
    tail = f"\n\nwrote {sweep.out / REPORT}" + (f" and {plot}" if plot else "")
    sync = f"\nW&B (offline): wandb sync {sweep.out}/trial-*/wandb/offline-run-*  (group {sweep.group})"
    return text + tail + sync


def sweep_report(out: str | Path) -> str:
    """``msa report DIR`` of a sweep folder: the ranked table and plot, written again from the trials' histories."""
    return write_report(read_sweep(out))
