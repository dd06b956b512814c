"""``msa pipeline PIPELINE.yaml``: the command over :mod:`msa_lightning.experiments.pipeline`."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers,
        "pipeline",
        help="run the stages of a pipeline file (each an ordinary `msa fit` or `msa features extract`); their "
        "feature sizes are checked first",
    )
    p.add_argument(
        "file",
        help="pipeline YAML (name, out, stacking, folds, stages: [{name, args, needs, export, test, command}])",
    )
    p.add_argument("--only", metavar="NAME", help="run this stage only (its needs must have finished)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved commands, run nothing")
    p.add_argument("--force", action="store_true", help="re-run stages even when they are up to date")
    p.add_argument(
        "--set",
        dest="settings",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a setting for every stage that has the key, e.g. --set data.init_args.path=/data/SIMS; STAGE:KEY=VALUE: "
        "that stage only; or of the file: --set stacking=kfold, folds, fold_seed (repeatable)",
    )
    p.add_argument("--out", help="output folder instead of the file's `out` (relative to the working folder)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="run the whole pipeline per seed into OUT/seed<N>/; per_seed.csv and summary.csv as `msa seeds` writes",
    )


def run(args: argparse.Namespace) -> int:
    from msa_lightning.experiments.pipeline import pipeline_plan, run_pipeline, run_pipeline_seeds

    if args.dry_run:
        print("\n".join(pipeline_plan(args.file, args.only, args.settings, args.out)))
        if args.seeds:
            print(f"(once per seed: {' '.join(map(str, args.seeds))}, each with --seed_everything=SEED)")
    elif args.seeds:
        tables = run_pipeline_seeds(args.file, args.seeds, args.only, args.force, args.settings, args.out)
        for name, folder in tables.items():
            print(f"{name} ({folder}):\n" + (folder / "summary.md").read_text(encoding="utf-8"))
    else:
        run_pipeline(args.file, args.only, args.force, args.settings, args.out)
    return 0
