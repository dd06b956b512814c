"""The ``msa`` command.

* ``msa fit|validate|test|predict --config CONFIG.yaml`` — LightningCLI; model and data are chosen by
  class name (``model.class_path: TFNModule``), every hyper-parameter is a typed ``__init__`` argument,
  ``--print_config`` shows the resolved config. Settings that follow the data (feature sizes, label
  bound, metric family, training-set size) are filled into the model from the DataModule.
  ``--ckpt_path`` takes a checkpoint file or a run folder (its best checkpoint; ``RUN/last`` for the last).
* ``msa data synth|convert|inspect|wer`` — feature-file tools.
* ``msa seeds --config C --seeds 1111 1112 ...`` — fit + test over seeds, mean/std table.
* ``msa report DIR`` — merge result tables of several runs.
* ``msa quickstart`` — synthetic MOSI -> fit -> test -> metric table, in about a minute on a CPU.

Expected failures (:class:`msa_lightning.errors.MSAError`) end as one ``msa: error: ...`` message and
exit status 2; ``--debug`` anywhere on the command line (or ``MSA_DEBUG=1``) shows the traceback.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import re
import sys
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterator, Optional

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import msa_lightning.data.datamodule  # noqa: F401  (the data base class is LightningDataModule: raw media too;
import msa_lightning.data.raw_media  # noqa: F401  these imports let short class names resolve)
from msa_lightning.errors import ConfigError, MSAError
from msa_lightning.models import registry  # noqa: F401  (imports every model so names resolve)
from msa_lightning.models.base import MSARegressionModule
from msa_lightning.tools.callbacks import ExactResume, MSACheckpoint, continue_in_run_folder

EXTRA_COMMANDS = ("data", "seeds", "report", "quickstart", "plot", "export", "pipeline", "transcribe", "pretrain-data")

DESCRIPTION = (
    "msa_lightning: multimodal sentiment analysis. The training subcommands are below (`msa fit --help`); "
    "the suite's own: msa data {synth,convert,inspect,wer}, msa seeds, msa report, msa quickstart, msa plot, "
    "msa export, msa pipeline, msa transcribe, msa pretrain-data {synth,build,inspect} (each with --help). Errors in the input end as one `msa: error:` line; add "
    "--debug (or set MSA_DEBUG=1) for the traceback."
)

#: the logger's ``save_dir`` default; it follows ``--trainer.default_root_dir`` when that is given
DEFAULT_RUNS_DIR = "runs"

#: model arguments filled from ``datamodule.data_facts()``, with how a message names the fact
DATA_FACTS = {
    "audio_dim": "audio features of size",
    "vision_dim": "vision features of size",
    "label_bound": "labels bounded by",
    "metric_family": "the metric family",
    "num_train_samples": "a number of training samples of",
}
#: a model argument holding one of these values is "not set" and takes the data's value
_UNSET = (None, "auto")

_trainers: "weakref.WeakSet" = weakref.WeakSet()  # trainers built by the CLI (their DDP children, on errors)


# ---------------------------------------------------------------------------------------------- output hygiene
class _DropMessages(logging.Filter):
    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.needles)


def quiet_known_noise() -> None:
    """Drop the advertising tip and the deprecation notices of our pinned libraries from the output.

    * ``lightning.pytorch.trainer.connectors.logger_connector`` logs a "try installing litlogger" tip
      (through the ``rank_zero`` logger) for every Trainer;
    * torch (2.13 here) deprecates ``isinstance(x, LeafSpec)``, which lightning's ``utilities/_pytree.py`` still
      uses on every optimizer step (a FutureWarning we cannot act on);
    * jsonargparse 4.53 warns about the methods LightningCLI 2.6 still calls (``instantiate_classes``,
      ``add_instantiator``, ``skip_none``) when Python shows DeprecationWarnings (tests, ``-W default``);
    * LightningCLI warns when both ``args`` and ``sys.argv`` are set, which :func:`process_command` does
      on purpose.
    """
    # LightningCLI 2.6 calls jsonargparse methods deprecated in 4.49 (instantiate_classes, add_instantiator)
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessages("litlogger"))
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # runs started from Python pass `args` and set sys.argv to the same command for DDP (process_command)
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")


def _wandb_never_prompts() -> None:
    """W&B asks for a login on a terminal when no key is configured; default to offline instead."""
    if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
        netrc = os.path.expanduser("~/.netrc")
        if not (os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read()):
            os.environ["WANDB_MODE"] = "offline"


# ---------------------------------------------------------------------------------------------- DDP command line
_command_held = False


@contextlib.contextmanager
def process_command(argv: list[str]) -> Iterator[None]:
    """Make ``msa <argv>`` the command line Lightning's DDP launcher re-runs on ranks 1..N-1.

    ``_SubprocessScriptLauncher`` starts every other rank as ``python -m <__main__.__spec__.name>
    <sys.argv[1:]>`` (or ``python <sys.argv[0]> ...`` for a script): each rank re-runs the whole program
    and meets rank 0 in the same sequence of fits. A run started from Python (tests, ``msa seeds``)
    therefore sets both to the ``msa`` command that re-creates it. The outermost caller wins: a
    multi-seed run keeps its own command while each seed's CLI is built.
    """
    global _command_held
    if _command_held:
        yield
        return
    import __main__

    saved_argv, saved_spec = sys.argv, getattr(__main__, "__spec__", None)
    sys.argv = [sys.argv[0] if sys.argv else "msa", *argv]
    __main__.__spec__ = importlib.util.find_spec("msa_lightning.cli")
    _command_held = True
    try:
        yield
    finally:
        sys.argv, __main__.__spec__ = saved_argv, saved_spec
        _command_held = False


def _launched_child_rank() -> int:
    """Rank (on its node) of a process started by Lightning's DDP launcher; 0 for rank 0, and for ranks
    that torchrun or SLURM started (their parent is not rank 0)."""
    if os.environ.get("LOCAL_RANK", "0") == "0" or "TORCHELASTIC_RUN_ID" in os.environ or "SLURM_PROCID" in os.environ:
        return 0
    return int(os.environ["LOCAL_RANK"])


def _stop_children() -> None:
    """Rank 0 stops the DDP processes it launched, which may be waiting for it in a collective."""
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    for trainer in list(_trainers):
        launcher = getattr(trainer.strategy, "launcher", None)
        if isinstance(launcher, _SubprocessScriptLauncher):
            for proc in launcher.procs:
                if proc.poll() is None:
                    proc.kill()


def _wait_for_parent(limit_s: float = 30.0) -> bool:
    """Wait (up to ``limit_s``) for rank 0, the parent of a launched rank, to end; True if it did.
    A launched rank must not exit with an error first: rank 0's process observer would kill rank 0."""
    parent, start = os.getppid(), time.monotonic()
    while os.getppid() == parent and time.monotonic() - start < limit_s:
        time.sleep(0.1)
    return os.getppid() != parent


# ---------------------------------------------------------------------------------------------- run folders
def resolve_checkpoint(path: str | os.PathLike, which: str = "best") -> str:
    """A checkpoint file for ``--ckpt_path``: a file as it is; a run folder -> its best checkpoint
    (``which="best"``) or ``last.ckpt``; ``RUN/best`` and ``RUN/last`` choose explicitly."""
    path = Path(path).expanduser()
    if path.is_file():
        return str(path)
    if path.name in ("best", "last") and path.parent.is_dir():
        path, which = path.parent, path.name
    if not path.is_dir():
        if str(path) in ("best", "last", "hpc", "registry") or str(path).startswith("registry:"):
            return str(path)  # Lightning's own names
        where = path.parent if path.parent.is_dir() else None
        raise ConfigError(f"ckpt_path={str(path)!r}: no such file or run folder"
                          + (f" ({where} {_listing(where)[3:]})" if where else ""))
    folder = _checkpoint_folder(path)
    if which == "last":
        last = folder / "last.ckpt"
        if last.is_file():
            return str(last)
        raise ConfigError(f"ckpt_path={str(path)!r}: no last.ckpt in {folder} ({_listing(folder)})")
    best = _best_checkpoint(folder)
    if best is None:
        raise ConfigError(f"ckpt_path={str(path)!r}: no best checkpoint (best*.ckpt) in {folder} ({_listing(folder)}); "
                          f"pass a file or {path}/last")
    return str(best)


def _listing(folder: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "the folder is empty"
    return "it holds: " + ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _checkpoint_folder(run: Path) -> Path:
    """``run`` itself, ``run/checkpoints``, or the single ``*/checkpoints`` below it (a logger's version folder)."""
    if any(run.glob("*.ckpt")):
        return run
    if (run / "checkpoints").is_dir():
        return run / "checkpoints"
    found = sorted({p.parent for p in run.glob("**/checkpoints/*.ckpt")})
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ConfigError(f"ckpt_path={str(run)!r} holds several runs with checkpoints: "
                          + ", ".join(str(p.parent) for p in found) + "; pass one of them")
    raise ConfigError(f"ckpt_path={str(run)!r}: no checkpoints found ({_listing(run)})")


def _best_checkpoint(folder: Path) -> Path | None:
    """The best checkpoint the run's ModelCheckpoint recorded (read from ``last.ckpt``), else the only
    ``best*.ckpt``, else the newest one."""
    candidates = sorted(folder.glob("best*.ckpt"))
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    last = folder / "last.ckpt"
    if last.is_file():
        import torch

        state = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
        for key, value in state.get("callbacks", {}).items():
            if str(key).startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("best_model_path"):
                recorded = folder / Path(value["best_model_path"]).name
                if recorded.is_file():
                    return recorded
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


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
        reasons = [line.strip()[2:] for line in lines if line.strip().startswith("- ")
                   and "NoneType" not in line and "Union subtypes" not in line and "not accessible" not in line]
        if any("dot import path" in r for r in reasons) and given:
            reasons = [f"no class named {given.group(1)!r} (a class name such as TFNModule, or a full import path)"]
        elif given:
            reasons = [", ".join(dict.fromkeys(reasons)) + f"; got {given.group(1)!r}"]
        return _short_types(f"{outer.group(1)}: {' '.join(reasons)}")
    class_name = re.search(r"class_path '([^']+)'", lines[problem]).group(1).rsplit(".", 1)[-1]
    indent = len(lines[problem]) - len(lines[problem].lstrip())
    keys, text = [outer.group(1)], []
    for line in lines[problem + 1:]:
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
        parser.set_defaults({
            "checkpoint.monitor": "val/mae", "checkpoint.mode": "min", "checkpoint.save_last": True,
            "checkpoint.filename": "best-{epoch:02d}", "checkpoint.auto_insert_metric_name": False,
            "trainer.logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": DEFAULT_RUNS_DIR, "name": "msa"}},
        })

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument("--predictions", type=Optional[str], default=None,
                                help="CSV file for the predictions (default: predictions_<split>.csv in the run folder)")
        return parser

    # ---------------------------------------------------------------- parsing
    def parse_arguments(self, parser, args) -> None:
        argv = list(sys.argv[1:] if args is None else args)
        # --print_config prints (and exits) inside parsing: with a class switch, print after the reset below
        printing = [a for a in argv if a.startswith("--print_config")] if _switches(argv) else []
        if printing and not all(a == "--print_config" for a in printing):
            printing = []  # flags (--print_config=skip_null, ...): leave it to jsonargparse
        super().parse_arguments(parser, [a for a in argv if a not in printing] if printing else args)
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        if sub and cfg.get("ckpt_path"):
            cfg["ckpt_path"] = resolve_checkpoint(cfg["ckpt_path"], "last" if sub == "fit" else "best")
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
            if callable(getattr(datamodule, "data_facts", None)):
                fill_data_facts(cfg, datamodule.data_facts(), _describe_data(datamodule))
        super().instantiate_classes()
        if datamodule is not None:  # keep the instance that already read the file
            self.datamodule = datamodule
            (self.config_init[self.subcommand] if self.subcommand else self.config_init)["data"] = datamodule

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        _trainers.add(trainer)
        return trainer

    # ---------------------------------------------------------------- predict
    def predict(self, **kwargs: Any):
        """``trainer.predict``, then the predictions as a CSV file (rank 0 writes it and says where)."""
        from msa_lightning.tools.predictions import predict_and_write

        kwargs.pop("return_predictions", None)
        ckpt_path = kwargs.pop("ckpt_path", None)
        return predict_and_write(self.trainer, self._subconfig().get("predictions"), ckpt_path, **kwargs)


def _describe_data(datamodule) -> str:
    try:
        return f"data file {datamodule.feature_file}"
    except Exception:  # noqa: BLE001 - only a label for a message
        return f"data ({type(datamodule).__name__})"


def fill_data_facts(cfg, facts: dict, where: str = "the data") -> None:
    """Fill ``model.init_args`` from ``facts``: unset -> the data's value; equal -> kept; different ->
    ConfigError naming both. Only arguments the model's ``__init__`` has are touched."""
    init_args = cfg["model.init_args"]
    for key, fact in facts.items():
        if key not in DATA_FACTS or key not in init_args or fact is None:
            continue
        given = init_args[key]
        if given in _UNSET:
            init_args[key] = fact
        elif key == "num_train_samples":
            continue  # not an error (ULGM resizes its memories to the data; a checkpoint tested on other data)
        elif not _same(given, fact):
            raise ConfigError(f"model.init_args.{key}={given!r} but {where} has {DATA_FACTS[key]} {fact!r} "
                              f"(leave model.init_args.{key} unset to follow the data)")


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


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
                    given.add(a[len(prefix):].split("=")[0].split(".")[0])
        defaults = _class_defaults(spec["class_path"])
        init_args = spec["init_args"]
        dropped = {k: v for k, v in init_args.items() if k not in given and k in defaults and defaults[k] != v}
        for k in dropped:
            init_args[k] = defaults[k]
        if dropped and os.environ.get("LOCAL_RANK", "0") == "0":
            name = spec["class_path"].rsplit(".", 1)[-1]
            values = ", ".join(f"{k}={v!r}" for k, v in sorted(dropped.items()))
            print(f"msa: note: --{key} switched the class from {before.rsplit('.', 1)[-1]} to {name}, which starts "
                  f"from its own defaults; not taken from the config: {values}", file=sys.stderr)


def _class_in_config_files(argv: list[str], key: str) -> str | None:
    """The ``key`` class the ``--config`` files on ``argv`` choose (the last one wins)."""
    import yaml

    found = None
    for i, a in enumerate(argv):
        path = a.split("=", 1)[1] if a.startswith("--config=") else argv[i + 1] if a == "--config" and i + 1 < len(argv) else None
        if path is None or not Path(path).is_file():
            continue
        section = (yaml.safe_load(Path(path).read_text()) or {}).get(key)
        if isinstance(section, str):
            found = section
        elif isinstance(section, dict) and section.get("class_path"):
            found = section["class_path"]
    return found


def _class_defaults(class_path: str) -> dict:
    from jsonargparse import ArgumentParser
    from jsonargparse._util import import_object  # noqa: PLC2701 - the resolver jsonargparse itself uses

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(import_object(class_path))
    return dict(parser.get_defaults().items())


def make_cli(args: list[str] | None = None, run: bool = True, **kwargs) -> MSACLI:
    """Build the CLI from ``args`` (a list like the command line) or from ``sys.argv``.

    From Python with ``run=True`` under a DDP trainer, the other ranks re-run ``msa <args>``; with
    ``run=False`` wrap the calls that fit in :func:`process_command` with a command that re-creates them.
    """
    _wandb_never_prompts()
    quiet_known_noise()
    cli_kwargs = dict(seed_everything_default=1111, run=run, save_config_kwargs={"overwrite": True},
                      parser_class=MSAArgumentParser, parser_kwargs={"description": DESCRIPTION},
                      auto_configure_optimizers=False, **kwargs)
    if args is None:  # from the command line: LightningCLI reads sys.argv, DDP re-runs it unchanged
        return MSACLI(MSARegressionModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      args=None, **cli_kwargs)
    with process_command(list(args)):
        return MSACLI(MSARegressionModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      args=list(args), **cli_kwargs)


# ---------------------------------------------------------------------------------------------- entry point
def _debug_requested(args: list[str]) -> tuple[list[str], bool]:
    debug = "--debug" in args or os.environ.get("MSA_DEBUG", "") not in ("", "0")
    if debug:
        os.environ["MSA_DEBUG"] = "1"  # DDP ranks inherit it
        os.environ.setdefault("JSONARGPARSE_DEBUG", "true")  # parse errors with their traceback too
    return [a for a in args if a != "--debug"], debug


def main(argv: list[str] | None = None) -> None:
    """The ``msa`` command: one error boundary around LightningCLI and the suite's own subcommands."""
    from_command_line = argv is None
    args, debug = _debug_requested(list(sys.argv[1:] if from_command_line else argv))
    if from_command_line:
        sys.argv = [sys.argv[0], *args]  # what DDP re-runs on the other ranks
    quiet_known_noise()
    code = 0
    try:
        if args and args[0] in EXTRA_COMMANDS:
            from msa_lightning.tools.commands import run_extra

            with process_command(args) if not from_command_line else contextlib.nullcontext():
                code = run_extra(args)
        else:
            make_cli(None if from_command_line else args)
    except Exception as error:
        expected = expected_error(error)
        if expected is None or debug:
            raise
        report_error(expected)
        sys.exit(2)
    sys.exit(code)


def expected_error(error: BaseException) -> MSAError | None:
    """The MSAError behind ``error``: itself, or its direct cause (jsonargparse re-raises an error of a
    class's ``__init__`` as a ValueError ``from`` it when the argument's type is a Union)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, MSAError):
            return error
        error, seen = error.__cause__, seen + 1
    return None


def without_worker_traceback(error: BaseException) -> str:
    """The error's message. An error raised in a DataLoader worker is re-raised by torch with the worker's
    traceback inside its message; keep the original message and say which worker it came from."""
    message = str(error).strip() or type(error).__name__
    where = re.match(r"Caught \w+ (in DataLoader worker process \d+)\.\nOriginal Traceback", message)
    if where is None:
        return message
    cls = type(error)
    for name in (f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__):
        head, sep, original = message.rpartition(f"\n{name}: ")
        if sep:
            return f"{original.strip()} ({where.group(1)})"
    return message


def report_error(error: BaseException) -> None:
    """``msa: error: <message>`` on stderr. Under DDP rank 0 speaks and stops the ranks it launched; a
    launched rank waits for rank 0 (which meets the same error) and speaks only if rank 0 does not end."""
    rank = _launched_child_rank()
    message = without_worker_traceback(error)
    if rank:
        if not _wait_for_parent():
            print(f"msa: error: [rank {rank}] {message}", file=sys.stderr, flush=True)
        return
    print(f"msa: error: {message}", file=sys.stderr, flush=True)
    _stop_children()


if __name__ == "__main__":
    main()
