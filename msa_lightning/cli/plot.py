"""``msa plot hybrid-shift``: the command over :mod:`msa_lightning.papers.hybrid_shift.plots`."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command
from msa_lightning.data.specs import SPLITS


def _datamodule_from_config(config: str, overrides: dict, cli_args: list[str]):
    """The datamodule of ``config`` as ``msa fit --config config`` builds it (the CLI's own parser, links
    and defaults), with ``overrides`` (``data.init_args`` values) and raw ``--data.*``/``--model.*`` args."""
    from msa_lightning.experiments.lightning_cli import make_cli

    args = [
        "--config",
        config,
        *(f"--data.init_args.{k}={v}" for k, v in overrides.items() if v is not None),
        *cli_args,
    ]
    return make_cli(args, run=False).datamodule


def add_parser(subparsers) -> None:
    what = add_command(subparsers, "plot", help="paper analyses (see `msa plot hybrid-shift --help`)")
    analyses = what.add_subparsers(dest="what", required=True)
    p = add_command(
        analyses,
        "hybrid-shift",
        help="Fig. 7 and Fig. 8 of Lin & Hu (TMM 2024) for a trained HybridShiftModule",
        description="Fig. 7 (representations with/without MSG) and Fig. 8 (MBA p_att) "
        "of Lin & Hu (TMM 2024) for a trained HybridShiftModule",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint of a HybridShiftModule")
    p.add_argument(
        "--config",
        help="config whose `data` section builds the datamodule (e.g. configs/hybrid_shift/mosi_bert.yaml); "
        "further --data.*/--model.* arguments go to the msa command's parser with it",
    )
    p.add_argument("--data-path", help="feature file or folder (overrides the config's data.path)")
    p.add_argument("--dataset", default=None, help="mosi or mosei (without --config)")
    p.add_argument("--data-tokenizer", default=None, help="re-tokenise raw_text with this tokenizer (XLNet models)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--split", default="test", choices=list(SPLITS))
    p.add_argument("--out", default="plots/hybrid_shift", help="output folder for the PNGs")
    p.add_argument(
        "--utterances",
        nargs="*",
        default=None,
        help="ids for the p_att maps (default: most positive, neutral, negative)",
    )
    p.add_argument("--method", default="tsne", choices=["tsne", "pca"])
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--iters", type=int, default=500, help="t-SNE iterations")
    p.add_argument("--max-samples", type=int, default=None, help="stop after this many utterances")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tokenizer", default=None, help="tokenizer for the heatmap axis labels")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    cli_args = args.config_args  # --data.*/--model.*/--trainer.* for the config's parser
    if cli_args and not (
        args.config
        and all(a.startswith(("--data.", "--model.", "--trainer.")) or not a.startswith("--") for a in cli_args)
    ):
        args.parser.error(f"unrecognized arguments: {' '.join(cli_args)} (config overrides need --config)")
    from msa_lightning.papers.hybrid_shift.module import HybridShiftModule
    from msa_lightning.papers.hybrid_shift.plots import plot_hybrid_shift

    module = HybridShiftModule.load_from_checkpoint(args.ckpt, map_location=args.device).to(args.device)
    overrides = {
        "path": args.data_path,
        "tokenizer": args.data_tokenizer,
        "cache_dir": args.cache_dir,
        "batch_size": args.batch_size,
        "eval_batch_size": args.batch_size,
        "num_workers": 0,
    }
    if args.config:
        datamodule = _datamodule_from_config(args.config, overrides, cli_args)
    else:
        if not args.data_path:
            args.parser.error("give --config or --data-path")
        from msa_lightning.data import MSADataModule

        datamodule = MSADataModule(
            dataset=args.dataset or "mosi", aligned=True, **{k: v for k, v in overrides.items() if v is not None}
        )
    paths = plot_hybrid_shift(
        module,
        datamodule,
        args.out,
        args.split,
        args.utterances,
        args.method,
        args.max_samples,
        args.tokenizer,
        args.perplexity,
        args.iters,
        args.seed,
    )
    for path in paths:
        print(path)
    return 0
