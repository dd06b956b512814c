"""`msa features extract` benchmark: clips/s per extractor, 1 and 2 workers, and peak memory.

Run ``python benchmarks/features_extract.py --help``. Prints Markdown tables; nothing is asserted.

Clips: ``--clips`` mp4 files of ``--seconds`` (default 8, about VoxCeleb's and CH-SIMS's clip length) at 25 fps,
640 x 360, a real portrait (matplotlib's sample photo, moving) on grey, AAC audio of tones with noise at 44.1 kHz.

1. **Per extractor, 1 worker, in this process** (decoding included): librosa 33-d with ``--f0 zcr`` and ``pyin``
   (the same function ``msa pretrain-data build`` runs: compare with its 2.56 / 0.59 clips/s), the built-in dlib
   face extractor at 10 fps, OpenFace CSV parsing (25 fps, 709 columns).
2. **The whole command** (:func:`~msa_lightning.corpus.extract.extract_features`, librosa zcr + dlib, tokens
   ``tiny-bert``) with 1 and 2 workers, each on a fresh store, start-up of the worker pool included.
3. **Peak memory**: the largest resident set of this process and of the worker processes (``getrusage``).
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measure import load_average  # noqa: E402


def write_clip(path: Path, seconds: float, seed: int) -> None:
    import fractions

    import av

    from msa_lightning.media.synthetic import portrait

    face, rng, rate, fps = portrait(), np.random.default_rng(seed), 44_100, 25
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        sound = out.add_stream("aac", rate=rate)
        sound.layout = "mono"
        for i in range(int(seconds * fps)):
            image = np.full((360, 640, 3), 120, np.uint8)
            x = 150 + (i % 40)
            image[30:330, x : x + 256] = face
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) + 0.02 * rng.normal(size=len(t))
        for start in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(
                wave[None, start : start + 1024].astype(np.float32), format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = rate, start, fractions.Fraction(1, rate)
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    import soundfile

    wav = path.parents[2] / "audio" / path.parent.name / "1.wav"  # the same sound, for the shard builder's reader
    wav.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(wav, wave.astype(np.float32), rate)


def make_release(root: Path, clips: int, seconds: float) -> Path:
    from msa_lightning.media.openface import write_openface_csv

    rows = ["video_id,clip_id,text,label,mode"]
    for i in range(clips):
        mode = ("train", "train", "valid", "test")[i % 4] if i >= 3 else ("train", "valid", "test")[i]
        rows.append(f"v{i:03d},1,the movie was good,{(i % 7 - 3) / 3:.2f},{mode}")
        write_clip(root / "Raw" / f"v{i:03d}" / "1.mp4", seconds, i)
        frames = int(seconds * 25)
        write_openface_csv(
            root / "openface" / f"v{i:03d}" / "1.csv", np.random.default_rng(i).normal(size=(frames, 709)), spaced=True
        )
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    return root


def per_extractor(root: Path, clips: int, pyin_clips: int) -> list[str]:
    from msa_lightning.media.extractors import audio_settings, extract_audio, extract_vision, vision_settings

    videos = sorted((root / "Raw").glob("*/1.mp4"))
    cases = [
        ("audio librosa, f0 zcr", lambda v: extract_audio(v, audio_settings("librosa", "zcr")), clips),
        ("audio librosa, f0 pyin", lambda v: extract_audio(v, audio_settings("librosa", "pyin")), pyin_clips),
        ("vision dlib (10 fps, 480 px)", lambda v: extract_vision(v, vision_settings("dlib")), clips),
        (
            "vision OpenFace CSV (25 fps, 709)",
            lambda v: extract_vision(v, openface, root / "openface" / v.parent.name / "1.csv"),
            clips,
        ),
    ]
    openface = vision_settings(f"openface:{root / 'openface'}")
    zcr = audio_settings("librosa", "zcr")

    def same_work_as_the_shard_builder(video: Path) -> None:
        extract_audio(video, zcr)
        extract_vision(video, openface, root / "openface" / video.parent.name / "1.csv")

    def shard_builder(video: Path) -> None:
        from msa_lightning.corpus.shards import extract_part

        name = video.parent.name
        clip = (name, "text", str(root / "audio" / name / "1.wav"), str(root / "openface" / name / "1.csv"))
        features = {"sample_rate": 22050, "hop_length": 512, "f0": "zcr", "audio_frames": 10**6, "vision_frames": 10**6}
        extract_part(str(root / "part.npz"), [clip], features)

    cases += [
        ("shard builder's extract_part: wav + OpenFace CSV, f0 zcr", shard_builder, clips),
        ("this command: mp4 sound track + OpenFace CSV, f0 zcr", same_work_as_the_shard_builder, clips),
    ]
    extract_audio(videos[0], audio_settings("librosa", "zcr"))  # librosa's first call compiles (numba)
    extract_vision(videos[0], vision_settings("dlib"))  # loads dlib's models
    lines = ["| extractor | workers | clips | wall s | clips/s | `uptime` load |", "|---|---:|---:|---:|---:|---|"]
    for name, run, n in cases:
        load = load_average()
        start = time.perf_counter()
        for video in videos[:n]:
            run(video)
        wall = time.perf_counter() - start
        lines.append(f"| {name} | 1 | {n} | {wall:.1f} | {n / wall:.2f} | {load} |")
    return lines


def whole_command(root: Path, workers: tuple[int, ...]) -> list[str]:
    from msa_lightning.corpus.extract import ExtractOptions, extract_features
    from msa_lightning.media.extractors import audio_settings, vision_settings

    lines = [
        "| command (librosa zcr + dlib) | workers | clips | wall s | clips/s | `uptime` load |",
        "|---|---:|---:|---:|---:|---|",
    ]
    clips = len(list((root / "Raw").glob("*/1.mp4")))
    for n in workers:
        with tempfile.TemporaryDirectory() as store:
            options = ExtractOptions(
                audio_settings("librosa", "zcr"), vision_settings("dlib"), tokenizer="tiny-bert", workers=n
            )
            load = load_average()
            start = time.perf_counter()
            extract_features(root, Path(store) / "out.pkl", options, cache_dir=store, echo=lambda *_: None)
            wall = time.perf_counter() - start
        lines.append(f"| `msa features extract` | {n} | {clips} | {wall:.1f} | {clips / wall:.2f} | {load} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--pyin-clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import librosa

    with tempfile.TemporaryDirectory() as tmp:
        root = make_release(Path(tmp) / "raw", args.clips, args.seconds)
        machine = platform.processor() or platform.machine()
        print(f"{args.clips} clips of {args.seconds:g} s; librosa {librosa.__version__}; {machine}\n")
        print("\n".join(per_extractor(root, args.clips, args.pyin_clips)) + "\n")
        print("\n".join(whole_command(root, tuple(args.workers))) + "\n")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak resident memory: this process {own:.0f} MiB, largest worker process {children:.0f} MiB")


if __name__ == "__main__":
    main()
