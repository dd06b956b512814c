"""``msa quickstart``: synthetic MOSI -> fit -> test -> metric table
(:func:`msa_lightning.experiments.seeds.quickstart`)."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "quickstart", help="synthetic MOSI -> fit -> test -> metric table")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--model", default="TFNModule")


def run(args: argparse.Namespace) -> int:
    from msa_lightning.experiments.seeds import quickstart

    result = quickstart(args.out, epochs=args.epochs, model=args.model)
    print(
        "\nTest metrics on synthetic MOSI (acc2_has0: neg vs non-neg, all samples; acc2_non0: neg vs pos, zeros "
        "excluded)\n"
    )
    print(result.table())
    return 0
