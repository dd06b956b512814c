"""The suite's own subcommands (LightningCLI has ``fit``/``validate``/``test``/``predict``): one table, one way to run.

Each command is a module of this package, listed in :data:`COMMANDS`, with

* ``add_parser(subparsers)``: its arguments (:func:`~msa_lightning.cli.parsing.add_command`), and
* ``run(args) -> int``: it calls the library with typed arguments and prints what the library returns.

:func:`run_command` parses the command line, importing only the named command's module (``msa data inspect`` never
imports ``msa export``'s torch code), and runs it with the library's log lines shown on stderr
(:func:`console_logging`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator

from msa_lightning.cli.parsing import MSAParser

#: command -> the module that declares and runs it
COMMANDS = {
    "data": "msa_lightning.cli.data",
    "seeds": "msa_lightning.cli.seeds",
    "report": "msa_lightning.cli.report",
    "quickstart": "msa_lightning.cli.quickstart",
    "plot": "msa_lightning.cli.plot",
    "export": "msa_lightning.cli.export",
    "pipeline": "msa_lightning.cli.pipeline",
    "transcribe": "msa_lightning.cli.transcribe",
    "pretrain-data": "msa_lightning.cli.pretrain_data",
    "weights": "msa_lightning.cli.weights",
    "features": "msa_lightning.cli.features",
    "infer": "msa_lightning.cli.infer",
    "sweep": "msa_lightning.cli.sweep",
}
#: commands whose LightningCLI overrides follow a `--` (into ``args.overrides``)
OVERRIDE_COMMANDS = ("export", "seeds", "sweep")
#: commands that take config overrides such as ``--data.init_args.path=X`` among their own options
#: (into ``args.config_args``); any other command refuses an argument it does not know
CONFIG_ARG_COMMANDS = ("plot",)


def build_parser(command: str) -> MSAParser:
    """The ``msa`` parser with the subcommand ``command`` (its module imported, no other)."""
    parser = MSAParser(prog="msa", description="msa_lightning tools (fit/test/... are LightningCLI's)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    importlib.import_module(COMMANDS[command]).add_parser(subparsers)
    return parser


def split_at_double_dash(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``argv`` before the first ``--`` and the overrides after it (None without ``--``). argparse would
    give them to a positional ``overrides`` only if no other positional came first: ``msa export CKPT
    --outputs M -- --data.init_args.path=X`` must work wherever the checkpoint stands."""
    if "--" not in argv or not argv or argv[0] not in OVERRIDE_COMMANDS:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def parse_command(argv: list[str]):
    """The parsed arguments of a suite command line (``argv[0]`` is the command)."""
    argv, after = split_at_double_dash(list(argv))
    args, unknown = build_parser(argv[0]).parse_known_args(argv)
    if unknown and args.command not in CONFIG_ARG_COMMANDS:
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.config_args = unknown
    if after is not None:
        args.overrides = [*args.overrides, *after]
    return args


def run_command(argv: list[str]) -> int:
    """Parse and run a suite command line; its exit status."""
    args = parse_command(argv)
    with console_logging():
        return importlib.import_module(COMMANDS[args.command]).run(args)


class ConsoleHandler(logging.Handler):
    """The suite's log lines as a command shows them: each the bare message, on stderr (stdout holds what the
    command prints: its results, so ``msa report ... > table.md`` and ``msa plot`` keep it clean). The stream is
    looked up at each line (a test may have swapped it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


@contextlib.contextmanager
def console_logging() -> Iterator[None]:
    """Show the ``msa_lightning`` loggers' progress (INFO) and warnings while a command runs (then as before)."""
    logger = logging.getLogger("msa_lightning")
    handler, level = ConsoleHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
