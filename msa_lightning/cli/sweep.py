"""`msa sweep SWEEP.yaml --count N --out DIR [--workers K] [-- overrides]`: the command over
msa_lightning.experiments.sweep (W&B's sweep engine, run locally and offline)."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "sweep",
        help="run a W&B sweep YAML locally and offline (W&B's engine: grid, random, bayes, hyperband)",
        description="Each trial is an `msa fit` with the sweep's parameters and the overrides after --, in "
        "DIR/trial-NNNN; a second call on the same DIR continues the sweep (interrupted trials resume). "
        "The ranked table and plot are written at the end; `msa report DIR` writes them again.",
    )
    p.add_argument("file", help="a W&B sweep definition (program: msa, method, metric, parameters, command)")
    p.add_argument("--count", type=int, required=True, help="trials to run in this call (resumed ones included)")
    p.add_argument("--out", required=True, help="the sweep's folder: sweep.json (state), trial-NNNN/, report.md")
    p.add_argument(
        "--workers", type=int, default=1, help="trials at once, each with its share of CPU threads or one GPU"
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="msa fit overrides for every trial, e.g. --data.path=X (after --)"
    )


def run(args: argparse.Namespace) -> int:
    from msa_lightning.experiments.sweep import run_sweep

    overrides = [o for o in args.overrides if o != "--"]
    print(run_sweep(args.file, args.count, args.out, overrides, workers=args.workers))
    return 0
