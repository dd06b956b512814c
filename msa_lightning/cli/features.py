"""`msa features extract`: the command over msa_lightning.corpus.extract."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command
from msa_lightning.corpus.extract import ASR_BACKENDS, FAMILIES
from msa_lightning.media.extractors import DEFAULT_AUDIO, DEFAULT_VISION


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "features",
        help="feature files from your own videos: msa features extract",
        description="Extract the field's audio, vision and text features of raw videos into a feature file.",
    )
    actions = p.add_subparsers(dest="action", required=True)
    e = add_command(
        actions,
        "extract",
        help="RAW/label.csv + RAW/Raw/<video_id>/<clip_id>.mp4 -> a feature file (FILE.pkl + FILE.manifest.json)",
    )
    e.add_argument("--raw", required=True, help="folder with label.csv and Raw/<video_id>/<clip_id>.<mp4|mov|...>")
    e.add_argument("--out", required=True, help="the feature file to write (.pkl); its manifest goes beside it")
    e.add_argument("--labels", help="label.csv elsewhere than RAW/label.csv")
    e.add_argument(
        "--audio",
        default=DEFAULT_AUDIO,
        help="librosa (33-d, default), opensmile (eGeMAPS 25-d; extra [opensmile]) or a Hugging Face speech model "
        "name or folder (HuBERT / wav2vec 2.0: last-layer frames)",
    )
    e.add_argument(
        "--vision",
        default=DEFAULT_VISION,
        help="dlib (built-in face box + 68 landmarks, 140-d, default) or openface:DIR (OpenFace 2.x CSVs "
        "DIR/<video_id>/<clip_id>.csv)",
    )
    e.add_argument(
        "--text", default="column", help="column (label.csv's text, default) or a transcripts TSV id<TAB>text"
    )
    e.add_argument("--asr", metavar="MODEL", help="transcribe the clips with this Whisper model instead")
    e.add_argument("--asr-backend", choices=ASR_BACKENDS, default="transformers", help="transformers or faster-whisper")
    e.add_argument("--language", help="the ASR decoding language (default: detected)")
    e.add_argument(
        "--asr-max-new-tokens", type=int, metavar="N", help="ASR: at most N tokens per clip (default: the model's)"
    )
    e.add_argument("--tokenizer", default="bert-base-uncased", help="BERT tokenizer of text_bert (bert-base-uncased)")
    e.add_argument("--text-max-length", type=int, default=50, help="tokens per text (50)")
    e.add_argument("--f0", choices=("pyin", "zcr"), default="pyin", help="librosa pitch column: pyin log F0 or zcr")
    e.add_argument("--sample-rate", type=int, default=22050, help="librosa: audio resampled to this rate (22050)")
    e.add_argument("--hop-length", type=int, default=512, help="librosa: samples between frames (512)")
    e.add_argument("--fps", type=float, default=10.0, help="dlib: frames per second analysed (10)")
    e.add_argument("--max-side", type=int, default=480, help="dlib: frames scaled to at most this many pixels (480)")
    e.add_argument("--audio-frames", type=int, help="pad or cut audio to this many frames (default: the longest clip)")
    e.add_argument("--vision-frames", type=int, help="pad or cut vision to this many frames (default: the longest)")
    e.add_argument(
        "--align",
        choices=("words",),
        help="words: audio and vision averaged per word and laid on the tokens (aligned_50 layout); the word "
        "timings come from --alignment or, with --asr, from Whisper's word timestamps",
    )
    e.add_argument("--alignment", metavar="FILE", help="word timings: id<TAB>word<TAB>start<TAB>end (seconds)")
    e.add_argument("--workers", type=int, default=1, help="extraction processes (1)")
    e.add_argument(
        "--max-bad-share", type=float, default=0.05, help="fail when more than this share of clips is unusable (0.05)"
    )
    e.add_argument("--label-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="default: from label.csv")
    e.add_argument("--metric-family", choices=FAMILIES, help="metrics of the file (default: by the label range)")
    e.add_argument("--cache-dir", help="the store (default $MSA_CACHE_DIR or ~/.cache/msa_lightning)")


def run(args: argparse.Namespace) -> int:
    from msa_lightning.corpus.extract import ExtractOptions, asr_settings, extract_features
    from msa_lightning.media.extractors import audio_settings, vision_settings

    options = ExtractOptions(
        audio=audio_settings(args.audio, args.f0, args.sample_rate, args.hop_length),
        vision=vision_settings(args.vision, args.fps, args.max_side),
        text=args.text,
        asr=asr_settings(args.asr, args.asr_backend, args.language, args.asr_max_new_tokens, args.align == "words")
        if args.asr
        else None,
        tokenizer=args.tokenizer,
        text_max_length=args.text_max_length,
        audio_frames=args.audio_frames,
        vision_frames=args.vision_frames,
        workers=args.workers,
        max_bad_share=args.max_bad_share,
        label_range=tuple(args.label_range) if args.label_range else None,
        metric_family=args.metric_family,
        align=args.align,
        alignment=args.alignment,
    )
    extract_features(args.raw, args.out, options, args.labels, args.cache_dir)
    return 0
