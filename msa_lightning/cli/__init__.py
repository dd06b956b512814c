"""The ``msa`` command: :func:`main` (:mod:`msa_lightning.cli.main`, the entry point and the error boundary) and the
suite's subcommands (:mod:`msa_lightning.cli.commands`: one table, a module per command that parses its arguments and
prints what the library returns). Nothing in the package imports it."""

from __future__ import annotations

from msa_lightning.cli.main import main
from msa_lightning.deprecated import moved_names

__all__ = ["main"]

#: names this module re-exported before the layout of release 0.2, with their home now
__getattr__ = moved_names(
    __name__,
    {
        "resolve_checkpoint": "msa_lightning.checkpoints",
        "process_command": "msa_lightning.experiments.process",
        "quiet_known_noise": "msa_lightning.experiments.process",
        **{
            name: "msa_lightning.experiments.lightning_cli"
            for name in (
                "MSACLI",
                "MSAArgumentParser",
                "make_cli",
                "fill_data_facts",
                "condense_parse_error",
                "DATA_FACTS",
                "DEFAULT_RUNS_DIR",
                "DESCRIPTION",
                "model_given",
            )
        },
    },
)
