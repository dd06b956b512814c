"""The ``msa`` command.

* ``msa fit|validate|test|predict --config CONFIG.yaml`` — LightningCLI; model and data are chosen by
  class name (``model.class_path: TFNModule``), every hyper-parameter is a typed ``__init__`` argument,
  ``--print_config`` shows the resolved config.
* ``msa data synth|convert|inspect|wer`` — feature-file tools.
* ``msa seeds --config C --seeds 1111 1112 ...`` — fit + test over seeds, mean/std table.
* ``msa report DIR`` — merge result tables of several runs.
* ``msa quickstart`` — synthetic MOSI -> fit -> test -> metric table, in about a minute on a CPU.
"""
from __future__ import annotations

import os
import sys

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from msa_lightning.data.datamodule import MSADataModule
from msa_lightning.models import registry  # noqa: F401  (imports every model so names resolve)
from msa_lightning.models.base import MSARegressionModule

EXTRA_COMMANDS = ("data", "seeds", "report", "quickstart", "plot")


def _wandb_never_prompts() -> None:
    """W&B asks for a login on a terminal when no key is configured; default to offline instead."""
    if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
        netrc = os.path.expanduser("~/.netrc")
        if not (os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read()):
            os.environ["WANDB_MODE"] = "offline"


class MSACLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/mae", "checkpoint.mode": "min", "checkpoint.save_last": True,
            "checkpoint.filename": "best-{epoch:02d}", "checkpoint.auto_insert_metric_name": False,
            "trainer.logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": "runs", "name": "msa"}},
        })


def make_cli(args: list[str] | None = None, run: bool = True, **kwargs) -> MSACLI:
    """Build the CLI from ``args`` (a list like the command line) or from ``sys.argv``."""
    _wandb_never_prompts()
    if args is not None:  # parse only `args`, not the command line of the calling program
        sys.argv = sys.argv[:1]
    return MSACLI(
        MSARegressionModule, MSADataModule, subclass_mode_model=True, subclass_mode_data=True,
        seed_everything_default=1111, args=args, run=run, save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False, **kwargs,
    )


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in EXTRA_COMMANDS:
        from msa_lightning.tools.commands import run_extra

        sys.exit(run_extra(args))
    # from the command line, LightningCLI must read sys.argv itself: DDP re-launches this script
    # on the other ranks with the same sys.argv
    make_cli(argv)


if __name__ == "__main__":
    main()
