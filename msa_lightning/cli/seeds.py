"""``msa seeds --config C [--seeds ...] --out DIR [-- overrides]``: fit + test over seeds
(:func:`msa_lightning.experiments.seeds.run_seeds`), then the mean ± std table."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command
from msa_lightning.experiments.seeds import PAPER_SEEDS, SeedsFailed, run_seeds


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "seeds", help="fit + test a config over several seeds; mean/std tables")
    p.add_argument("--config", action="append", required=True, help="config file (repeatable)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(PAPER_SEEDS),
        help=f"seeds (default: the papers' {' '.join(map(str, PAPER_SEEDS))})",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder: seed<N>/ (logs, checkpoints), per_seed.csv, summary.csv, summary.md",
    )
    p.add_argument("--name")
    p.add_argument(
        "--force",
        action="store_true",
        help="per_seed.csv in --out holds another config's seeds: move those tables aside, start afresh",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="LightningCLI overrides, e.g. --trainer.max_epochs=3 (after --)"
    )


def run(args: argparse.Namespace) -> int:
    overrides = [o for o in args.overrides if o != "--"]
    try:
        result = run_seeds(args.config, args.seeds, args.out, overrides, args.name, args.force)
    except SeedsFailed as failure:  # the seeds that finished are in the table, shown above the error
        if failure.table:
            print(failure.table)
        raise
    if result.table:
        print(result.table)
    return 0
