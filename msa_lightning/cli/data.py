"""``msa data {synth,convert,inspect,wer}``: feature-file tools (``wer``: :mod:`msa_lightning.cli.wer`)."""

from __future__ import annotations

import argparse

from msa_lightning.cli import wer
from msa_lightning.cli.parsing import add_command
from msa_lightning.data.specs import DATASETS


def add_parser(subparsers) -> None:
    actions = add_command(subparsers, "data", help="feature-file tools").add_subparsers(dest="action", required=True)
    s = add_command(actions, "synth", help="write a synthetic feature file in the field's schema")
    s.add_argument("--dataset", default="mosi", choices=sorted(DATASETS))
    s.add_argument("--out", required=True)
    s.add_argument("--size-factor", type=float, default=0.1, help="fraction of the real split sizes")
    s.add_argument("--aligned", action="store_true", help="word-aligned layout (all modalities at text length)")
    s.add_argument("--bimodal-labels", action="store_true", help="also write regression_labels_AV/_AT/_VT")
    s.add_argument("--seed", type=int, default=0)
    c = add_command(actions, "convert", help="validate a feature pickle and build its memory-mapped cache")
    c.add_argument("file")
    c.add_argument("--dataset", choices=[*sorted(DATASETS), "custom"])
    c.add_argument("--cache-dir")
    i = add_command(actions, "inspect", help="shapes, lengths, NaN/inf counts and label histograms of a feature file")
    i.add_argument("file")
    i.add_argument(
        "--dataset",
        choices=[*sorted(DATASETS), "custom"],
        help="label range and metric family (default: custom when FILE has a manifest of `msa features extract`)",
    )
    wer.add_parser(actions)


def run(args: argparse.Namespace) -> int:
    if args.action == "synth":
        from msa_lightning.data.synthetic import make_synthetic

        out = make_synthetic(args.dataset, args.out, args.size_factor, args.aligned, args.seed, args.bimodal_labels)
        print(f"wrote {out}")
    elif args.action == "convert":
        from msa_lightning.data.cache import ensure_cache
        from msa_lightning.data.custom import spec_for

        print(ensure_cache(args.file, spec_for(args.dataset, args.file), args.cache_dir))
    elif args.action == "inspect":
        from msa_lightning.data.file_report import inspect_file

        print(inspect_file(args.file, args.dataset))
    else:
        return wer.run(args)
    return 0
