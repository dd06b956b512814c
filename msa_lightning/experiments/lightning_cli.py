"""LightningCLI of the ``msa`` command: ``msa fit|validate|test|predict`` (the heavy half of
:mod:`msa_lightning.cli`, imported only by those subcommands and by :func:`make_cli`).

* model and data are chosen by class name (``model.class_path: TFNModule``); every model of the
  registry and every DataModule is imported here so the short names resolve;
* settings that follow the data (feature sizes, label bound, metric family, training-set size) are
  filled into the model from the DataModule (:func:`fill_data_facts`);
* ``--ckpt_path`` takes a checkpoint file or a run folder (:func:`~msa_lightning.checkpoints.resolve_checkpoint`);
  the file is validated and its model class must be the config's (or, with no model given, is used);
* the model's ``required_inputs`` are checked against what the DataModule provides
  (:func:`~msa_lightning.data.datamodule.check_inputs`) before the trainer runs;
* parse errors are one ``msa: error:`` line naming the config key (:class:`MSAArgumentParser`).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Union

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from msa_lightning.checkpoints import (
    LIGHTNING_NAMES,
    METRICS_HISTORY_ENV,
    check_checkpoint_class,
    checkpoint_class,
    read_checkpoint,
    resolve_checkpoint,
    short_name,
)
from msa_lightning.data.base import DATA_FACTS, DataFacts, SuiteDataModule, follow_data
from msa_lightning.data.datamodule import check_inputs
from msa_lightning.data.sampling import split_global_batch
from msa_lightning.errors import ConfigError
from msa_lightning.experiments.argv import option_value
from msa_lightning.experiments.process import process_command, quiet_known_noise, trainers, wandb_never_prompts
from msa_lightning.papers import registry  # noqa: F401  (every model and DataModule: short class names resolve)
from msa_lightning.training.callbacks import (
    ExactResume,
    MetricsHistory,
    MSACheckpoint,
    continue_in_run_folder,
)
from msa_lightning.training.module import MSARegressionModule

#: the description of ``msa fit --help`` (and the other LightningCLI subcommands)
DESCRIPTION = (
    "msa_lightning: multimodal sentiment analysis. The training subcommands are below (`msa fit --help`); "
    "the suite's own: msa data {synth,convert,inspect,wer}, msa seeds, msa report, msa quickstart, msa plot, "
    "msa export, msa pipeline, msa sweep, msa transcribe, msa pretrain-data {synth,build,inspect} (each with "
    "--help). Errors in the input end as one `msa: error:` line; add "
    "--debug (or set MSA_DEBUG=1) for the traceback."
)

#: the logger's ``save_dir`` default; it follows ``--trainer.default_root_dir`` when that is given
DEFAULT_RUNS_DIR = "runs"


# ---------------------------------------------------------------------------------------------- the CLI
class MSAArgumentParser(LightningArgumentParser):
    """Parse errors as one ``msa: error:`` message naming the config key, instead of the usage of every
    option followed by jsonargparse's Union report (``--debug`` raises jsonargparse's error instead)."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("MSA_DEBUG", "") not in ("", "0"):
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        print(f"msa: error: {condense_parse_error(message)}", file=sys.stderr)
        print(f"(`{parser.prog.replace(' [options]', '')} --help` lists the options)", file=sys.stderr)
        sys.exit(2)


def condense_parse_error(message: str) -> str:
    """``model.init_args.dropout: expected float, got value: abc (TFNModule)`` from jsonargparse's report
    of a subclass argument that "does not validate against any of the Union subtypes"."""
    lines = [line for line in message.splitlines() if line.strip()]
    outer = re.match(r'Parser key "([^"]+)":', lines[0].strip()) if lines else None
    problem = next((i for i, line in enumerate(lines) if "- Problem with given class_path" in line), None)
    if outer is None or "Union subtypes" not in message:
        return _short_types(message)
    if problem is None:  # a plain Union (``int | None``, a class name): the reasons, without the NoneType branch
        given = re.search(r"^\s*Given value: (.*)$", message, re.M)
        reasons = [
            line.strip()[2:]
            for line in lines
            if line.strip().startswith("- ")
            and "NoneType" not in line
            and "Union subtypes" not in line
            and "not accessible" not in line
        ]
        if any("dot import path" in r for r in reasons) and given:
            reasons = [f"no class named {given.group(1)!r} (a class name such as TFNModule, or a full import path)"]
        elif given:
            reasons = [", ".join(dict.fromkeys(reasons)) + f"; got {given.group(1)!r}"]
        return _short_types(f"{outer.group(1)}: {' '.join(reasons)}")
    class_name = re.search(r"class_path '([^']+)'", lines[problem]).group(1).rsplit(".", 1)[-1]
    indent = len(lines[problem]) - len(lines[problem].lstrip())
    keys, text = [outer.group(1)], []
    for line in lines[problem + 1 :]:
        if len(line) - len(line.lstrip()) <= indent:
            break
        inner = re.match(r'Parser key "([^"]+)":', line.strip())
        if inner:
            keys += ["init_args", inner.group(1)] if len(keys) == 1 else [inner.group(1)]
        else:
            text.append(line.strip())
    return _short_types(f"{'.'.join(keys)}: {' '.join(text)} ({class_name})")


def _short_types(text: str) -> str:
    return re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)


class MSACLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # last.ckpt at every epoch end; RNG state, run folder and Ctrl-C for exact resumes (tools/callbacks.py)
        parser.add_lightning_class_args(MSACheckpoint, "checkpoint")
        parser.add_lightning_class_args(ExactResume, "resume")
        parser.add_argument(
            "--global_batch_size",
            type=Optional[Union[int, Literal["single_device"]]],
            default=None,
            help="samples per optimiser step over all devices, whatever their number: data.batch_size becomes the "
            "largest batch per device and trainer.accumulate_grad_batches makes up the rest. `single_device`: the "
            "config's step on one device (data.batch_size x trainer.accumulate_grad_batches, each paper's batch), "
            "kept on any number of devices",
        )
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/mae",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch:02d}",
                "checkpoint.auto_insert_metric_name": False,
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": DEFAULT_RUNS_DIR, "name": "msa"},
                },
            }
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument(
                "--predictions",
                type=Optional[str],
                default=None,
                help="CSV file for the predictions (default: predictions_<split>.csv in the run folder)",
            )
        return parser

    # ---------------------------------------------------------------- parsing
    def parse_arguments(self, parser, args) -> None:
        argv = list(sys.argv[1:] if args is None else args)
        with_model = model_from_checkpoint(argv)
        if with_model is not None:  # no model given: the checkpoint's class (one note says so)
            argv = args = with_model
        # --print_config prints (and exits) inside parsing: with a class switch, print after the reset below
        printing = [a for a in argv if a.startswith("--print_config")] if _switches(argv) else []
        if printing and not all(a == "--print_config" for a in printing):
            printing = []  # flags (--print_config=skip_null, ...): leave it to jsonargparse
        super().parse_arguments(parser, [a for a in argv if a not in printing] if printing else args)
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        if sub and cfg.get("ckpt_path"):
            cfg["ckpt_path"] = resolve_checkpoint(cfg["ckpt_path"], "last" if sub == "fit" else "best")
            _check_checkpoint(cfg)
        _reset_on_class_switch(cfg, argv)
        if printing:
            print((self._parser(sub) if sub else parser).dump(cfg, skip_none=False), end="")
            sys.exit(0)

    def _subconfig(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        _logger_follows_root_dir(self._subconfig())
        if self.subcommand in ("validate", "test", "predict"):
            # evaluating another run's checkpoint: its ModelCheckpoint state (top-k bookkeeping) is not needed
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")
        if self.subcommand == "fit":
            continue_in_run_folder(self._subconfig())

    # ---------------------------------------------------------------- instantiation
    def instantiate_classes(self) -> None:
        """The DataModule first; its facts fill the model's data-shaped arguments; then everything else."""
        cfg = self._subconfig()
        datamodule = None
        model_args = cfg.get("model.init_args") if cfg.get("model") is not None else None
        if cfg.get("data") is not None and model_args is not None and any(k in model_args for k in DATA_FACTS):
            parser = self._parser(self.subcommand)
            instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
            datamodule = instantiate(Namespace(data=cfg["data"].clone()), instantiate_groups=False)["data"]
            if isinstance(datamodule, SuiteDataModule):
                fill_data_facts(cfg, datamodule.data_facts(), datamodule.describe())
        super().instantiate_classes()
        if datamodule is not None:  # keep the instance that already read the file
            self.datamodule = datamodule
            (self.config_init[self.subcommand] if self.subcommand else self.config_init)["data"] = datamodule
        if self.model is not None and self.datamodule is not None:  # a pairing that cannot work, before any run
            check_inputs(self.model, self.datamodule)
        if self.subcommand in (None, "fit"):  # None: a run built from Python to be fitted (run=False)
            apply_global_batch_size(cfg, self.trainer, self.datamodule)

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        if os.environ.get(METRICS_HISTORY_ENV) and self.subcommand == "fit":  # a sweep trial: its metrics per epoch
            trainer.callbacks.append(MetricsHistory(os.environ[METRICS_HISTORY_ENV]))
        trainers.add(trainer)
        return trainer

    # ---------------------------------------------------------------- predict
    def predict(self, **kwargs: Any):
        """``trainer.predict``, then the predictions as a CSV file (rank 0 writes it and says where)."""
        from msa_lightning.training.predictions import predict_and_write

        kwargs.pop("return_predictions", None)
        ckpt_path = kwargs.pop("ckpt_path", None)
        return predict_and_write(self.trainer, self._subconfig().get("predictions"), ckpt_path, **kwargs)


def apply_global_batch_size(cfg, trainer, datamodule) -> None:
    """``global_batch_size`` (samples per optimiser step over all devices) -> the DataModule's per-device
    ``batch_size`` and the trainer's ``accumulate_grad_batches`` for this world size (said once, by rank 0)."""
    wanted = cfg.get("global_batch_size")
    if wanted is None:
        return
    if not isinstance(getattr(datamodule, "batch_size", None), int):
        raise ConfigError(f"global_batch_size: the DataModule ({type(datamodule).__name__}) has no batch_size to set")
    accumulation = cfg.get("trainer.accumulate_grad_batches") or 1
    if wanted == "single_device":
        global_batch = datamodule.batch_size * accumulation
    elif accumulation != 1:
        raise ConfigError(
            f"global_batch_size {wanted} sets trainer.accumulate_grad_batches itself; remove accumulate_grad_batches: "
            f"{accumulation} (data.batch_size is the largest batch per device)"
        )
    else:
        global_batch = wanted
    per_device, accumulation = split_global_batch(global_batch, trainer.world_size, datamodule.batch_size)
    datamodule.batch_size, trainer.accumulate_grad_batches = per_device, accumulation
    rank_zero_info(
        f"msa: global batch {global_batch} = {per_device} per device x {trainer.world_size} device(s) "
        f"x {accumulation} accumulated batch(es)"
    )


def fill_data_facts(cfg, facts: DataFacts, where: str = "the data") -> None:
    """Fill ``model.init_args`` from the data's ``facts`` before the model is built, by the rule the model applies
    at ``setup`` (:func:`~msa_lightning.data.base.follow_data`): unset -> the data's value; equal -> kept;
    different -> ConfigError naming both. Only arguments the model's ``__init__`` has are touched."""
    follow_data(cfg["model.init_args"], facts, where)


def _logger_follows_root_dir(cfg) -> None:
    """``--trainer.default_root_dir DIR`` moves logs and checkpoints: a logger left at the default
    ``save_dir`` writes under DIR instead (checkpoints follow the logger's folder)."""
    root = cfg.get("trainer.default_root_dir")
    if root is None:
        return
    loggers = cfg.get("trainer.logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = logger.get("init_args") if hasattr(logger, "get") else None
        if init_args is not None and str(init_args.get("save_dir")) == DEFAULT_RUNS_DIR:
            init_args["save_dir"] = str(root)


_CLASS_SWITCHES = {"--model": "model", "--model.class_path": "model", "--data": "data", "--data.class_path": "data"}


def _switches(argv: list[str]) -> list[str]:
    """``model``/``data`` when the command line chooses its class."""
    return sorted({v for a in argv for k, v in _CLASS_SWITCHES.items() if a == k or a.startswith(k + "=")})


def _reset_on_class_switch(cfg, argv: list[str]) -> None:
    """``--data X`` / ``--model X`` on the command line, over a config file that chose another class,
    starts X from its own defaults: jsonargparse would keep every earlier init_arg X also accepts (a
    MOSI config's ``dataset: mosi`` or an ASR config's ``tokenizer:`` silently carried into the new
    class). Values given on the command line stay; the dropped config values are named in one notice."""
    for key in _switches(argv):
        spec = cfg.get(key)
        if spec is None or not hasattr(spec, "get") or spec.get("init_args") is None:
            continue
        before = _class_in_config_files(argv, key)
        if before is None or before.rsplit(".", 1)[-1] == spec["class_path"].rsplit(".", 1)[-1]:
            continue  # no class in the config files, or the same one: nothing was carried over
        given = set()
        for a in argv:
            for prefix in (f"--{key}.init_args.", f"--{key}."):
                if a.startswith(prefix):
                    given.add(a[len(prefix) :].split("=")[0].split(".")[0])
        defaults = _class_defaults(spec["class_path"])
        init_args = spec["init_args"]
        dropped = {k: v for k, v in init_args.items() if k not in given and k in defaults and defaults[k] != v}
        for k in dropped:
            init_args[k] = defaults[k]
        if dropped and os.environ.get("LOCAL_RANK", "0") == "0":
            name = spec["class_path"].rsplit(".", 1)[-1]
            values = ", ".join(f"{k}={v!r}" for k, v in sorted(dropped.items()))
            print(
                f"msa: note: --{key} switched the class from {before.rsplit('.', 1)[-1]} to {name}, which starts "
                f"from its own defaults; not taken from the config: {values}",
                file=sys.stderr,
            )


def _config_documents(argv: list[str]) -> list[dict]:
    """The mappings the ``--config``/``-c`` values on ``argv`` hold, in order: files, and YAML given inline
    (``msa export`` passes a run's saved config that way)."""
    import yaml

    documents = []
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            value = a.split("=", 1)[1]
        elif a in ("--config", "-c") and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        try:
            document = yaml.safe_load(Path(value).read_text() if Path(value).is_file() else value)
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents


def _class_in_config_files(argv: list[str], key: str) -> str | None:
    """The ``key`` class the ``--config`` files on ``argv`` choose (the last one wins)."""
    found = None
    for document in _config_documents(argv):
        section = document.get(key)
        if isinstance(section, str):
            found = section
        elif isinstance(section, dict) and section.get("class_path"):
            found = section["class_path"]
    return found


def model_given(argv: list[str]) -> bool:
    """``argv`` chooses a model: ``--model``/``--model.*`` options, or a ``model`` section in a config."""
    if any(a == "--model" or a.startswith(("--model=", "--model.")) for a in argv):
        return True
    return any(document.get("model") is not None for document in _config_documents(argv))


def model_from_checkpoint(argv: list[str]) -> list[str] | None:
    """``argv`` of ``msa fit|validate|test|predict --ckpt_path C`` that gives no model, with
    ``--model=<C's class>`` added (and one note on stderr saying so); None when nothing is added."""
    if not argv or argv[0] not in ("fit", "validate", "test", "predict") or "-h" in argv or "--help" in argv:
        return None
    given = option_value(argv, "--ckpt_path")
    if not given or model_given(argv):
        return None
    path = resolve_checkpoint(given, "last" if argv[0] == "fit" else "best")
    if not Path(path).is_file():
        return None  # one of Lightning's names ("best", "last", ...)
    found = checkpoint_class(path)
    if found is None:
        raise ConfigError(
            f"no model given (--model or a config's model section), and ckpt_path={path!r} does not "
            f"record its model class: pass --model"
        )
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(
            f"msa: note: no model given; using the checkpoint's class {short_name(found)} (--model={found}, "
            f"from {path})",
            file=sys.stderr,
            flush=True,
        )
    return [*argv, f"--model={found}"]


def _check_checkpoint(cfg) -> None:
    """``ckpt_path`` (resolved to a file) is a readable checkpoint of the config's model class."""
    path = str(cfg["ckpt_path"])
    if path in LIGHTNING_NAMES or path.startswith("registry:") or not Path(path).is_file():
        return
    state = read_checkpoint(path)
    model = cfg.get("model")
    class_path = model.get("class_path") if hasattr(model, "get") else model
    if isinstance(class_path, str) and class_path:
        check_checkpoint_class(path, class_path, state)


def import_class(class_path: str) -> type:
    """The class a ``class_path`` names: a dotted import path, or a short name of a registered model or DataModule."""
    module, _, name = class_path.rpartition(".")
    if module:
        return getattr(importlib.import_module(module), name)
    import msa_lightning.data

    for owner in (registry, msa_lightning.data.datamodule, msa_lightning.papers.swrm.data, msa_lightning.data.raw):
        if hasattr(owner, name):
            return getattr(owner, name)
    raise ConfigError(f"no class named {class_path!r} (a class name such as TFNModule, or a full import path)")


def _class_defaults(class_path: str) -> dict:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(import_class(class_path))
    return dict(parser.get_defaults().items())


#: the sections of an ``msa fit`` command line whose keys are a class's ``__init__`` arguments
_SECTION_CLASSES = {
    "trainer": "lightning.pytorch.Trainer",
    "checkpoint": "msa_lightning.training.callbacks.MSACheckpoint",
    "resume": "msa_lightning.training.callbacks.ExactResume",
}


def _dotted_keys(document, prefix: str = "") -> set[str]:
    """Every key path of a nested mapping, ``init_args`` left out (``data.init_args.path`` -> ``data.path``)."""
    found = set()
    for k, v in document.items() if isinstance(document, dict) else ():
        key = prefix if k == "init_args" else f"{prefix}.{k}" if prefix else str(k)
        found.add(key)
        found |= _dotted_keys(v, key)
    return found


def has_setting(argv: list[str], key: str) -> bool:
    """Whether the ``msa fit`` command line ``argv`` has the setting ``key`` (dotted; ``init_args`` may be
    left out): a config file or an option on ``argv`` sets it, or it is an ``__init__`` argument of the class
    its section names (the model and data classes ``argv`` chooses, the Trainer, the checkpoint callback).
    ``msa pipeline --set`` applies a setting to the stages that have it."""
    wanted = ".".join(p for p in key.split(".") if p != "init_args")
    given = set().union(*(_dotted_keys(d) for d in _config_documents(argv)))
    given |= {
        ".".join(p for p in a[2:].split("=", 1)[0].split(".") if p != "init_args")
        for a in argv
        if a.startswith("--") and not a.startswith("--config")
    }
    if wanted in ("seed_everything", "ckpt_path") or any(k == wanted or k.startswith(wanted + ".") for k in given):
        return True
    section, _, rest = wanted.partition(".")
    if not rest:
        return False
    class_path = _SECTION_CLASSES.get(section)
    if section in ("model", "data"):
        class_path = (
            option_value(argv, f"--{section}")
            or option_value(argv, f"--{section}.class_path")
            or _class_in_config_files(argv, section)
        )
    if not class_path:
        return False
    try:
        return rest.split(".")[0] in _class_defaults(class_path)
    except (ConfigError, ImportError, AttributeError):
        return False  # a class the stage's own `msa fit` will report


def make_cli(args: list[str] | None = None, run: bool = True, **kwargs) -> MSACLI:
    """Build the CLI from ``args`` (a list like the command line) or from ``sys.argv``.

    From Python with ``run=True`` under a DDP trainer, the other ranks re-run ``msa <args>``; with
    ``run=False`` wrap the calls that fit in :func:`process_command` with a command that re-creates them.
    """
    wandb_never_prompts()
    quiet_known_noise()
    cli_kwargs = dict(
        seed_everything_default=1111,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_class=MSAArgumentParser,
        parser_kwargs={"description": DESCRIPTION},
        auto_configure_optimizers=False,
        **kwargs,
    )
    if args is None:  # from the command line: LightningCLI reads sys.argv, DDP re-runs it unchanged
        return MSACLI(
            MSARegressionModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=None,
            **cli_kwargs,
        )
    with process_command(list(args)):
        return MSACLI(
            MSARegressionModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(args),
            **cli_kwargs,
        )
