"""``msa pretrain-data {synth,build,inspect}``: the command over :mod:`msa_lightning.corpus.shards`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from msa_lightning.cli.parsing import add_command
from msa_lightning.corpus.format import MANIFEST
from msa_lightning.corpus.shards import DEFAULT_START, START_METHODS, BuildOptions, build, inspect, synth


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers,
        "pretrain-data",
        help="SKESL pretraining shards from an unlabeled video corpus",
        description="Build, inspect or synthesise SKESL's unlabeled pretraining corpus as litdata "
        "shards (Qian et al., Findings of ACL 2023, Section 4.2).",
    )
    actions = p.add_subparsers(dest="action", required=True)
    b = add_command(actions, "build", help="join transcripts, audio and OpenFace outputs by clip id; write shards")
    b.add_argument("--transcripts", required=True, help="id<TAB>text file (VoxCeleb ids: idNNNNN/<video>/<clip>)")
    b.add_argument("--audio", required=True, help="folder of audio files (wav/flac/m4a/...) or [T, 33] .npy")
    b.add_argument("--visual", required=True, help="folder of OpenFace 2.x CSVs or [T, 709] .npy")
    b.add_argument("--out", required=True, help="output folder (manifest.json, train/, valid/)")
    b.add_argument("--workers", type=int, default=1, help="feature extraction processes (default 1)")
    b.add_argument("--audio-frames", type=int, default=400, help="cut audio to this many frames (authors: 400)")
    b.add_argument("--vision-frames", type=int, default=55, help="cut vision to this many frames (authors: 55)")
    b.add_argument("--sample-rate", type=int, default=22050, help="audio resampled to this rate (authors: 22050)")
    b.add_argument("--hop-length", type=int, default=512, help="samples between audio frames (authors: 512)")
    b.add_argument(
        "--f0",
        choices=("pyin", "zcr"),
        default="pyin",
        help="pitch column: pyin = log F0 (paper 4.2, default), zcr = zero-crossing rate (released code)",
    )
    b.add_argument("--valid-share", type=float, default=0.02, help="share of clips held out, by id hash (0.02)")
    b.add_argument(
        "--max-bad-share", type=float, default=0.05, help="fail when more than this share of clips is unusable (0.05)"
    )
    b.add_argument("--clips-per-part", type=int, default=100, help="clips per resumable unit of work (100)")
    b.add_argument("--chunk-bytes", default="64MB", help="litdata chunk size (64MB)")
    b.add_argument(
        "--shard-workers",
        type=int,
        default=0,
        help="0: one writer process forked from the build (default); N: litdata.optimize with N workers "
        "started by --start-method",
    )
    b.add_argument(
        "--start-method",
        choices=START_METHODS,
        default=DEFAULT_START,
        help=f"how worker processes start ({DEFAULT_START}; spawn re-imports the suite in each worker)",
    )
    b.add_argument("--keep-parts", action="store_true", help="keep OUT/parts after a finished build")
    b.add_argument(
        "--force",
        action="store_true",
        help="rebuild even an up-to-date OUT, or one whose shards came from other inputs or settings",
    )
    s = add_command(actions, "synth", help="write a synthetic corpus in the on-disk layout")
    s.add_argument("out")
    s.add_argument("--clips", type=int, default=12)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sample-rate", type=int, default=22050)
    s.add_argument("--with-bad", action="store_true", help="add one unusable clip of each kind")
    s.add_argument("--force", action="store_true", help="write into a folder that holds a corpus already")
    i = add_command(actions, "inspect", help="a built OUT's summary: counts, left-out clips by reason, sizes")
    i.add_argument("out")
    i.add_argument("--show", type=int, default=10, help="ids shown per reason (10)")


def run(args: argparse.Namespace) -> int:
    if args.action == "build":
        options = BuildOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BuildOptions)})
        result = build(options)
        if result.rebuilt:
            print(result.manifest["summary"])
            print(f"manifest: {result.out / MANIFEST}")
        else:
            print(f"{result.out}: up to date (same inputs and settings; {result.manifest['summary']}); nothing rebuilt")
    elif args.action == "synth":
        out = Path(args.out).expanduser()
        bad = synth(out, args.clips, args.seed, args.sample_rate, args.with_bad, args.force)
        kinds = f" and {len(bad)} unusable ones, one of each kind: {', '.join(sorted(bad.values()))}" if bad else ""
        print(f"{out}: {args.clips} synthetic clips (transcripts.tsv, audio/*.wav, openface/*.csv){kinds}")
        share = 0.2 if args.clips < 250 else 0.02  # a tiny corpus needs a larger share to get a valid split at all
        bad_share = min(1.0, round(len(bad) / (args.clips + len(bad)) + 0.05, 2))
        print(
            f"next:\n  msa pretrain-data build --transcripts {out}/transcripts.tsv --audio {out}/audio "
            f"--visual {out}/openface --out {out}_shards --valid-share {share:g}"
            + (f" --max-bad-share {bad_share:g}" if bad else "")
        )
    else:
        print(inspect(args.out, args.show))
    return 0
