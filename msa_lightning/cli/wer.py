"""`msa data wer`: word error rates of ASR transcripts against the gold ones (msa_lightning.data.transcripts)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from msa_lightning.data.lexicon import DEFAULT_LEXICON, load_lexicon
from msa_lightning.data.specs import SPLITS
from msa_lightning.data.transcripts import (
    ASR_SOURCES,
    TranscriptError,
    compare_transcripts,
    format_reports,
    read_labels_csv,
    read_text_source,
    read_transcripts,
)
from msa_lightning.errors import DataError


def _parse_source(item: str) -> tuple[str, Path]:
    if "=" in item:
        name, path = item.split("=", 1)
        return name, Path(path)
    return Path(item).stem, Path(item)


def wer_main(argv: Sequence[str] | None = None) -> int:
    """``msa data wer``: WER and sentiment-word substitution share of transcript files against gold."""
    from msa_lightning.cli.parsing import MSAParser

    p = MSAParser(
        prog="msa data wer",
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
    argv = list(argv or [])
    args = p.parse_args(argv[1:] if argv[:1] == ["--"] else argv)

    folder = Path(args.dir).expanduser() if args.dir else None
    gold_path = Path(args.gold).expanduser() if args.gold else (folder / "gold.tsv" if folder else None)
    if gold_path is None:
        p.error("give --gold or --dir")
    sources = [_parse_source(s) for s in args.sources]
    if not sources:
        if folder is None:
            p.error("give transcript files or --dir")
        sources = [(f.stem, f) for f in sorted(folder.glob("*.tsv")) if f.resolve() != gold_path.resolve()]
        order = {name: i for i, name in enumerate(ASR_SOURCES)}
        sources.sort(key=lambda s: (order.get(s[0], len(order)), s[0]))
    if args.split and not args.labels and not str(gold_path).endswith(".csv"):
        p.error("--split needs --labels (or a labels.csv as --gold)")
    try:
        gold = read_text_source(gold_path)
        if args.split:
            keep = read_labels_csv(args.labels or gold_path, args.split)
            gold = {k: v for k, v in gold.items() if k in keep}
        lexicon = load_lexicon(args.lexicon, args.min_valence)
        reports = [
            compare_transcripts(gold, read_transcripts(path), lexicon, name, args.strip_apostrophes)
            for name, path in sources
        ]
    except TranscriptError:
        raise  # the msa command prints it as one `msa: error:` line
    except (FileNotFoundError, ValueError) as err:  # a lexicon file that is missing or empty
        raise DataError(str(err)) from None
    print(f"gold: {gold_path} ({len(gold)} utterances{', split ' + args.split if args.split else ''})")
    print(format_reports(reports, lexicon))
    return 0
