"""``msa data wer``: word error rates of ASR transcripts against the gold ones
(:func:`msa_lightning.data.transcripts.compare_transcript_files`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from msa_lightning.cli.parsing import add_command
from msa_lightning.data.lexicon import DEFAULT_LEXICON
from msa_lightning.data.specs import SPLITS


def add_parser(actions) -> None:
    """``wer`` under ``msa data``."""
    p = add_command(
        actions,
        "wer",
        help="word error rate and sentiment-word substitutions of ASR transcripts",
        description="Corpus WER of ASR transcripts against gold, and the share of utterances where a gold "
        "sentiment word is substituted (SWRM, Wu et al. 2022).",
    )
    p.add_argument(
        "sources",
        nargs="*",
        help="transcript files `id<TAB>text`, optionally NAME=PATH "
        "(default: every *.tsv in --dir except the gold file)",
    )
    p.add_argument("--dir", help="folder with transcript files (e.g. .../mosi/asr)")
    p.add_argument(
        "--gold", help="gold transcripts: a .tsv, or a labels.csv with video_id/clip_id/text (default: DIR/gold.tsv)"
    )
    p.add_argument("--labels", help="labels.csv with a `mode` column, to restrict to --split")
    p.add_argument("--split", choices=list(SPLITS), help="only the utterances of this split")
    p.add_argument(
        "--lexicon", default=DEFAULT_LEXICON, help="'vader' or word-list/MPQA files, comma-separated (default: vader)"
    )
    p.add_argument("--min-valence", type=float, default=0.0, help="VADER: keep words with |valence| above this")
    p.add_argument(
        "--strip-apostrophes",
        action="store_true",
        help="remove apostrophes before comparing (DON'T = DONT); default keeps them, as the paper",
    )


def _source(item: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named by its stem)."""
    if "=" in item:
        name, path = item.split("=", 1)
        return name, Path(path)
    return Path(item).stem, Path(item)


def run(args: argparse.Namespace) -> int:
    from msa_lightning.data.transcripts import compare_transcript_files, sources_in_folder

    folder = Path(args.dir).expanduser() if args.dir else None
    gold = Path(args.gold).expanduser() if args.gold else (folder / "gold.tsv" if folder else None)
    if gold is None:
        args.parser.error("give --gold or --dir")
    sources = [_source(s) for s in args.sources]
    if not sources:
        if folder is None:
            args.parser.error("give transcript files or --dir")
        sources = sources_in_folder(folder, gold)
    if args.split and not args.labels and gold.suffix.lower() != ".csv":
        args.parser.error("--split needs --labels (or a labels.csv as --gold)")
    comparison = compare_transcript_files(
        gold,
        sources,
        labels=args.labels,
        split=args.split,
        lexicon=args.lexicon,
        min_valence=args.min_valence,
        strip_apostrophes=args.strip_apostrophes,
    )
    print(comparison.table())
    return 0
