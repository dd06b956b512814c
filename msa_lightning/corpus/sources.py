"""Per-clip readers of SKESL's unlabeled corpus (Qian et al., Findings of ACL 2023, Section 4.2).

* **Visual**: OpenFace 2.x ``FeatureExtraction`` CSVs (:func:`read_openface_csv`): five metadata
  columns (``frame, face_id, timestamp, confidence, success``) then 709 features: gaze 8, eye
  landmarks 2-D 112 and 3-D 168, head pose 6, face landmarks 2-D 136 and 3-D 204, shape parameters
  40, AU intensities 17, AU presence 18 (:func:`openface_columns`). Some OpenFace builds write a space
  after every comma; both spellings are read. Frames where OpenFace reports ``success == 0`` (no face
  tracked) are **zeroed**, not dropped, so frame ``i`` keeps its time stamp; a clip with no tracked face
  at all is a bad clip.
* **Audio**: frame-level librosa features (:func:`audio_features`), 33-d per frame: a pitch column
  (``f0="pyin"``: the paper's log F0, from probabilistic YIN, 0 on unvoiced frames; ``f0="zcr"``: the
  zero-crossing rate the authors' released scripts and the CH-SIMS files put there), 20 MFCCs (HTK
  mel scale, as the released scripts) and 12 constant-Q chroma bins.
* **Length policy**: :func:`fix_length` pads with zeros or cuts to a fixed number of frames and
  returns the valid length (the authors: 400 audio frames at 22,050 Hz with hop 512, 55 visual frames).

Every failure that concerns one clip raises :class:`ClipError` (a DataError) with a short ``reason``
(``unreadable_audio``, ``unreadable_csv``, ``wrong_columns``, ``no_face``, ``bad_features``), so a corpus
build can record the clip by id and reason and go on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from msa_lightning.errors import ClipError, DataError
from msa_lightning.media.acoustic import AUDIO_DIM, audio_features
from msa_lightning.media.decode import load_audio
from msa_lightning.media.openface import _COLUMNS, META_COLUMNS, VISION_DIM, read_openface_csv

assert len(_COLUMNS) == len(META_COLUMNS) + VISION_DIM


def fix_length(x: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """``x [T, D]`` padded with zero frames or cut to ``length`` frames, and the number of valid frames."""
    valid = min(len(x), length)
    out = np.zeros((length, *x.shape[1:]), dtype=x.dtype)
    out[:valid] = x[:valid]
    return out, valid


def _ready_features(path: Path, dim: int, what: str, unreadable: str) -> np.ndarray:
    """A ready ``[T, dim]`` ``.npy`` feature array, checked (a :class:`ClipError` when it is not)."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ClipError(f"{path}: unreadable feature array ({err})", unreadable) from None
    if x.ndim != 2 or x.shape[1] != dim or not np.isfinite(x).all():
        raise ClipError(f"{path}: expected finite {what} features [T, {dim}], found {x.shape}", "bad_features")
    return x.astype(np.float32)


def read_audio_features(
    path: str | Path, sample_rate: int = 22050, hop_length: int = 512, f0: Literal["pyin", "zcr"] = "pyin"
) -> np.ndarray:
    """``[T, 33]`` features of an audio file, or of a ready ``.npy`` array of that shape."""
    path = Path(path)
    if path.suffix == ".npy":
        return _ready_features(path, AUDIO_DIM, "audio", "unreadable_audio")
    return audio_features(load_audio(path, sample_rate), sample_rate, hop_length, f0)


def read_visual_features(path: str | Path) -> np.ndarray:
    """``[T, 709]`` features of an OpenFace CSV (:func:`read_openface_csv`) or of a ready ``.npy`` array."""
    path = Path(path)
    if path.suffix != ".npy":
        return read_openface_csv(path)[0]
    return _ready_features(path, VISION_DIM, "visual", "unreadable_csv")


# ---------------------------------------------------------------------------------------------- joining a corpus
AUDIO_SUFFIXES = (".npy", ".wav", ".flac", ".m4a", ".mp3", ".ogg")  # ready features first
VISUAL_SUFFIXES = (".npy", ".csv")


def index_files(root: str | Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{clip id: file}`` under ``root``, the id being the path relative to ``root`` without its suffix
    (VoxCeleb's ``idNNNNN/<youtube id>/<clip>``). With two files for one id, the earlier suffix wins."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in suffixes or not path.is_file():
            continue
        clip = path.relative_to(root).with_suffix("").as_posix()
        if clip not in found or suffixes.index(path.suffix.lower()) < suffixes.index(found[clip].suffix.lower()):
            found[clip] = path
    return found


@dataclass
class Clip:
    """One usable clip: transcript, audio ``[T_a, 33]`` and visual ``[T_v, 709]`` frames (before any length policy)."""

    id: str
    text: str
    audio: np.ndarray
    vision: np.ndarray


@dataclass
class CorpusReport:
    """What a corpus build used and left out: ``bad`` maps each left-out clip id to ``(reason, detail)``."""

    total: int = 0
    good: list[str] = field(default_factory=list)
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def bad_share(self) -> float:
        return len(self.bad) / self.total if self.total else 0.0

    def counts(self) -> dict[str, int]:
        return dict(Counter(reason for reason, _ in self.bad.values()))

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.counts().items())) or "none"
        return f"{len(self.good)} of {self.total} clips used; left out: {reasons}"


def join_sources(
    texts: dict[str, str], audio: dict[str, Path], visual: dict[str, Path]
) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Join the three sources by clip id: the ids with a transcript, an audio and a visual file (sorted), and
    the others by id as ``(reason, detail)``: ``missing_transcript`` / ``missing_audio`` / ``missing_visual``
    (the first source lacking, in that order) or ``empty_transcript``."""
    complete, bad = [], {}
    for clip in sorted(set(texts) | set(audio) | set(visual)):
        missing = [
            name for name, source in (("transcript", texts), ("audio", audio), ("visual", visual)) if clip not in source
        ]
        if missing:
            bad[clip] = (f"missing_{missing[0]}", f"no {' and no '.join(missing)} file for this id")
        elif not texts[clip].strip():
            bad[clip] = ("empty_transcript", "the transcript is empty")
        else:
            complete.append(clip)
    return complete, bad


def extract_clip(
    clip: str,
    text: str,
    audio_path: str | Path,
    visual_path: str | Path,
    sample_rate: int = 22050,
    hop_length: int = 512,
    f0: Literal["pyin", "zcr"] = "pyin",
) -> Clip:
    """One clip's features (:func:`read_audio_features`, :func:`read_visual_features`); a :class:`ClipError`
    (with its ``reason``) when a file cannot be used. A plain function of its arguments, so a worker process can
    run it."""
    return Clip(
        clip, text, read_audio_features(audio_path, sample_rate, hop_length, f0), read_visual_features(visual_path)
    )


def bad_share_error(
    where: str | Path, report: CorpusReport, max_bad_share: float, setting: str = "max_bad_share", hint: str = ""
) -> DataError:
    """The one-line error of a corpus with too many unusable clips: the share, the summary and a few examples."""
    shown = "; ".join(f"{k}: {r}" for k, (r, _) in list(report.bad.items())[:5])
    return DataError(
        f"{where}: {report.bad_share:.1%} of the clips are unusable, more than {setting}="
        f"{max_bad_share:g} ({report.summary()}; e.g. {shown}){hint}"
    )


def collect_clips(
    transcripts: str | Path,
    audio_root: str | Path,
    visual_root: str | Path,
    sample_rate: int = 22050,
    hop_length: int = 512,
    f0: Literal["pyin", "zcr"] = "pyin",
    max_bad_share: float = 0.05,
) -> tuple[list[Clip], CorpusReport]:
    """Join transcripts (``id<TAB>text``), audio and OpenFace outputs by clip id and extract features.

    A clip missing from one source (``missing_transcript``, ``missing_audio``, ``missing_visual``), with an
    empty transcript (``empty_transcript``) or whose files fail (:class:`ClipError` reasons) is left out
    and recorded in the report by id and reason; the build fails (DataError, with the summary) only when
    the share of such clips exceeds ``max_bad_share``. (In one process; ``msa pretrain-data build`` does the
    same with worker processes and writes streaming shards: :mod:`msa_lightning.corpus.shards`.)
    """
    from msa_lightning.data.transcripts import read_transcripts

    texts = read_transcripts(transcripts)
    audio, visual = index_files(audio_root, AUDIO_SUFFIXES), index_files(visual_root, VISUAL_SUFFIXES)
    complete, bad = join_sources(texts, audio, visual)
    report = CorpusReport(total=len(complete) + len(bad), bad=bad)
    clips = []
    for clip in complete:
        try:
            clips.append(extract_clip(clip, texts[clip], audio[clip], visual[clip], sample_rate, hop_length, f0))
        except ClipError as err:
            report.bad[clip] = (err.reason, str(err))
            continue
        report.good.append(clip)
    report.bad = dict(sorted(report.bad.items()))
    if report.bad_share > max_bad_share:
        raise bad_share_error(transcripts, report, max_bad_share)
    return clips, report


# ---------------------------------------------------------------------------------------------- data module
def listing_fingerprint(files: dict[str, Path]) -> str:
    """Hash of (id, name, size, mtime) of every file: a changed, added or removed file changes it, without
    reading a million media files."""
    digest = hashlib.sha256()
    for clip in sorted(files):
        stat = files[clip].stat()
        digest.update(f"{clip}\t{files[clip].name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
