"""`msa infer VIDEO... --ckpt RUN`: the command over msa_lightning.experiments.infer."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "infer",
        help="score new videos with a trained model (features extracted, or clips decoded, as in its training)",
        description="Extract new videos' features exactly as the checkpoint's training file was extracted (or, "
        "for a model trained on raw clips such as TwoStepMSA, decode them as its DataModule decoded its clips), "
        "score them, print a table and write a CSV.",
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, mov, mkv, avi, webm)")
    p.add_argument("--ckpt", required=True, help="a checkpoint file or a run folder (its best checkpoint)")
    p.add_argument("--out", help="the CSV to write (default infer.csv): clip, score, class, text")
    p.add_argument("--transcripts", help="a TSV id<TAB>text, ids the video file stems")
    p.add_argument("--asr", metavar="MODEL", help="transcribe the videos with this Whisper model")
    p.add_argument("--openface", metavar="DIR", help="the videos' OpenFace CSVs (DIR/<stem>.csv), for OpenFace models")
    p.add_argument("--cache-dir", help="the store (default $MSA_CACHE_DIR or ~/.cache/msa_lightning)")


def run(args: argparse.Namespace) -> int:
    from msa_lightning.experiments.infer import infer

    infer(args.videos, args.ckpt, args.out, args.transcripts, args.asr, args.openface, args.cache_dir)
    return 0
