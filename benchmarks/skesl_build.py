"""SKESL shard build benchmark: feature extraction clips/s with 1 and 2 worker processes,
and shard writing time and disk size per 1,000 clips.

Run ``python benchmarks/skesl_build.py --help``. Prints Markdown tables; nothing is asserted.

The pieces are those ``msa pretrain-data build`` runs (:mod:`msa_lightning.corpus.shards`), called in
this process so each phase is timed alone:

1. **Corpus**: ``make_synthetic_corpus`` with ``--clips`` clips of ``--seconds`` (default 4-12 s, about
   VoxCeleb's 8 s average; generated tones with noise at 22,050 Hz; OpenFace-format CSVs at 25 fps).
2. **Extraction**: the clips in parts of ``--clips-per-part``, through ``_extract_parts`` (librosa features +
   OpenFace CSV parsing, each part written as an ``.npz``) with 1 worker (in this process) and 2 worker
   processes (``forkserver``, the command's default), ``--f0 zcr``; then ``--f0 pyin`` (the paper's log F0,
   much slower) on ``--pyin-clips`` clips with 1 worker. clips/s includes the pool's start-up (measured alone
   too, for spawn and forkserver: a spawned worker re-imports the ``msa`` command, torch and the suite).
   Audio-seconds/s lets you rescale to your clips' lengths.
3. **Shards**: the extracted parts replicated to 1,000 clips (new ids, same arrays: frames cut to 400 audio /
   55 visual as the authors), written as train/valid litdata shards (valid share 0.02) with litdata's writer in
   this process (``--shard-workers 0``, the default) and with ``litdata.optimize`` and 1 / 2 workers. Measured
   at 1,000 clips directly, not scaled.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measure import load_average  # noqa: E402


def _tasks(root: Path, parts: Path, clips: list[str], per_part: int, features: dict) -> list:
    from msa_lightning.corpus.shards import part_key
    from msa_lightning.data.transcripts import read_transcripts

    texts = read_transcripts(root / "transcripts.tsv")
    tasks = []
    for n, start in enumerate(range(0, len(clips), per_part)):
        chunk = [
            (c, texts[c], str(root / "audio" / f"{c}.wav"), str(root / "openface" / f"{c}.csv"))
            for c in clips[start : start + per_part]
        ]
        tasks.append((str(parts / f"part-{n:06d}-{part_key(chunk, features)[:16]}.npz"), chunk, features))
    return tasks


def _extract(tasks: list, workers: int, parts: Path) -> float:
    from msa_lightning.corpus.shards import _extract_parts

    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    start = time.perf_counter()
    _extract_parts(tasks, sum(len(t[1]) for t in tasks), 0, workers)
    return time.perf_counter() - start


def _pool_startup(method: str, folder: Path) -> float:
    """Seconds from creating a pool of 2 to both workers having run an empty part, cold (a fresh process)."""
    code = (
        "import sys, time; from msa_lightning.corpus.shards import _extract_parts\n"
        "tasks = [(sys.argv[2] + f'/p{i}.npz', [], {}) for i in range(2)]\n"
        "start = time.perf_counter(); _extract_parts(tasks, 0, 0, 2, sys.argv[1])\n"
        "print(time.perf_counter() - start)"
    )
    folder.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([sys.executable, "-c", code, method, str(folder)], capture_output=True, text=True, cwd=REPO)
    return float(run.stdout.strip().splitlines()[-1])


def _replicate(parts: list[Path], target: int, folder: Path) -> list[str]:
    """Part files holding ``target`` clips: copies of ``parts`` with fresh ids."""
    folder.mkdir(parents=True, exist_ok=True)
    out, n, copy = [], 0, 0
    while n < target:
        for path in parts:
            with np.load(path) as part:
                arrays = {k: part[k] for k in part.files}
            take = min(len(arrays["ids"]), target - n)
            if take <= 0:
                break
            a_end, v_end = np.cumsum(arrays["audio_lengths"]), np.cumsum(arrays["vision_lengths"])
            arrays["ids"] = np.array([f"{c}#{copy}" for c in arrays["ids"][:take]])
            arrays["texts"] = arrays["texts"][:take]
            arrays["audio"] = arrays["audio"][: a_end[take - 1]]
            arrays["vision"] = arrays["vision"][: v_end[take - 1]]
            for key in ("audio_lengths", "vision_lengths"):
                arrays[key] = arrays[key][:take]
            file = folder / f"part-{len(out):06d}.npz"
            np.savez(file, **arrays)
            out.append(str(file))
            n += take
        copy += 1
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=100, help="synthetic clips for the zcr extraction runs")
    p.add_argument("--pyin-clips", type=int, default=10, help="clips for the pyin run")
    p.add_argument("--seconds", type=float, nargs=2, default=(4.0, 12.0), help="clip duration range")
    p.add_argument("--clips-per-part", type=int, default=10)
    p.add_argument("--workdir", type=Path, default=None, help="kept when given; a temporary folder otherwise")
    args = p.parse_args()

    import librosa
    import litdata

    from msa_lightning.corpus.shards import _dir_bytes, _write_split
    from msa_lightning.media.synthetic import make_synthetic_corpus

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="skesl_build_"))
    root = workdir / "corpus"
    if not (root / "transcripts.tsv").is_file():
        make_synthetic_corpus(root, clips=args.clips, seed=0, seconds=tuple(args.seconds))
    clips = sorted(line.split("\t")[0] for line in (root / "transcripts.tsv").read_text().splitlines())[: args.clips]
    audio_seconds = sum(librosa.get_duration(path=str(root / "audio" / f"{c}.wav")) for c in clips)
    features = {"audio_frames": 400, "vision_frames": 55, "sample_rate": 22050, "hop_length": 512, "f0": "zcr"}

    print(
        f"# SKESL shard build: {len(clips)} synthetic clips, {audio_seconds / len(clips):.1f} s of audio each on "
        f"average; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, litdata "
        f"{litdata.__version__}, librosa {librosa.__version__}\n"
    )
    print("| extraction | workers | clips | wall s | clips/s | audio s / s | s per 1,000 clips | `uptime` load |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    parts = workdir / "parts"
    rows = []
    for workers, label in ((1, "zcr"), (2, "zcr"), (2, "zcr, forkserver warm")):  # the 2nd 2-worker run: no start-up
        load = load_average()
        took = _extract(_tasks(root, parts, clips, args.clips_per_part, features), workers, parts)
        rows.append((label, workers, len(clips), took, audio_seconds, load))
    zcr_parts = sorted(parts.glob("part-*.npz"))
    kept = workdir / "parts_zcr"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(parts, kept)
    pyin = clips[: args.pyin_clips]
    pyin_seconds = sum(librosa.get_duration(path=str(root / "audio" / f"{c}.wav")) for c in pyin)
    load = load_average()
    took = _extract(_tasks(root, parts, pyin, args.clips_per_part, {**features, "f0": "pyin"}), 1, parts)
    rows.append(("pyin", 1, len(pyin), took, pyin_seconds, load))
    for f0, workers, n, took, secs, load in rows:
        print(
            f"| f0 {f0} | {workers} | {n} | {took:.1f} | {n / took:.2f} | {secs / took:.1f} | "
            f"{1000 * took / n:.0f} | {load} |"
        )
    print()
    for method in ("spawn", "forkserver"):
        load = load_average()
        print(
            f"Pool of 2 workers, start-up alone (two empty parts, in a fresh process that has imported the suite), "
            f"{method}: {_pool_startup(method, workdir / 'startup'):.1f} s (load {load})."
        )
    print()

    thousand = _replicate([kept / p.name for p in zcr_parts], 1000, workdir / "parts_1000")
    with np.load(thousand[0]) as part:
        a, v = part["audio_lengths"].mean(), part["vision_lengths"].mean()
    print("| shard writing, 1,000 clips | time s | train + valid on disk | per clip | `uptime` load |")
    print("|---|---:|---:|---:|---|")
    for shard_workers in (0, 1, 2):
        load = load_average()
        out = workdir / f"shards_{shard_workers}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        start = time.perf_counter()
        for split in ("train", "valid"):
            _write_split(out / split, thousand, split, 0.02, "64MB", shard_workers, out / ".cache")
        took = time.perf_counter() - start
        size = sum(_dir_bytes(out / s) for s in ("train", "valid"))
        how = "litdata writer, this process" if shard_workers == 0 else f"litdata.optimize, {shard_workers} worker(s)"
        print(f"| {how} | {took:.1f} | {size / 1e6:.1f} MB | {size / 1000 / 1e3:.0f} kB | {load} |")
    print(
        f"\nItems: audio {a:.0f} x 33 and vision {v:.0f} x 709 float32 frames on average (cut at 400 / 55); "
        f"raw arrays {(a * 33 + v * 709) * 4 / 1e3:.0f} kB per clip."
    )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
