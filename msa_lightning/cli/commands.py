"""The ``msa`` subcommands that are not LightningCLI's (``data``, ``seeds``, ``report``, ``quickstart``, ``plot``)."""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

import numpy as np

from msa_lightning.cli.parsing import MSAParser
from msa_lightning.data.specs import DATASETS
from msa_lightning.errors import MSAError
from msa_lightning.experiments.seeds import PAPER_SEEDS

#: subcommands whose LightningCLI overrides follow a `--`
OVERRIDE_COMMANDS = ("export", "seeds")

# Subcommands with a module of their own in this package: `add_parser(sub)` declares the arguments,
# `main(args)` runs the library function.
PLUGIN_COMMANDS = {
    "export": "msa_lightning.cli.export",
    "pipeline": "msa_lightning.cli.pipeline",
    "transcribe": "msa_lightning.cli.transcribe",
    "pretrain-data": "msa_lightning.cli.pretrain_data",
    "weights": "msa_lightning.cli.weights",
}


def inspect_file(path: str, dataset: str | None = None, bins: int = 7) -> str:
    """A text report of a feature file: shapes, lengths, non-finite counts, label histograms."""
    from msa_lightning.data.reader import read_feature_file, split_overlaps
    from msa_lightning.data.specs import get_spec

    spec = get_spec(dataset) if dataset else None
    reader_log = logging.getLogger("msa_lightning.data.reader")
    level = reader_log.level
    reader_log.setLevel(logging.ERROR)  # the counts are in the report; only for this read
    try:
        splits = read_feature_file(path, spec)
    finally:
        reader_log.setLevel(level)
    lines = [f"# {path}" + (f" ({spec.name})" if spec else "")]

    for pair, shared in split_overlaps(splits).items():  # a leak: evaluation on samples seen in training
        a, b = pair.split("/")
        lines.append(f"LEAK: {len(shared)} utterance ids appear in both {a!r} and {b!r} (e.g. {', '.join(shared[:5])})")
    for name, s in splits.items():
        lines.append(f"\n## {name}: {len(s)} samples")
        for key, arr in s.arrays().items():
            lines.append(f"  {key:16s} shape {tuple(arr.shape)} dtype {arr.dtype}")
        for key in ("audio", "vision"):
            ln = getattr(s, f"{key}_lengths")
            lines.append(
                f"  {key} lengths: min {ln.min()}, mean {ln.mean():.1f}, max {ln.max()} "
                f"(padded to {getattr(s, key).shape[1]})"
            )
        if s.text_bert is not None:
            tl = s.text_bert[:, 1].sum(1)
            lines.append(
                f"  text tokens: min {tl.min()}, mean {tl.mean():.1f}, max {tl.max()} (padded to "
                f"{s.text_bert.shape[2]})"
            )
        lines.append(
            "  non-finite values replaced by 0: " + (", ".join(f"{k}={v}" for k, v in s.nonfinite.items()) or "none")
        )
        for key, y in s.labels.items():
            lo, hi = spec.label_range if spec else (float(y.min()), float(y.max()))
            hist, edges = np.histogram(y, bins=bins, range=(lo, hi) if hi > lo else None)
            lines.append(
                f"  labels {key}: mean {y.mean():+.3f}, zeros {int((y == 0).sum())}, "
                f"neg {int((y < 0).sum())}, pos {int((y > 0).sum())}"
            )
            width = max(hist.max(), 1)
            for count, a, b in zip(hist, edges[:-1], edges[1:]):
                lines.append(f"    [{a:+.2f}, {b:+.2f}) {count:6d} " + "#" * int(round(40 * count / width)))
    return "\n".join(lines)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of the suite's subcommands; with ``command``, only that plugin module is imported
    (each one imports what it runs: ``msa data inspect`` never imports ``msa export``'s torch code)."""
    p = MSAParser(prog="msa", description="msa_lightning tools (fit/test/... are LightningCLI's)")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="feature-file tools").add_subparsers(dest="action", required=True)
    s = data.add_parser("synth", help="write a synthetic feature file in the field's schema")
    s.add_argument("--dataset", default="mosi", choices=sorted(DATASETS))
    s.add_argument("--out", required=True)
    s.add_argument("--size-factor", type=float, default=0.1, help="fraction of the real split sizes")
    s.add_argument("--aligned", action="store_true", help="word-aligned layout (all modalities at text length)")
    s.add_argument("--bimodal-labels", action="store_true", help="also write regression_labels_AV/_AT/_VT")
    s.add_argument("--seed", type=int, default=0)
    c = data.add_parser("convert", help="validate a feature pickle and build its memory-mapped cache")
    c.add_argument("file")
    c.add_argument("--dataset", choices=sorted(DATASETS))
    c.add_argument("--cache-dir")
    i = data.add_parser("inspect", help="shapes, lengths, NaN/inf counts and label histograms of a feature file")
    i.add_argument("file")
    i.add_argument("--dataset", choices=sorted(DATASETS))
    w = data.add_parser("wer", help="word error rate and sentiment-word substitutions of ASR transcripts")
    w.add_argument("rest", nargs=argparse.REMAINDER)

    seeds = sub.add_parser("seeds", help="fit + test a config over several seeds; mean/std tables")
    seeds.add_argument("--config", action="append", required=True, help="config file (repeatable)")
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(PAPER_SEEDS),
        help=f"seeds (default: the papers' {' '.join(map(str, PAPER_SEEDS))})",
    )
    seeds.add_argument(
        "--out",
        required=True,
        help="output folder: seed<N>/ (logs, checkpoints), per_seed.csv, summary.csv, summary.md",
    )
    seeds.add_argument("--name")
    seeds.add_argument(
        "--force",
        action="store_true",
        help="per_seed.csv in --out holds another config's seeds: move those tables aside, start afresh",
    )
    seeds.add_argument(
        "overrides", nargs="*", default=[], help="LightningCLI overrides, e.g. --trainer.max_epochs=3 (after --)"
    )

    rep = sub.add_parser("report", help="compare multi-seed runs; paired t-test; FmlMSN tables (Tables 7-8)")
    rep.add_argument("runs", nargs="+", help="folders written by `msa seeds` (or their summary.csv)")
    rep.add_argument(
        "--ttest",
        action="store_true",
        help="paired t-test over the seeds two folders share (their per_seed.csv): A B --ttest",
    )
    rep.add_argument(
        "--fmlmsn",
        action="store_true",
        help="per-stage unimodal/bimodal task metrics and M of FmlMSN `msa pipeline` output folders",
    )
    rep.add_argument(
        "--split",
        choices=["auto", "valid", "test"],
        default="auto",
        help="with --fmlmsn: test (an `msa test` of each best checkpoint logged in its stage folder), "
        "valid (the fit's validation at the best epoch), auto: test when every stage has it",
    )

    q = sub.add_parser("quickstart", help="synthetic MOSI -> fit -> test -> metric table")
    q.add_argument("--out", default="runs/quickstart")
    q.add_argument("--epochs", type=int, default=6)
    q.add_argument("--model", default="TFNModule")

    for name, module in PLUGIN_COMMANDS.items():  # each module declares its own arguments
        if command is None or command == name:
            importlib.import_module(module).add_parser(sub)

    pl = sub.add_parser("plot", help="paper analyses (see `msa plot hybrid-shift --help`)")
    pl.add_argument("what", choices=["hybrid-shift"])
    pl.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _split_at_double_dash(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``argv`` before the first ``--`` and the overrides after it (None without ``--``). argparse would
    give them to a positional ``overrides`` only if no other positional came first: ``msa export CKPT
    --outputs M -- --data.init_args.path=X`` must work wherever the checkpoint stands."""
    if "--" not in argv or not argv or argv[0] not in OVERRIDE_COMMANDS:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def run_extra(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if list(argv[:2]) == ["data", "wer"]:  # REMAINDER would reject its leading --options: wer_main parses them
        from msa_lightning.cli.wer import wer_main

        return wer_main(list(argv[2:]))
    argv, after = _split_at_double_dash(list(argv))
    args = _parser(argv[0] if argv else None).parse_args(argv)
    if after is not None:
        args.overrides = [*args.overrides, *after]
    if args.command == "data":
        if args.action == "synth":
            from msa_lightning.data.synthetic import make_synthetic

            out = make_synthetic(args.dataset, args.out, args.size_factor, args.aligned, args.seed, args.bimodal_labels)
            print(f"wrote {out}")
        elif args.action == "convert":
            from msa_lightning.data.cache import ensure_cache
            from msa_lightning.data.specs import get_spec

            print(ensure_cache(args.file, get_spec(args.dataset) if args.dataset else None, args.cache_dir))
        elif args.action == "inspect":
            print(inspect_file(args.file, args.dataset))
        elif args.action == "wer":
            from msa_lightning.cli.wer import wer_main

            return wer_main(args.rest)
    elif args.command == "seeds":
        from msa_lightning.experiments.seeds import run_seeds

        overrides = [o for o in args.overrides if o != "--"]
        run_seeds(args.config, args.seeds, args.out, overrides, args.name, args.force)
    elif args.command == "report":
        from msa_lightning.experiments.results import report, ttest_table
        from msa_lightning.papers.fmlmsn.report import fmlmsn_table

        if args.ttest:
            if len(args.runs) != 2:
                raise MSAError(
                    f"report --ttest compares two result folders, got {len(args.runs)}: {' '.join(args.runs)}"
                )
            print(ttest_table(*args.runs))
        elif args.fmlmsn:
            print("\n\n".join(fmlmsn_table(run, args.split) for run in args.runs))
        else:
            print(report(args.runs))
    elif args.command == "quickstart":
        from msa_lightning.experiments.seeds import quickstart

        quickstart(Path(args.out), epochs=args.epochs, model=args.model)
    elif args.command in PLUGIN_COMMANDS:
        return importlib.import_module(PLUGIN_COMMANDS[args.command]).main(args)
    elif args.command == "plot":
        from msa_lightning.cli.plot import main as plot_main

        return plot_main(args.rest)
    return 0
