"""``msa pipeline PIPELINE.yaml``: the command over :mod:`msa_lightning.experiments.pipeline`."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "pipeline", help="run the stages of a pipeline file (each an ordinary `msa fit`)")
    p.add_argument("file", help="pipeline YAML (name, out, stages: [{name, args, needs, export, test}])")
    p.add_argument("--only", metavar="NAME", help="run this stage only (its needs must have finished)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved commands, run nothing")
    p.add_argument("--force", action="store_true", help="re-run stages even when they are up to date")


def run(args: argparse.Namespace) -> int:
    from msa_lightning.experiments.pipeline import pipeline_plan, run_pipeline

    if args.dry_run:
        print("\n".join(pipeline_plan(args.file, only=args.only)))
    else:
        run_pipeline(args.file, only=args.only, force=args.force)
    return 0
