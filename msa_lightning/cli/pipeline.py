"""`msa pipeline PIPELINE.yaml`: the command over msa_lightning.experiments.pipeline."""

from __future__ import annotations

from typing import Any

from msa_lightning.experiments.pipeline import run_pipeline


def add_parser(sub) -> None:
    p = sub.add_parser("pipeline", help="run the stages of a pipeline file (each an ordinary `msa fit`)")
    p.add_argument("file", help="pipeline YAML (name, out, stages: [{name, args, needs, export, test}])")
    p.add_argument("--only", metavar="NAME", help="run this stage only (its needs must have finished)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved commands, run nothing")
    p.add_argument("--force", action="store_true", help="re-run stages even when they are up to date")


def main(args: Any) -> int:
    run_pipeline(args.file, only=args.only, dry_run=args.dry_run, force=args.force)
    return 0
