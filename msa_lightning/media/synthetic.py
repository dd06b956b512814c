"""Synthetic media for demos and tests: tiny clips (a tone and moving colours) written with PyAV, a raw
dataset in the CH-SIMS layout (``label.csv`` + ``Raw/<video>/<clip>.mp4``) whose labels follow words,
pitch and brightness, and an unlabeled SKESL-style corpus (transcripts, audio, OpenFace CSVs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msa_lightning.errors import ConfigError
from msa_lightning.media.openface import VISION_DIM, write_openface_csv

#: the default rows of :func:`make_synthetic_raw`:
#: video_id, clip_id, text, label, label_T, label_A, label_V, mode, seconds
SYNTHETIC_ROWS = (
    ("vidA", "1", "i love this movie", 0.8, 0.6, 0.4, 0.2, "train", 1.0),
    ("vidA", "2", "it was boring", -0.6, -0.8, -0.2, 0.0, "train", 0.6),
    ("vidB", "1", "the plot is ok", 0.2, 0.0, 0.4, 0.2, "train", 0.8),
    ("vidB", "2", "terrible acting", -1.0, -1.0, -0.6, -0.4, "train", 0.5),
    ("vidC", "1", "great fun", 0.6, 0.8, 0.2, 0.4, "train", 0.7),
    ("vidC", "2", "not good", -0.4, -0.6, 0.0, -0.2, "valid", 0.6),
    ("vidD", "1", "so funny", 0.4, 0.6, 0.2, 0.0, "valid", 0.9),
    ("vidD", "2", "bad movie", -0.8, -0.6, -0.4, -0.2, "test", 0.5),
    ("vidE", "1", "nice story", 0.2, 0.4, 0.0, 0.2, "test", 0.6),
)


def write_synthetic_clip(
    path: str | Path,
    seconds: float = 1.0,
    fps: int = 25,
    tone: float = 440.0,
    audio: bool = True,
    rate: int = 44_100,
    base: int = 0,
    width: int = 32,
    height: int = 24,
    face: bool = False,
    video: bool = True,
) -> Path:
    """An mp4 (MPEG-4 video, AAC stereo audio) whose frame ``i`` is a grey image of brightness
    ``min(base + 10 i, 255)`` (so a sampled frame can be read back) and whose audio is a sine ``tone``
    (``tone=0``: a silent track); ``audio=False`` / ``video=False`` leave that stream out. ``face=True`` shows
    a real portrait instead (:func:`portrait`, moving a pixel per frame), for face extractors."""
    import fractions

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = portrait() if face else None
    if picture is not None:
        height, width = picture.shape[:2]
    with av.open(str(path), "w") as out:
        if video:
            stream = out.add_stream("mpeg4", rate=fps)
            stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", 4_000_000
        if audio:
            sound = out.add_stream("aac", rate=rate)
            sound.layout = "stereo"
        for i in range(int(round(seconds * fps)) if video else 0):
            if picture is None:
                image = np.full((height, width, 3), min(base + 10 * i, 255), np.uint8)
            else:
                image = np.roll(picture, i % 8, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode() if video else ():
            out.mux(packet)
        if audio:
            wave = (0.5 * np.sin(2 * np.pi * tone * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.stack([wave[start : start + 1024]] * 2), format="fltp", layout="stereo"
                )
                frame.sample_rate, frame.pts, frame.time_base = rate, start, fractions.Fraction(1, rate)
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


def portrait(height: int = 300, width: int = 256) -> np.ndarray:
    """A real face, ``[height, width, 3] uint8``: the Grace Hopper portrait matplotlib ships in its wheel
    (``sample_data``; no download), resized. Face detectors need a real face; a drawn one is not found."""
    import matplotlib.cbook
    import matplotlib.image
    import torch
    import torch.nn.functional as F

    image = matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


_POSITIVE = ("great", "lovely", "funny", "good", "nice", "brilliant")


_NEGATIVE = ("boring", "awful", "bad", "terrible", "dull", "sad")


def make_synthetic_raw(
    root: str | Path,
    clips: int | None = None,
    unimodal: bool = True,
    seed: int = 0,
    splits: tuple[float, float] = (0.6, 0.2),
    width: int = 32,
    height: int = 24,
) -> Path:
    """Write a tiny raw release (``label.csv`` + ``Raw/<video_id>/<clip_id>.mp4``) under ``root``.

    ``clips=None`` writes :data:`SYNTHETIC_ROWS`. ``clips=n`` draws ``n`` clips whose unimodal labels
    are carried by their modality (text: positive or negative words; audio: the tone's pitch; vision:
    the frames' brightness) and ``label`` = their mean, so models can learn something; ``splits`` are
    the train and valid shares (the rest is test). ``unimodal=False`` leaves out ``label_T/_A/_V`` (a
    MOSI-like release); ``width`` x ``height``: the video's frame size."""
    import csv

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if clips is None:
        rows = list(SYNTHETIC_ROWS)
        tones = [200.0 + 50 * i for i in range(len(rows))]
        bases = [0] * len(rows)
    else:
        if isinstance(clips, bool) or not isinstance(clips, int) or clips < 6:
            raise ConfigError(f"make_synthetic_raw: clips must be an integer >= 6 (two per split), found {clips!r}")
        rng = np.random.default_rng(seed)
        n_train, n_valid = max(2, int(clips * splits[0])), max(2, int(clips * splits[1]))
        rows, tones, bases = [], [], []
        for i in range(clips):
            t, a, v = (np.round(rng.uniform(-1, 1, 3), 1) + 0.0).tolist()
            words = rng.choice(_POSITIVE if t >= 0 else _NEGATIVE, size=1 + int(abs(t) * 3))
            mode = "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
            rows.append(
                (
                    f"vid{i // 4:03d}",
                    str(i % 4 + 1),
                    "the movie was " + " ".join(words),
                    round((t + a + v) / 3, 2),
                    t,
                    a,
                    v,
                    mode,
                    float(np.round(rng.uniform(0.5, 1.0), 2)),
                )
            )
            tones.append(300.0 + 250.0 * a)  # 50 .. 550 Hz
            bases.append(int(100 + 90 * v))  # brightness 10 .. 190 at the first frame
    header = ["video_id", "clip_id", "text", "label"] + (["label_T", "label_A", "label_V"] if unimodal else [])
    with open(root / "label.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + ["annotation", "mode"])
        for (video, clip, text, m, t, a, v, mode, seconds), tone, base in zip(rows, tones, bases):
            sentiment = "Positive" if m > 0 else "Negative" if m < 0 else "Neutral"
            writer.writerow([video, clip, text, m] + ([t, a, v] if unimodal else []) + [sentiment, mode])
            write_synthetic_clip(
                root / "Raw" / video / f"{clip}.mp4", seconds=seconds, tone=tone, base=base, width=width, height=height
            )
    return root


# ---------------------------------------------------------------------------------------------- synthetic corpus
_CORPUS_POSITIVE = ("good", "great", "love", "awesome", "happy", "best")


_CORPUS_NEGATIVE = ("bad", "awful", "hate", "boring", "sad", "worst")


_CORPUS_NEUTRAL = (
    "the",
    "movie",
    "was",
    "it",
    "i",
    "think",
    "and",
    "story",
    "a",
    "really",
    "this",
    "actor",
    "just",
    "so",
)


def make_synthetic_corpus(
    out: str | Path,
    clips: int = 12,
    seed: int = 0,
    sample_rate: int = 22050,
    neutral_share: float = 0.25,
    seconds: tuple[float, float] = (0.5, 1.2),
) -> Path:
    """A small unlabeled corpus in the on-disk layout :func:`collect_clips` reads (VoxCeleb-style ids):
    ``transcripts.tsv``, ``audio/<id>.wav`` (a tone whose pitch and loudness follow the clip's hidden
    sentiment, plus noise) and ``openface/<id>.csv`` (OpenFace-format frames shifted along a fixed direction
    by the sentiment; a few failed frames). About ``neutral_share`` of the transcripts hold no lexicon word;
    clip durations are drawn uniformly from ``seconds`` (VoxCeleb's clips last 4 to 20 s, about 8 s on average).
    """
    import soundfile

    out = Path(out)
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(709).normal(size=VISION_DIM)
    lines = []
    for i in range(clips):
        clip = f"id{10000 + i % 3:05d}/yt{i // 3:04d}/{i % 3 + 1:05d}"
        z = float(rng.uniform(-3, 3))
        words = list(rng.choice(_CORPUS_NEUTRAL, size=int(rng.integers(4, 10))))
        if rng.random() >= neutral_share:
            pool = _CORPUS_POSITIVE if z > 0 else _CORPUS_NEGATIVE
            for slot in rng.choice(len(words), size=min(len(words), 1 + int(abs(z) > 1.5)), replace=False):
                words[slot] = str(rng.choice(pool))
        lines.append(f"{clip}\t{' '.join(words)}")
        duration = float(rng.uniform(*seconds))
        t = np.arange(int(duration * sample_rate)) / sample_rate
        wave = (0.3 + 0.05 * z) * np.sin(2 * np.pi * (180 + 20 * z) * t) + 0.01 * rng.normal(size=len(t))
        (out / "audio" / clip).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(out / "audio" / f"{clip}.wav", wave.astype(np.float32), sample_rate)
        frames = int(duration * 25)
        faces = rng.normal(size=(frames, VISION_DIM)) + 0.5 * z * direction
        success = rng.random(frames) > 0.1
        success[0] = True
        write_openface_csv(out / "openface" / f"{clip}.csv", faces, success)
    (out / "transcripts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


#: the kinds of unusable clip :func:`add_bad_clips` plants, one each (the reasons a build reports)
BAD_KINDS = (
    "missing_transcript",
    "missing_audio",
    "missing_visual",
    "empty_transcript",
    "unreadable_audio",
    "wrong_columns",
    "no_face",
)


def add_bad_clips(root: str | Path, sample_rate: int = 22050) -> dict[str, str]:
    """Add one unusable clip of each kind in :data:`BAD_KINDS` to a corpus made by :func:`make_synthetic_corpus`
    (ids ``id19999/bad_<reason>/00001``), so a build's report can be seen; returns ``{id: reason}``."""
    import soundfile

    root = Path(root)
    tsv = root / "transcripts.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    planted = {}
    for reason in BAD_KINDS:
        clip = f"id19999/bad_{reason}/00001"
        planted[clip] = reason
        wav, csv = root / "audio" / f"{clip}.wav", root / "openface" / f"{clip}.csv"
        wav.parent.mkdir(parents=True, exist_ok=True)
        if reason != "missing_transcript":
            lines.append(f"{clip}\t{'' if reason == 'empty_transcript' else 'the movie was good'}")
        if reason == "unreadable_audio":
            wav.write_bytes(b"RIFF\x00\x00 not a wave file")
        elif reason != "missing_audio":
            t = np.arange(int(0.5 * sample_rate)) / sample_rate
            soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), sample_rate)
        if reason == "no_face":
            write_openface_csv(csv, np.zeros((5, VISION_DIM)), np.zeros(5, dtype=bool))
        elif reason != "missing_visual":
            write_openface_csv(csv, np.ones((5, VISION_DIM)))
            if reason == "wrong_columns":  # a build that dropped the last AU column
                csv.write_text("\n".join(",".join(row.split(",")[:-1]) for row in csv.read_text().splitlines()) + "\n")
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return planted
