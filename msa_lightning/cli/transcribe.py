"""``msa transcribe``: the command over :mod:`msa_lightning.corpus.transcribe`."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command
from msa_lightning.corpus.transcribe import DTYPES, transcribe


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers,
        "transcribe",
        help="ASR transcripts (id<TAB>text) of audio clips with a Whisper-family model",
        description="Transcribe every audio file under --audio with a Hugging Face speech-to-text model (the "
        "Whisper family) and append `id<TAB>text` lines to --out (id: the path under --audio without "
        "its suffix). Resumable: ids already in --out are skipped. Clips that cannot be read are "
        "listed in OUT.errors.tsv.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="hub name (e.g. openai/whisper-small, from the local Hugging Face cache) or a local folder; "
        "tiny-whisper: a random in-process model for tests",
    )
    p.add_argument("--audio", required=True, help="folder with the clips (wav, flac, m4a, mp3, ogg; any depth)")
    p.add_argument("--out", required=True, help="transcript file to append to, `id<TAB>text` (e.g. asr.tsv)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per generate call (default 16)")
    p.add_argument(
        "--language",
        default="en",
        help="language of the speech (Whisper code or name, default en); 'auto': let the model detect it",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="model weights and inputs (default float32; bfloat16 on recent GPUs)",
    )
    p.add_argument("--max-new-tokens", type=int, help="tokens per 30 s window (default: the model's limit)")
    p.add_argument("--ids", help="only these clip ids (a file, one id per line)")
    p.add_argument("--workers", type=int, default=4, help="threads decoding audio (default 4)")
    p.add_argument(
        "--detect-language",
        action="store_true",
        help="also write OUT.language.tsv (id, most likely language, its probability; from the clip's first "
        "30 s) to screen out non-English clips as the paper did; costs one more encoder pass",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # generate's advice on attention masks and max_length is noise here
    hf_logging.disable_progress_bar()  # ("Loading weights"): ours counts clips
    language = None if args.language.lower() in ("auto", "none", "") else args.language
    tally = transcribe(
        args.model,
        args.audio,
        args.out,
        args.batch_size,
        language,
        args.device,
        args.dtype,
        args.max_new_tokens,
        args.ids,
        args.workers,
        progress=not args.no_progress,
        detect_language=args.detect_language,
    )
    print(tally.summary())
    return 0
