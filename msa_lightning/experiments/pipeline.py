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
``${s.export}`` (the export's store folder), ``${s.features}`` (the file of a features stage), ``${s.dir}`` and
``${s.fold_exports}`` (below). A stage with ``command: features extract`` runs ``msa features extract`` with its
``args`` instead of a fit (its ``--out`` defaults to ``<out>/<s>/features.pkl``; relative to the file's folder), and
is skipped while its file is the one it wrote, complete, for the same command line. Each stage runs as its own
``msa fit`` subprocess (so DDP and SLURM treat it as a plain fit), with ``--trainer.default_root_dir`` and
``--checkpoint.dirpath`` set to its folder. A stage whose recorded command line and inputs (content
hashes of the files its command names, including upstream checkpoints) are unchanged and which
finished is skipped; one that was interrupted with the same command resumes from its ``last.ckpt``.
``--only NAME`` runs one stage (its ``needs`` must have finished: a cluster job per stage);
``--dry-run`` prints the resolved commands. Before any stage runs, the stages' feature sizes are checked
against each other (:mod:`msa_lightning.experiments.pipeline_sizes`): a stage that loads another stage's
checkpoint must read data of that stage's sizes. A stage with ``test: true`` also runs ``msa test`` on its best
checkpoint, logged into the stage folder (where ``msa report`` reads test metrics); a finished stage
whose test has not run yet runs only the test. A stage with ``retrain: {stages, max_rounds, seed}`` (FmlMSN's
meta-learner, Eq. 8) re-runs those stages with the seed ``seed + round`` and then itself while its ``eq8.json``
says "retrain the stages", up to ``max_rounds`` times, and records each round in its ``stage.json``.

Relative paths in the file (``out``, every ``--config``, any other word naming a file or folder beside the
file) resolve against the file's folder, so a pipeline runs the same from any working folder.
``--set KEY=VALUE`` adds ``--KEY=VALUE`` to every stage that has the key (``data.init_args.path``,
``trainer.max_epochs``; a key no stage has is an error); ``--set STAGE:KEY=VALUE`` to that stage only. A
stage that fails takes back what it added to its folder, unless it wrote a checkpoint to resume from, and
folders the run created stay only if something is in them. ``--seeds 1111 1112 ...`` runs the whole
pipeline per seed into ``<out>/seed<N>/`` and writes the tables of ``msa seeds`` from the test metrics of the
result stages (:func:`run_pipeline_seeds`).

**Stacking** (the file's ``stacking``, ``folds``, ``fold_seed``; ``--set stacking=kfold`` too). A stage that
trains on other stages' exported outputs (FmlMSN's meta-learner) reads their training rows in-sample by
default (``stacking: in_sample``; ``${s.fold_exports}`` is ``[]``). With ``stacking: kfold`` every stage whose
``${s.fold_exports}`` is read gets ``folds`` fold runs ``s.fold0`` ... (ordinary stages: in the plan, skipped
when up to date, ``--only s.fold1``), each its ``msa fit`` with ``--data.init_args.fold=k`` so that its
DataModule trains on the other folds (videos kept whole, :mod:`msa_lightning.data.folds`) and exports only the
held-out fold (split ``heldout``); ``${s.fold_exports}`` is then the list of their exports, fold 0 first, and
the stage reading it needs the fold runs. Each fold run's ``stage.json`` records ``fold`` (of, index, folds,
seed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from msa_lightning.checkpoints import newest_resume_checkpoint
from msa_lightning.data.folds import HELDOUT
from msa_lightning.errors import ConfigError, MSAError
from msa_lightning.experiments.argv import option_value
from msa_lightning.experiments.pipeline_sizes import REFERENCE, check_feature_sizes
from msa_lightning.textfiles import read_text, read_yaml_mapping

FIELDS = ("best_ckpt", "last_ckpt", "export", "features", "dir", "fold_exports")
#: what a stage runs: an ``msa fit`` (default) or ``msa features extract`` (its output: ``${s.features}``)
COMMANDS = ("fit", "features extract")
#: the fields each kind of stage offers
OFFERS = {"fit": ("best_ckpt", "last_ckpt", "export", "dir", "fold_exports"), "features extract": ("features", "dir")}
RECORD = "stage.json"
#: stacking of exported stage outputs (:func:`_fold_stages`): ``in_sample`` (each export from the stage's one
#: model) or ``kfold`` (the training rows also from K fold runs, each on the other K-1 folds)
STACKING = ("in_sample", "kfold")
#: pipeline-level settings of the file that ``--set`` also reaches (``--set stacking=kfold``)
PIPELINE_SETTINGS = {"stacking": "in_sample", "folds": 5, "fold_seed": 0}

log = logging.getLogger(__name__)


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
    fold: dict | None = None  # a fold run of K-fold stacking: {"of": stage, "index": k, "folds": K, "seed": S}
    command: str = "fit"  # or "features extract" (COMMANDS)


@dataclass
class Pipeline:
    name: str
    out: Path
    stages: list[Stage]
    source: Path
    stacking: str = "in_sample"
    folds: int = 5
    fold_seed: int = 0

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def fold_runs(self, name: str) -> list[Stage]:
        """The fold runs of stage ``name`` (none unless ``stacking: kfold`` and a stage reads its fold exports)."""
        return sorted((s for s in self.stages if s.fold and s.fold["of"] == name), key=lambda s: s.fold["index"])

    def folder(self, name: str) -> Path:
        return self.out / name


# ---------------------------------------------------------------------------------------------- reading
def load_pipeline(path: str | Path, settings: Sequence[str] = (), out: str | Path | None = None) -> Pipeline:
    """Read and check a pipeline file; every problem is one ConfigError naming the file and stage.

    Relative paths in the file resolve against its folder (:func:`_resolve_paths`). ``settings``
    (``KEY=VALUE``, ``msa pipeline --set``) go to every stage that has the key (:func:`_apply_settings`);
    ``out`` (relative to the working folder) replaces the file's ``out``."""
    path = Path(path)
    where = f"pipeline {path}"
    spec = read_yaml_mapping(path, "pipeline", "name, out and stages")
    unknown = set(spec) - {"name", "out", "stages", *PIPELINE_SETTINGS}
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; expected name, out, stages, {', '.join(PIPELINE_SETTINGS)}"
        )
    stacking = _stacking_settings(spec, settings, where)
    settings = [s for s in settings if _pipeline_setting(s) is None]
    if not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise ConfigError(f"{where}: 'stages' must be a non-empty list")
    stages: list[Stage] = []
    for i, raw in enumerate(spec["stages"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ConfigError(f"{where}: stage {i + 1} has no name")
        name = raw["name"]
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"{where}: stage name {name!r}: use letters, digits, '_', '-', '.'")
        bad = set(raw) - {"name", "args", "needs", "export", "test", "retrain", "command"}
        if bad:
            raise ConfigError(
                f"{where}: stage {name!r}: unknown keys {sorted(bad)}; expected name, args, needs, export, test, "
                "retrain, command"
            )
        command = raw.get("command", "fit")
        if command not in COMMANDS:
            raise ConfigError(f"{where}: stage {name!r}: command {command!r}; expected one of {list(COMMANDS)}")
        fit_only = [k for k in ("export", "test", "retrain") if command != "fit" and raw.get(k)]
        if fit_only:
            raise ConfigError(f"{where}: stage {name!r}: {', '.join(fit_only)} need(s) a fit stage, not {command!r}")
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
        args = _resolve_paths([str(a) for a in args], path.resolve().parent, f"{where}: stage {name!r}")
        if command == "features extract":
            args = _features_paths(args, path.resolve().parent)
        retrain = _retrain_spec(raw.get("retrain"), f"{where}: stage {name!r}")
        stages.append(Stage(name, args, list(needs), export, raw.get("test", False), retrain, command=command))
    _apply_settings(stages, settings, where)
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
                offers = OFFERS[stages[names.index(target)].command]
                if what not in offers:
                    raise ConfigError(
                        f"{where}: stage {stage.name!r} refers to ${{{ref}}}; stage {target!r} offers "
                        + ", ".join(f"${{{target}.{f}}}" for f in offers)
                    )
                if target not in stage.needs:
                    raise ConfigError(
                        f"{where}: stage {stage.name!r} refers to ${{{ref}}} but does not list "
                        f"{target!r} in its needs (add `needs: [{target}]`)"
                    )
                if what in ("export", "fold_exports") and stages[names.index(target)].export is None:
                    raise ConfigError(
                        f"{where}: stage {stage.name!r} refers to ${{{ref}}}, but stage {target!r} "
                        "has no 'export' section"
                    )
    if spec.get("out") is not None and not isinstance(spec["out"], str):
        raise ConfigError(f"{where}: 'out' must be a folder path, found {spec['out']!r}")
    if out is None:  # the file's own `out` (default runs/<name>) is relative to the file's folder
        out = path.resolve().parent / (spec.get("out") or Path("runs") / str(spec.get("name") or path.stem))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{where}: out {str(out)!r} is an existing file, not a folder (the stages write "
            "their runs into <out>/<stage>/); give a folder"
        )
    pipeline = Pipeline(str(spec.get("name") or path.stem), out, stages, path, **stacking)
    if pipeline.stacking == "kfold":
        pipeline.stages = _fold_stages(pipeline, where)
    pipeline.stages = _in_dependency_order(pipeline, where)
    for stage in stages:
        if stage.command == "features extract" and option_value(stage.args, "--out") is None:
            stage.args.append(f"--out={pipeline.folder(stage.name) / 'features.pkl'}")
    return pipeline


def _split_setting(setting: str) -> tuple[str | None, str, str, bool]:
    """A ``--set [STAGE:]KEY=VALUE``: ``(STAGE or None, KEY without a leading --, VALUE, whether '=' was there)``."""
    key, eq, value = setting.partition("=")
    scope, colon, key = key.strip().rpartition(":")
    return (scope if colon else None), key.removeprefix("--"), value, bool(eq)


def _pipeline_setting(setting: str) -> str | None:
    """The file-level key (``stacking``, ``folds``, ``fold_seed``) a ``--set`` names, or None (a stage setting)."""
    scope, key, _, _ = _split_setting(setting)
    return key if scope is None and key in PIPELINE_SETTINGS else None


def _stacking_settings(spec: dict, settings: Sequence[str], where: str) -> dict:
    """``stacking``, ``folds`` and ``fold_seed`` of the file, ``--set`` ones last; each checked (one ConfigError
    naming the setting)."""
    values = {key: spec.get(key, default) for key, default in PIPELINE_SETTINGS.items()}
    for setting in settings:
        key = _pipeline_setting(setting)
        if key is not None:
            value = _split_setting(setting)[2].strip()
            try:
                values[key] = yaml.safe_load(value) if value else value
            except yaml.YAMLError:
                values[key] = value
    if values["stacking"] not in STACKING:
        raise ConfigError(f"{where}: stacking: expected one of {list(STACKING)}, found {values['stacking']!r}")
    for key, low in (("folds", 2), ("fold_seed", 0)):
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            detail = " (K of stacking: kfold; 1 fold would hold out every training clip)" if key == "folds" else ""
            raise ConfigError(f"{where}: {key}: expected an integer >= {low}{detail}, found {value!r}")
    return values


def _fold_stages(pipeline: Pipeline, where: str) -> list[Stage]:
    """``stacking: kfold``: every stage whose ``${<stage>.fold_exports}`` a later stage reads gets K fold runs
    ``<stage>.fold<k>`` right after it, each its ``msa fit`` with ``--data.init_args.fold=k`` (the DataModule
    trains on the other K-1 folds and serves fold k as the split ``heldout``), exporting that split only; the
    readers need them. No such reference, or a stage whose DataModule cannot split its training clips (no
    ``data.init_args.fold``), is one ConfigError naming the setting."""
    from msa_lightning.experiments.lightning_cli import has_setting

    folded = {
        ref.partition(".")[0]
        for stage in pipeline.stages
        for arg in stage.args
        for ref in REFERENCE.findall(arg)
        if ref.partition(".")[2] == "fold_exports"
    }
    if not folded:
        raise ConfigError(
            f"{where}: stacking: kfold, but no stage reads ${{<stage>.fold_exports}}, so no fold run would be used "
            "(the meta stage passes them, e.g. --data.init_args.fold_exports=[${stage_av.fold_exports},...])"
        )
    names = {s.name for s in pipeline.stages}
    out: list[Stage] = []
    for stage in pipeline.stages:
        runs = []
        if stage.name in folded:
            if not has_setting(stage.args, "data.init_args.fold"):
                raise ConfigError(
                    f"{where}: stacking: kfold: stage {stage.name!r} reads its data with a DataModule that cannot "
                    "hold out a fold of its training clips (it has no data.init_args.fold; FmlMSN's "
                    "TextFeaturesDataModule has); set stacking: in_sample or use such a DataModule"
                )
            for k in range(pipeline.folds):
                name = f"{stage.name}.fold{k}"
                if name in names:
                    raise ConfigError(f"{where}: stacking: kfold: the fold run {name!r} is also the name of a stage")
                settings = {"fold": k, "folds": pipeline.folds, "fold_seed": pipeline.fold_seed}
                args = [*stage.args, *(f"--data.init_args.{key}={value}" for key, value in settings.items())]
                export = {"outputs": list(stage.export["outputs"]), "splits": [HELDOUT]}
                fold = {"of": stage.name, "index": k, "folds": pipeline.folds, "seed": pipeline.fold_seed}
                runs.append(Stage(name, args, list(stage.needs), export, fold=fold))
            for reader in pipeline.stages:
                if any(f"${{{stage.name}.fold_exports}}" in a for a in reader.args):
                    reader.needs += [r.name for r in runs]
        out += [stage, *runs]
    return out


#: the options of ``msa features extract`` that name files or folders (``--vision openface:DIR``: its DIR)
FEATURES_PATHS = ("--raw", "--out", "--labels", "--alignment", "--text", "--vision")


def _features_paths(args: list[str], folder: Path) -> list[str]:
    """A features stage's paths made absolute against the pipeline file's ``folder``, whether they exist yet or
    not (its output and inputs, like ``out``)."""
    out = list(args)
    for i, arg in enumerate(args):
        option, eq, value = arg.partition("=")
        if not eq and i > 0 and args[i - 1] in FEATURES_PATHS:
            option, value = args[i - 1], arg
        elif not eq:
            continue
        if option not in FEATURES_PATHS or (option == "--text" and value == "column"):
            continue
        prefix = "openface:" if option == "--vision" and value.startswith("openface:") else ""
        if option == "--vision" and not prefix:
            continue  # dlib: no path
        target = value[len(prefix) :]
        if target and not Path(target).expanduser().is_absolute():
            value = prefix + os.path.normpath(folder / target)
        out[i] = f"{option}={value}" if eq else value
    return out


def features_file(stage: Stage) -> Path:
    """The feature file a ``features extract`` stage writes (its ``--out``, made absolute when loaded)."""
    return Path(option_value(stage.args, "--out"))


#: words that name a file (a value with a folder part or a suffix), for path resolution
PATH_LIKE = re.compile(r"^[^-$][^=]*(/|\.[A-Za-z0-9]+$)")


def _resolve_paths(args: list[str], folder: Path, where: str) -> list[str]:
    """The stage's words with the pipeline file's relative paths made absolute against its ``folder``: every
    ``--config`` value (which must exist there), and any other value (a word, or the part after ``=`` of
    ``--key=value``) that names an existing file or folder there. Other words (and paths relative to the
    working folder that do not exist beside the file) are left as they are."""
    out = []
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if not value or "${" in value or Path(value).is_absolute():
            out.append(arg)
            continue
        is_config = key == "--config" or (not eq and i > 0 and args[i - 1] in ("--config", "-c"))
        candidate = folder / value
        if is_config and not candidate.is_file():
            raise ConfigError(
                f"{where}: config file {value!r} not found in {folder} (paths in a pipeline file are relative "
                "to the file's folder)"
            )
        if is_config or (PATH_LIKE.match(value) and candidate.exists()):
            value = os.path.normpath(candidate)  # symlinks kept: the path the user wrote, made absolute
        out.append(f"{key}{eq}{value}")
    return out


def _apply_settings(stages: list[Stage], settings: Sequence[str], where: str) -> None:
    """``--set KEY=VALUE``: appended as ``--KEY=VALUE`` (the last value wins) to every stage whose command line
    has the key (:func:`~msa_lightning.experiments.lightning_cli.has_setting`; a features stage: an option its
    words give, e.g. ``raw``); ``--set STAGE:KEY=VALUE`` to that stage only. A key no stage has, an unknown
    stage, or a setting without ``=``, is one ConfigError."""
    if not settings:
        return
    from msa_lightning.experiments.lightning_cli import has_setting

    def has(stage: Stage, key: str) -> bool:
        if stage.command == "fit":
            return has_setting(stage.args, key)
        return any(a == f"--{key}" or a.startswith(f"--{key}=") for a in stage.args) or key == "out"

    for setting in settings:
        scope, key, value, eq = _split_setting(setting)
        colon = scope is not None
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*", key):
            raise ConfigError(
                f"{where}: --set {setting!r}: expected [STAGE:]KEY=VALUE, e.g. data.init_args.path=/data/SIMS"
            )
        scoped = [s for s in stages if not colon or s.name == scope]
        if colon and not scoped:
            raise ConfigError(
                f"{where}: --set {setting!r}: no stage is named {scope!r} (stages: {', '.join(s.name for s in stages)})"
            )
        takers = [s for s in scoped if has(s, key)]
        if not takers:
            raise ConfigError(
                f"{where}: --set {setting!r}: no stage{f' {scope!r}' if colon else ''} has the setting {key!r} "
                f"(stages: {', '.join(s.name for s in stages)}); check the name with "
                "`msa fit --config <a stage's config> --print_config`"
            )
        for stage in takers:
            stage.args.append(f"--{key}={value}")


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
    def recorded(target: str, what: str) -> str:
        record = read_record(pipeline.folder(target))
        if record is None or record.get("status") != "finished":
            if dry_run:
                return f"<{what} of stage {target}>"
            raise StageFailed(
                f"pipeline {pipeline.source}: stage {stage.name!r} needs stage {target!r}, "
                f"which has not finished (run `msa pipeline {pipeline.source} --only {target}` first)"
            )
        return str(record[what])

    def value(match: re.Match) -> str:
        target, _, what = match.group(1).partition(".")
        if what == "dir":
            return str(pipeline.folder(target))
        if what == "fold_exports":  # in_sample: none; kfold: the exports of the stage's fold runs, fold 0 first
            return "[" + ",".join(recorded(run.name, "export") for run in pipeline.fold_runs(target)) + "]"
        return recorded(target, what)

    return [REFERENCE.sub(value, arg) for arg in stage.args]


def _fit_command(pipeline: Pipeline, stage: Stage, args: list[str]) -> list[str]:
    """The stage's ``msa`` command line: ``fit`` into its folder, or ``features extract``."""
    if stage.command != "fit":
        return [*stage.command.split(), *args]
    folder = pipeline.folder(stage.name)
    return ["fit", *args, f"--trainer.default_root_dir={folder}", f"--checkpoint.dirpath={folder / 'checkpoints'}"]


# ---------------------------------------------------------------------------------------------- running
def _selected(pipeline: Pipeline, only: str | None) -> list[Stage]:
    names = [s.name for s in pipeline.stages]
    if only is not None and only not in names:
        raise ConfigError(f"pipeline {pipeline.source}: --only {only!r}: no such stage (stages: {', '.join(names)})")
    return [s for s in pipeline.stages if only is None or s.name == only]


def run_pipeline(
    path: str | Path,
    only: str | None = None,
    force: bool = False,
    settings: Sequence[str] = (),
    out: str | Path | None = None,
) -> dict:
    """Run (or skip) the stages (``only``: that one); returns ``{stage: record}``. ``settings`` and ``out``: see
    :func:`load_pipeline`."""
    pipeline = load_pipeline(path, settings, out)
    _selected(pipeline, only)
    check_feature_sizes(pipeline)
    with _no_stray_folders(pipeline.out):
        return _run_stages(pipeline, only, force)


def _run_stages(pipeline: Pipeline, only: str | None, force: bool) -> dict:
    records = {}
    for stage in _selected(pipeline, only):
        command = _fit_command(pipeline, stage, _substitute(pipeline, stage, dry_run=False))
        records[stage.name] = _run_stage(pipeline, stage, command, force)
        if stage.retrain and only is None:
            _retrain_rounds(pipeline, stage, records, force)
    return records


@contextmanager
def _no_stray_folders(out: Path):
    """Folders under and above ``out`` that a failed run created and left empty are removed again."""
    from msa_lightning.store import HASH_MEMO

    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        if missing and [p.name for p in out.iterdir()] == [HASH_MEMO]:
            (out / HASH_MEMO).unlink()  # the memo of input hashes the run kept in its new folder
        for folder in missing:  # deepest first
            with suppress(OSError):
                folder.rmdir()  # only when empty
        raise


@contextmanager
def _attempt(folder: Path, keep_checkpoints: bool):
    """One subprocess writing into a stage ``folder``: when it fails, what it added there goes again (log
    folders, an empty stage folder) and ``stage.json`` is restored, unless ``keep_checkpoints`` and it wrote a
    checkpoint (then the folder stays as it is, for a resume)."""
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.is_dir() else None
    record = (folder / RECORD).read_bytes() if (folder / RECORD).is_file() else None
    try:
        yield
    except BaseException:
        after = set(folder.rglob("*")) if folder.is_dir() else set()
        added = sorted(after - set(before or {}), key=lambda p: len(p.parts), reverse=True)
        changed = [p for p in after if p.suffix == ".ckpt" and (before or {}).get(p) != p.stat().st_mtime_ns]
        if keep_checkpoints and changed:
            raise
        for p in added:
            if p.name != RECORD:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        if record is not None:
            (folder / RECORD).write_bytes(record)
        elif before is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            (folder / RECORD).unlink(missing_ok=True)
        raise


def pipeline_plan(
    path: str | Path, only: str | None = None, settings: Sequence[str] = (), out: str | Path | None = None
) -> list[str]:
    """What :func:`run_pipeline` would run, one line per step (``[stage] msa fit ...``), running nothing; a
    reference to an unfinished stage's outputs stays a placeholder."""
    pipeline = load_pipeline(path, settings, out)
    check_feature_sizes(pipeline)
    lines = []
    for stage in _selected(pipeline, only):
        command = _fit_command(pipeline, stage, _substitute(pipeline, stage, dry_run=True))
        lines.append(f"[{stage.name}] msa " + " ".join(shlex.quote(a) for a in command))
        if stage.command != "fit":
            lines[-1] += " (skipped while its file is complete)"
        if stage.fold:
            lines.append(
                f"[{stage.name}] export {', '.join(stage.export['outputs'])} of the best checkpoint for the held-out "
                f"fold {stage.fold['index']} of {stage.fold['folds']} of {stage.fold['of']}'s training clips"
            )
        elif stage.export:
            lines.append(f"[{stage.name}] export {', '.join(stage.export['outputs'])} of the best checkpoint")
        if stage.test:
            lines.append(f"[{stage.name}] msa test of the best checkpoint")
    return lines


def _run_stage(pipeline: Pipeline, stage: Stage, command: list[str], force: bool) -> dict:
    if stage.command != "fit":
        return _run_features_stage(pipeline, stage, command, force)
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
        log.info("msa: pipeline %s: stage %s is up to date, skipped (%s)", pipeline.name, stage.name, folder)
        return previous
    resume = []
    # an unfinished fit of the same command: continue from its newest checkpoint (Ctrl-C or last epoch)
    newest = newest_resume_checkpoint(folder / "checkpoints")
    if same and not force and newest is not None:
        resume = [f"--ckpt_path={newest}"]
        log.info("msa: pipeline %s: stage %s: resuming its unfinished fit from %s", pipeline.name, stage.name, newest)
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
    if stage.fold:
        record["fold"] = dict(stage.fold)
    with _attempt(folder, keep_checkpoints=True):
        _write_record(folder, record)
        log.info("msa: pipeline %s: stage %s: msa %s", pipeline.name, stage.name, shlex.join(command + resume))
        code = subprocess.call([sys.executable, "-m", "msa_lightning.cli", *command, *resume])
        if code != 0:
            raise StageFailed(
                f"pipeline {pipeline.name}: stage {stage.name!r} failed (msa fit exited with {code}; "
                "its output is above); finished stages are skipped when you run the pipeline again"
            )
        _finish_stage(stage, command, record)
    if stage.test:
        return _test_stage(pipeline, stage, command, record)
    return record


def _run_features_stage(pipeline: Pipeline, stage: Stage, command: list[str], force: bool) -> dict:
    """``msa features extract``: skipped while its file is the complete one it wrote for the same command line
    and named inputs (a re-run is cheap anyway: the extractor reuses every clip from its store)."""
    from msa_lightning.data.custom import read_features_manifest
    from msa_lightning.store import content_hash

    folder, out = pipeline.folder(stage.name), features_file(stage)
    inputs = {"files": _file_inputs([a for a in command if not a.startswith("--out=")], pipeline.out)}
    previous = read_record(folder)
    try:
        complete = out.is_file() and (read_features_manifest(out) or {}).get("finished") is True
    except MSAError:
        complete = False
    same = previous is not None and previous.get("command") == command and previous.get("inputs") == inputs
    if same and previous.get("status") == "finished" and complete and not force:
        if previous.get("features_hash") == content_hash(out, pipeline.out):
            log.info("msa: pipeline %s: stage %s is up to date, skipped (%s)", pipeline.name, stage.name, out)
            return previous
    record = {"stage": stage.name, "command": command, "inputs": inputs, "status": "running", "dir": str(folder)}
    record["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with _attempt(folder, keep_checkpoints=False):
        _write_record(folder, record)
        log.info("msa: pipeline %s: stage %s: msa %s", pipeline.name, stage.name, shlex.join(command))
        code = subprocess.call([sys.executable, "-m", "msa_lightning.cli", *command])
        if code != 0:
            raise StageFailed(
                f"pipeline {pipeline.name}: stage {stage.name!r} failed (msa features extract exited with {code}; "
                "its output is above); extracted clips are kept in the store for the next run"
            )
    record.update(features=str(out), features_hash=content_hash(out, pipeline.out), status="finished")
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_record(folder, record)
    return record


def _finish_stage(stage: Stage, command: list[str], record: dict) -> None:
    """The finished fit's checkpoints (and export) into its record."""
    from msa_lightning.checkpoints import resolve_checkpoint

    folder = Path(record["dir"])
    ckpt_dir = folder / "checkpoints"
    record["last_ckpt"] = str(ckpt_dir / "last.ckpt")
    try:
        record["best_ckpt"] = resolve_checkpoint(ckpt_dir, "best")
    except MSAError:  # no monitored score (e.g. no validation): the last checkpoint is the result
        record["best_ckpt"] = record["last_ckpt"]
    if stage.export:
        from msa_lightning.data.specs import SPLITS
        from msa_lightning.experiments.export import export_command

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


def _test_stage(pipeline: Pipeline, stage: Stage, command: list[str], record: dict) -> dict:
    """``msa test`` of the stage's best checkpoint with the stage's own arguments, logged in its folder."""
    folder = pipeline.folder(stage.name)
    test = [
        "test",
        *_without_ckpt_path(command[1:-2]),
        f"--ckpt_path={record['best_ckpt']}",
        f"--trainer.default_root_dir={folder}",
    ]
    log.info("msa: pipeline %s: stage %s: msa %s", pipeline.name, stage.name, shlex.join(test))
    with _attempt(folder, keep_checkpoints=False):
        code = subprocess.call([sys.executable, "-m", "msa_lightning.cli", *test])
        if code != 0:
            raise StageFailed(
                f"pipeline {pipeline.name}: stage {stage.name!r}: msa test of {record['best_ckpt']} failed "
                f"(exited with {code}; its output is above)"
            )
    record["tested"] = record["best_ckpt"]
    _write_record(folder, record)
    return record


# ---------------------------------------------------------------------------------------------- seeds
def result_stages(pipeline: Pipeline) -> list[Stage]:
    """The stages whose test metrics are the pipeline's result: the fits no other stage needs."""
    needed = {n for s in pipeline.stages for n in s.needs}
    return [s for s in pipeline.stages if s.name not in needed and s.command == "fit"]


def run_pipeline_seeds(
    path: str | Path,
    seeds: Sequence[int],
    only: str | None = None,
    force: bool = False,
    settings: Sequence[str] = (),
    out: str | Path | None = None,
) -> dict[str, Path]:
    """The whole pipeline once per seed, each into ``<out>/seed<N>/<stage>/`` with ``--seed_everything=N``
    on every stage; the result stages (:func:`result_stages`) end with ``msa test`` of their best checkpoint.
    Their test metrics go into the tables ``msa seeds`` writes (``per_seed.csv``, ``summary.csv``,
    ``summary.md``, ``seeds.json``): in ``<out>`` for one result stage, in ``<out>/<stage>/`` for several,
    so ``msa report DIR`` and ``msa report A B --ttest`` read them like any ``msa seeds`` folder.

    As with ``msa seeds``: earlier seeds of the same pipeline (file, stage configs and ``--set`` settings,
    recorded in ``seeds.json``) are kept, another pipeline's tables are refused unless ``force`` (which
    also re-runs up-to-date stages), and a failed seed is reported while the others run
    (:class:`~msa_lightning.experiments.seeds.SeedsFailed` at the end). Returns ``{stage: folder of its tables}``.
    """
    from msa_lightning.experiments.results import stage_metrics, write_seed_tables
    from msa_lightning.experiments.seeds import SeedsFailed, earlier_results, one_line, run_record
    from msa_lightning.store import atomic_write

    base = load_pipeline(path, settings, out)
    _selected(base, only)
    check_feature_sizes(base)
    results = [s.name for s in result_stages(base)]
    tables = {name: base.out if len(results) == 1 else base.out / name for name in results}
    configs = [str(base.source)] + [a for s in base.stages for a in _config_values(s.args)]
    records = {
        name: {**run_record(configs, list(settings), base.name), "pipeline": str(base.source), "stage": name}
        for name in results
    }
    kept: dict[str, dict[int, dict[str, float]]] = {}
    per_seed: dict[str, dict[int, dict[str, float]]] = {name: {} for name in results}
    failed: dict[int, str] = {}
    with _no_stray_folders(base.out):
        for name, folder in tables.items():
            kept[name] = earlier_results(folder, records[name], list(seeds), force)
            text = json.dumps(records[name], indent=1) + "\n"
            atomic_write(folder / "seeds.json", lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        for seed in seeds:
            pipeline = load_pipeline(path, [*settings, f"seed_everything={seed}"], base.out / f"seed{seed}")
            for stage in pipeline.stages:
                stage.test = stage.test or stage.name in results
            log.info("msa: pipeline %s: seed %s -> %s", pipeline.name, seed, pipeline.out)
            try:
                with _no_stray_folders(pipeline.out):
                    records = _run_stages(pipeline, only, force)
            except StageFailed as error:
                failed[seed] = one_line(error)
                log.warning("msa: pipeline %s: seed %s failed: %s", pipeline.name, seed, failed[seed])
                continue
            for name in results:
                if name not in records:
                    continue  # --only another stage
                metrics = stage_metrics(pipeline.folder(name), records[name], "test")
                if metrics is not None:
                    per_seed[name][seed] = metrics
                    write_seed_tables(dict(sorted({**kept[name], **per_seed[name]}.items())), tables[name], name)
    written = {}
    for name, folder in tables.items():
        rows = dict(sorted({**kept.get(name, {}), **per_seed[name]}.items()))
        if rows:
            write_seed_tables(rows, folder, name)
            written[name] = folder
    if failed:
        raise SeedsFailed(
            "; ".join(f"seed {s} failed: {r}" for s, r in failed.items())
            + f" (the tables of the finished seeds are in {', '.join(str(f) for f in tables.values())})"
        )
    return written


def _config_values(args: list[str]) -> list[str]:
    """The ``--config`` files a stage's command line names."""
    return [
        a.split("=", 1)[1] if a.startswith("--config=") else a
        for i, a in enumerate(args)
        if a.startswith("--config=") or (i > 0 and args[i - 1] in ("--config", "-c"))
    ]


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
        log.info(
            "msa: pipeline %s: Eq. 8 p = %.3f < %s: retraining %s with seed %d (round %d of %d)",
            pipeline.name,
            history[-1]["p"],
            history[-1]["threshold"],
            ", ".join(spec["stages"]),
            seed,
            round_,
            spec["max_rounds"],
        )
        for name in [n for s in spec["stages"] for n in (s, *(run.name for run in pipeline.fold_runs(s)))]:
            base = pipeline.stage(name)
            again = Stage(
                base.name, [*base.args, f"--seed_everything={seed}"], base.needs, base.export, base.test, fold=base.fold
            )
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
    log.info(
        "msa: pipeline %s: Eq. 8 after %d retraining round(s): p = %.3f, %s%s",
        pipeline.name,
        len(history) - 1,
        final["p"],
        final["decision"],
        " (no rounds left)" if final.get("retrain") else "",
    )
