"""``msa pipeline FILE.yaml``: an ordered list of ordinary ``msa fit`` runs where a later stage names an
earlier stage's checkpoints or exported arrays.

.. code-block:: yaml

    name: two_stage
    out: runs/two_stage                  # stage <s> writes under out/<s>/ (checkpoints/, logs, stage.json)
    stages:
      - name: pretrain
        args: [--config, a.yaml]         # an ordinary `msa fit` command line
        export: {outputs: [features.M], splits: [train, valid, test]}   # optional, from the best checkpoint
        test: true                       # optional: `msa test` of the best checkpoint after the fit
      - name: finetune
        needs: [pretrain]
        args: [--config, b.yaml, "--model.init_args.init_from=${pretrain.best_ckpt}"]

Substitutions (only of stages listed in ``needs``): ``${s.best_ckpt}``, ``${s.last_ckpt}``,
``${s.export}`` (the export's store folder) and ``${s.dir}``. Each stage runs as its own ``msa fit``
subprocess (so DDP and SLURM treat it as a plain fit), with ``--trainer.default_root_dir`` and
``--checkpoint.dirpath`` set to its folder. A stage whose recorded command line and inputs (content
hashes of the files its command names, including upstream checkpoints) are unchanged and which
finished is skipped; one that was interrupted with the same command resumes from its ``last.ckpt``.
``--only NAME`` runs one stage (its ``needs`` must have finished: a cluster job per stage);
``--dry-run`` prints the resolved commands. A stage with ``test: true`` also runs ``msa test`` on its best
checkpoint, logged into the stage folder (where ``msa report`` reads test metrics); a finished stage
whose test has not run yet runs only the test. A stage with ``retrain: {stages, max_rounds, seed}`` (FmlMSN's
meta-learner, Eq. 8) re-runs those stages with the seed ``seed + round`` and then itself while its ``eq8.json``
says "retrain the stages", up to ``max_rounds`` times, and records each round in its ``stage.json``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from msa_lightning.errors import ConfigError, MSAError
from msa_lightning.textfiles import read_text

REFERENCE = re.compile(r"\$\{([^}]*)\}")
FIELDS = ("best_ckpt", "last_ckpt", "export", "dir")
RECORD = "stage.json"


class StageFailed(MSAError):
    """A stage's ``msa fit`` (or its export) ended with an error."""


@dataclass
class Stage:
    name: str
    args: list[str]
    needs: list[str] = field(default_factory=list)
    export: dict | None = None
    test: bool = False
    retrain: dict | None = None  # FmlMSN's Eq. 8: re-run these stages while the stage's eq8.json says so


@dataclass
class Pipeline:
    name: str
    out: Path
    stages: list[Stage]
    source: Path

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def folder(self, name: str) -> Path:
        return self.out / name


# ---------------------------------------------------------------------------------------------- reading
def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check a pipeline file; every problem is one ConfigError naming the file and stage."""
    path = Path(path)
    where = f"pipeline {path}"
    if not path.is_file():
        raise ConfigError(f"{where}: file not found")
    try:
        spec = yaml.safe_load(read_text(path, "pipeline file", ConfigError))
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with name, out and stages")
    unknown = set(spec) - {"name", "out", "stages"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; expected name, out, stages")
    if not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise ConfigError(f"{where}: 'stages' must be a non-empty list")
    stages: list[Stage] = []
    for i, raw in enumerate(spec["stages"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ConfigError(f"{where}: stage {i + 1} has no name")
        name = raw["name"]
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"{where}: stage name {name!r}: use letters, digits, '_', '-', '.'")
        bad = set(raw) - {"name", "args", "needs", "export", "test", "retrain"}
        if bad:
            raise ConfigError(
                f"{where}: stage {name!r}: unknown keys {sorted(bad)}; expected name, args, needs, export, test, "
                "retrain"
            )
        if not isinstance(raw.get("test", False), bool):
            raise ConfigError(f"{where}: stage {name!r}: 'test' must be true or false, found {raw['test']!r}")
        args, needs = raw.get("args", []), raw.get("needs", [])
        if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
            raise ConfigError(f"{where}: stage {name!r}: 'args' must be a list of command-line words")
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise ConfigError(f"{where}: stage {name!r}: 'needs' must be a list of stage names")
        export = raw.get("export")
        if export is not None:
            if not isinstance(export, dict) or not export.get("outputs"):
                raise ConfigError(f"{where}: stage {name!r}: 'export' needs 'outputs' (names from MSAOutput.flat())")
            if set(export) - {"outputs", "splits"}:
                raise ConfigError(f"{where}: stage {name!r}: export keys are outputs and splits")
        if any(s.name == name for s in stages):
            raise ConfigError(f"{where}: two stages are named {name!r}")
        retrain = _retrain_spec(raw.get("retrain"), f"{where}: stage {name!r}")
        stages.append(Stage(name, [str(a) for a in args], list(needs), export, raw.get("test", False), retrain))
    names = [s.name for s in stages]
    for stage in stages:
        for other in (stage.retrain or {}).get("stages", []):
            if other not in stage.needs:
                raise ConfigError(
                    f"{where}: stage {stage.name!r}: retrain.stages names {other!r}, not one of its needs"
                )
        for need in stage.needs:
            if need not in names:
                raise ConfigError(
                    f"{where}: stage {stage.name!r} needs {need!r}, but no stage has that name "
                    f"(stages: {', '.join(names)})"
                )
        for arg in stage.args:
            for ref in REFERENCE.findall(arg):
                target, _, what = ref.partition(".")
                if target not in names:
                    raise ConfigError(
                        f"{where}: stage {stage.name!r} refers to ${{{ref}}}, but no stage is named "
                        f"{target!r} (stages: {', '.join(names)})"
                    )
                if what not in FIELDS:
                    raise ConfigError(
                        f"{where}: stage {stage.name!r} refers to ${{{ref}}}; a stage offers "
                        + ", ".join(f"${{{target}.{f}}}" for f in FIELDS)
                    )
                if target not in stage.needs:
                    raise ConfigError(
                        f"{where}: stage {stage.name!r} refers to ${{{ref}}} but does not list "
                        f"{target!r} in its needs (add `needs: [{target}]`)"
                    )
                if what == "export" and stages[names.index(target)].export is None:
                    raise ConfigError(
                        f"{where}: stage {stage.name!r} refers to ${{{ref}}}, but stage {target!r} "
                        "has no 'export' section"
                    )
    if spec.get("out") is not None and not isinstance(spec["out"], str):
        raise ConfigError(f"{where}: 'out' must be a folder path, found {spec['out']!r}")
    out = Path(spec.get("out") or Path("runs") / str(spec.get("name") or path.stem))
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{where}: out {str(out)!r} is an existing file, not a folder (the stages write "
            "their runs into <out>/<stage>/); give a folder"
        )
    pipeline = Pipeline(str(spec.get("name") or path.stem), out, stages, path)
    pipeline.stages = _in_dependency_order(pipeline, where)
    return pipeline


def _in_dependency_order(pipeline: Pipeline, where: str) -> list[Stage]:
    """The stages in file order, each after its needs; a cycle is an error naming it."""
    done: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name) :] + [name]
            raise ConfigError(f"{where}: the needs form a cycle: {' -> '.join(cycle)}")
        state[name] = "visiting"
        for need in pipeline.stage(name).needs:
            visit(need, path + [name])
        state[name] = "done"
        done.append(name)

    for stage in pipeline.stages:
        visit(stage.name, [])
    return [pipeline.stage(n) for n in done]


# ---------------------------------------------------------------------------------------------- records
def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def _write_record(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, folder / RECORD)


def _file_inputs(args: list[str], memo_dir: Path) -> dict[str, str]:
    """Content hashes of the files a command line names (config files, data files, upstream checkpoints)
    and of the files its config files name under ``data`` (a data folder: the files directly in it)."""
    from msa_lightning.store import content_hash

    named: list[Path] = []
    for i, arg in enumerate(args):
        for candidate in (arg, arg.split("=", 1)[1] if "=" in arg else None):
            if candidate and not candidate.startswith("-") and Path(candidate).is_file():
                named.append(Path(candidate))
                is_config = arg.startswith("--config=") or (i > 0 and args[i - 1] == "--config")
                if is_config and candidate.endswith((".yaml", ".yml")):
                    named += _data_files(Path(candidate))
    return {str(p.resolve()): content_hash(p, memo_dir) for p in named}


def _data_files(config: Path) -> list[Path]:
    try:
        data = (yaml.safe_load(read_text(config, "config file")) or {}).get("data")
    except (MSAError, yaml.YAMLError, AttributeError):
        return []  # the stage's own `msa fit` reports a bad config file
    found: list[Path] = []

    def walk(value) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value and "${" not in value:
            path = Path(value)
            if path.is_file():
                found.append(path)
            elif path.is_dir():
                found.extend(sorted(p for p in path.iterdir() if p.is_file()))

    walk(data)
    return found


def _substitute(pipeline: Pipeline, stage: Stage, dry_run: bool) -> list[str]:
    def value(match: re.Match) -> str:
        target, _, what = match.group(1).partition(".")
        folder = pipeline.folder(target)
        if what == "dir":
            return str(folder)
        record = read_record(folder)
        if record is None or record.get("status") != "finished":
            if dry_run:
                return f"<{what} of stage {target}>"
            raise StageFailed(
                f"pipeline {pipeline.source}: stage {stage.name!r} needs stage {target!r}, "
                f"which has not finished (run `msa pipeline {pipeline.source} --only {target}` first)"
            )
        return str(record[what])

    return [REFERENCE.sub(value, arg) for arg in stage.args]


def _fit_command(pipeline: Pipeline, stage: Stage, args: list[str]) -> list[str]:
    folder = pipeline.folder(stage.name)
    return ["fit", *args, f"--trainer.default_root_dir={folder}", f"--checkpoint.dirpath={folder / 'checkpoints'}"]


# ---------------------------------------------------------------------------------------------- running
def run_pipeline(path: str | Path, only: str | None = None, dry_run: bool = False, force: bool = False) -> dict:
    """Run (or print, or skip) the stages; returns ``{stage: record}``."""
    pipeline = load_pipeline(path)
    names = [s.name for s in pipeline.stages]
    if only is not None and only not in names:
        raise ConfigError(f"pipeline {pipeline.source}: --only {only!r}: no such stage (stages: {', '.join(names)})")
    records = {}
    for stage in pipeline.stages:
        if only is not None and stage.name != only:
            continue
        args = _substitute(pipeline, stage, dry_run)
        command = _fit_command(pipeline, stage, args)
        if dry_run:
            print(f"[{stage.name}] msa " + " ".join(shlex.quote(a) for a in command))
            if stage.export:
                print(f"[{stage.name}] export {', '.join(stage.export['outputs'])} of the best checkpoint")
            if stage.test:
                print(f"[{stage.name}] msa test of the best checkpoint")
            continue
        records[stage.name] = _run_stage(pipeline, stage, command, force)
        if stage.retrain and only is None:
            _retrain_rounds(pipeline, stage, records, force)
    return records


def _run_stage(pipeline: Pipeline, stage: Stage, command: list[str], force: bool) -> dict:
    folder = pipeline.folder(stage.name)
    inputs = {"files": _file_inputs(command, pipeline.out), "export": stage.export}
    previous = read_record(folder)
    same = previous is not None and previous.get("command") == command and previous.get("inputs") == inputs
    outputs_exist = (
        previous is not None
        and Path(previous.get("best_ckpt", "")).is_file()
        and (not stage.export or Path(previous.get("export", "")).is_dir())
    )
    if same and previous.get("status") == "finished" and not force and outputs_exist:
        if stage.test and previous.get("tested") != previous["best_ckpt"]:
            return _test_stage(pipeline, stage, command, previous)
        print(f"msa: pipeline {pipeline.name}: stage {stage.name} is up to date, skipped ({folder})", flush=True)
        return previous
    resume = []
    # an unfinished fit of the same command: continue from its newest checkpoint (Ctrl-C or last epoch)
    candidates = [
        p for p in (folder / "checkpoints" / "interrupted.ckpt", folder / "checkpoints" / "last.ckpt") if p.is_file()
    ]
    if same and not force and candidates:
        newest = max(candidates, key=lambda p: p.stat().st_mtime_ns)
        resume = [f"--ckpt_path={newest}"]
        print(
            f"msa: pipeline {pipeline.name}: stage {stage.name}: resuming its unfinished fit from {newest}", flush=True
        )
    elif (folder / "checkpoints").is_dir():
        shutil.rmtree(folder / "checkpoints")  # checkpoints of another command line: never mix them
    record = {
        "stage": stage.name,
        "command": command,
        "inputs": inputs,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dir": str(folder),
    }
    _write_record(folder, record)
    print(
        f"msa: pipeline {pipeline.name}: stage {stage.name}: msa {' '.join(shlex.quote(a) for a in command + resume)}",
        flush=True,
    )
    code = subprocess.call([sys.executable, "-m", "msa_lightning.cli", *command, *resume])
    if code != 0:
        raise StageFailed(
            f"pipeline {pipeline.name}: stage {stage.name!r} failed (msa fit exited with {code}; "
            "its output is above); finished stages are skipped when you run the pipeline again"
        )
    from msa_lightning.checkpoints import resolve_checkpoint

    ckpt_dir = folder / "checkpoints"
    record["last_ckpt"] = str(ckpt_dir / "last.ckpt")
    try:
        record["best_ckpt"] = resolve_checkpoint(ckpt_dir, "best")
    except MSAError:  # no monitored score (e.g. no validation): the last checkpoint is the result
        record["best_ckpt"] = record["last_ckpt"]
    if stage.export:
        from msa_lightning.experiments.export import SPLITS, export_command

        # the stage's own command line (without `fit`, the folder settings and a checkpoint to resume)
        args = _without_ckpt_path(command[1:-2])
        entry = export_command(
            record["best_ckpt"],
            cli_args=args,
            outputs=stage.export["outputs"],
            splits=stage.export.get("splits") or list(SPLITS),
        )
        record["export"] = str(entry.path)
    record["status"] = "finished"
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_record(folder, record)
    if stage.test:
        return _test_stage(pipeline, stage, command, record)
    return record


def _test_stage(pipeline: Pipeline, stage: Stage, command: list[str], record: dict) -> dict:
    """``msa test`` of the stage's best checkpoint with the stage's own arguments, logged in its folder."""
    folder = pipeline.folder(stage.name)
    test = [
        "test",
        *_without_ckpt_path(command[1:-2]),
        f"--ckpt_path={record['best_ckpt']}",
        f"--trainer.default_root_dir={folder}",
    ]
    print(
        f"msa: pipeline {pipeline.name}: stage {stage.name}: msa {' '.join(shlex.quote(a) for a in test)}", flush=True
    )
    code = subprocess.call([sys.executable, "-m", "msa_lightning.cli", *test])
    if code != 0:
        raise StageFailed(
            f"pipeline {pipeline.name}: stage {stage.name!r}: msa test of {record['best_ckpt']} failed "
            f"(exited with {code}; its output is above)"
        )
    record["tested"] = record["best_ckpt"]
    _write_record(folder, record)
    return record


def _without_ckpt_path(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            out.append(arg)
    return out


# ---------------------------------------------------------------------------------------------- Eq. 8 rounds
def _retrain_spec(spec, where: str) -> dict | None:
    """A stage's ``retrain: {stages: [...], max_rounds: N, seed: S}`` checked (None: no section)."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"stages", "max_rounds", "seed"} or not spec.get("stages"):
        raise ConfigError(f"{where}: 'retrain' takes stages (a list of its needs), max_rounds and seed")
    rounds, seed = spec.get("max_rounds", 1), spec.get("seed", 1111)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0 or not isinstance(seed, int):
        raise ConfigError(f"{where}: retrain.max_rounds must be an integer >= 0 and retrain.seed an integer")
    return {"stages": [str(s) for s in spec["stages"]], "max_rounds": rounds, "seed": seed}


def _eq8_decision(folder: Path) -> dict:
    """The newest ``eq8.json`` a stage's fit wrote under its folder (FmlMSNMeta, Eq. 8)."""
    found = sorted(folder.rglob("eq8.json"), key=lambda p: p.stat().st_mtime_ns)
    if not found:
        raise StageFailed(f"stage {folder.name!r} has a 'retrain' section but its fit wrote no eq8.json")
    return json.loads(found[-1].read_text())


def _retrain_rounds(pipeline: Pipeline, stage: Stage, records: dict, force: bool) -> None:
    """Act on Eq. 8: while the stage's decision is "retrain the stages" and rounds are left, re-run the named
    stages with the seed ``seed + round`` and then this stage; each round is recorded in its stage.json."""
    spec, folder = stage.retrain, pipeline.folder(stage.name)
    history = [{**_eq8_decision(folder), "round": 0, "stage_seed": None}]
    while history[-1].get("retrain") and len(history) <= spec["max_rounds"]:
        round_, seed = len(history), spec["seed"] + len(history)
        print(
            f"msa: pipeline {pipeline.name}: Eq. 8 p = {history[-1]['p']:.3f} < {history[-1]['threshold']}: "
            f"retraining {', '.join(spec['stages'])} with seed {seed} (round {round_} of {spec['max_rounds']})",
            flush=True,
        )
        for name in spec["stages"]:
            base = pipeline.stage(name)
            again = Stage(base.name, [*base.args, f"--seed_everything={seed}"], base.needs, base.export, base.test)
            records[name] = _run_stage(
                pipeline, again, _fit_command(pipeline, again, _substitute(pipeline, again, False)), force
            )
        command = _fit_command(pipeline, stage, _substitute(pipeline, stage, False))
        records[stage.name] = _run_stage(pipeline, stage, command, force)
        history.append({**_eq8_decision(folder), "round": round_, "stage_seed": seed})
    record = records[stage.name]
    record["retrain_rounds"] = history
    _write_record(folder, record)
    final = history[-1]
    print(
        f"msa: pipeline {pipeline.name}: Eq. 8 after {len(history) - 1} retraining round(s): p = {final['p']:.3f}, "
        f"{final['decision']}" + (" (no rounds left)" if final.get("retrain") else ""),
        flush=True,
    )
