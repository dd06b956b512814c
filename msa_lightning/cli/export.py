"""``msa export CHECKPOINT --outputs M ... [-- overrides]``: the command over
:mod:`msa_lightning.experiments.export`."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command
from msa_lightning.data.folds import HELDOUT
from msa_lightning.data.specs import SPLITS


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "export", help="write model outputs per split into the store (from a checkpoint)")
    p.add_argument("checkpoint", help="a .ckpt file, or a run folder (its best checkpoint; RUN/last for the last)")
    p.add_argument(
        "--config", action="append", default=[], help="config file(s) (default: the run's saved config.yaml)"
    )
    p.add_argument("--outputs", nargs="+", default=["M"], help="names from MSAOutput.flat(), e.g. M features.M")
    p.add_argument(
        "--splits",
        nargs="+",
        default=list(SPLITS),
        choices=[*SPLITS, HELDOUT],
        help=f"default: {' '.join(SPLITS)}; {HELDOUT}: the held-out fold of a K-fold stacking run (FmlMSN)",
    )
    p.add_argument("--store", help="store root (default: the data's cache_dir, else $MSA_CACHE_DIR)")
    p.add_argument(
        "overrides", nargs="*", default=[], help="CLI overrides such as --data.init_args.path=... (after --)"
    )


def run(args: argparse.Namespace) -> int:
    from msa_lightning.experiments.export import export_command

    overrides = [o for o in args.overrides if o != "--"]
    cli_args = [a for c in args.config for a in ("--config", c)]
    export_command(args.checkpoint, cli_args, args.outputs, args.splits, args.store, overrides)
    return 0
