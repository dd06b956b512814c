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
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from msa_lightning.data.reader import SplitArrays
from msa_lightning.papers.skesl.masking import SKESLMaskedDataModule, fallback_draws
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.store import Store, content_hash

META_COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success")
AUDIO_DIM = 33
VISION_DIM = 709
_AU_INTENSITY = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45")
_AU_PRESENCE = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "28",
                "45")


class ClipError(DataError):
    """One clip cannot be used; ``reason`` is a short code a corpus manifest records with its id."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def openface_columns() -> list[str]:
    """The 714 column names of an OpenFace 2.x ``FeatureExtraction`` CSV, in order."""
    gaze = [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
    eye_2d = [f"eye_lmk_{a}_{i}" for a in "xy" for i in range(56)]
    eye_3d = [f"eye_lmk_{a}_{i}" for a in "XYZ" for i in range(56)]
    pose = [f"pose_{a}" for a in ("Tx", "Ty", "Tz", "Rx", "Ry", "Rz")]
    face_2d = [f"{a}_{i}" for a in "xy" for i in range(68)]
    face_3d = [f"{a}_{i}" for a in "XYZ" for i in range(68)]
    shape = ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    aus = [f"AU{n}_r" for n in _AU_INTENSITY] + [f"AU{n}_c" for n in _AU_PRESENCE]
    return [*META_COLUMNS, *gaze, *eye_2d, *eye_3d, *pose, *face_2d, *face_3d, *shape, *aus]


_COLUMNS = openface_columns()
assert len(_COLUMNS) == len(META_COLUMNS) + VISION_DIM


def read_openface_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[T, 709]`` float32 (rows with ``success == 0`` zeroed) and ``success`` ``[T]`` bool.

    Raises:
        ClipError: unreadable file or rows (``unreadable_csv``), a header that is not OpenFace 2.x's
            (``wrong_columns``, naming the first column that differs), or no frame with a tracked
            face (``no_face``).
    """
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8-sig") as handle:  # a BOM is not part of the first column's name
            header = [name.strip() for name in handle.readline().split(",")]
            with warnings.catch_warnings():  # a header without rows is reported below, as a clip without frames
                warnings.simplefilter("ignore", UserWarning)
                rows = np.loadtxt(handle, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ClipError(f"{path}: unreadable OpenFace CSV ({detail})", "unreadable_csv") from None
    if header != _COLUMNS:
        if len(header) != len(_COLUMNS):
            found = f"{len(header)} columns"
        else:
            i = next(i for i, (a, b) in enumerate(zip(header, _COLUMNS)) if a != b)
            found = f"column {i + 1} named {header[i]!r} where OpenFace writes {_COLUMNS[i]!r}"
        raise ClipError(f"{path}: not an OpenFace 2.x CSV: expected {len(_COLUMNS)} columns (5 metadata + "
                        f"{VISION_DIM} features), found {found}", "wrong_columns")
    if rows.size and rows.shape[1] != len(_COLUMNS):
        raise ClipError(f"{path}: rows have {rows.shape[1]} values, the header {len(_COLUMNS)}", "unreadable_csv")
    if rows.size == 0:
        raise ClipError(f"{path}: no frames", "no_face")
    success = rows[:, META_COLUMNS.index("success")] > 0.5
    if not success.any():
        raise ClipError(f"{path}: no frame with a tracked face (success is 0 in all {len(rows)} frames)", "no_face")
    features = rows[:, len(META_COLUMNS):].astype(np.float32)
    features[~success] = 0.0
    if not np.isfinite(features).all():
        raise ClipError(f"{path}: non-finite feature values", "bad_features")
    return features, success


def write_openface_csv(path: str | Path, features: np.ndarray, success: np.ndarray | None = None,
                       spaced: bool = False, fps: float = 25.0) -> Path:
    """An OpenFace-2.x-format CSV of ``features [T, 709]`` (for synthetic corpora and tests);
    ``spaced`` writes a space after every comma, as some OpenFace builds do."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != VISION_DIM:
        raise ValueError(f"features must be [T, {VISION_DIM}], got {features.shape}")
    t = len(features)
    success = np.ones(t, dtype=bool) if success is None else np.asarray(success, dtype=bool)
    meta = np.stack([np.arange(1, t + 1), np.zeros(t), np.arange(t) / fps, success * 0.98, success], axis=1)
    sep = ", " if spaced else ","
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.write(sep.join(_COLUMNS) + "\n")
        np.savetxt(handle, np.concatenate([meta, features], axis=1), delimiter=sep, fmt="%.6g")
    return path


def fix_length(x: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """``x [T, D]`` padded with zero frames or cut to ``length`` frames, and the number of valid frames."""
    valid = min(len(x), length)
    out = np.zeros((length, *x.shape[1:]), dtype=x.dtype)
    out[:valid] = x[:valid]
    return out, valid


#: what libsndfile (through librosa) decodes; other suffixes (VoxCeleb2's m4a: AAC) go to PyAV
LIBSNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def load_audio(path: str | Path, sample_rate: int = 22050) -> np.ndarray:
    """Mono waveform at ``sample_rate``: wav/flac/ogg/mp3 through librosa (libsndfile), falling back to PyAV
    when that fails; other files (m4a/AAC, which libsndfile cannot read and librosa's audioread only with an
    ffmpeg binary) through PyAV, whose wheel carries FFmpeg. A :class:`ClipError` (``unreadable_audio``)
    when nothing can decode it."""
    path = Path(path)
    if path.suffix.lower() not in LIBSNDFILE_SUFFIXES:
        return _checked(_decode_with_pyav(path, sample_rate), path)
    try:
        return _checked(_decode_with_librosa(path, sample_rate), path)
    except ClipError as first:
        try:
            return _checked(_decode_with_pyav(path, sample_rate), path)
        except ClipError as second:
            raise ClipError(f"{first}; {second}", "unreadable_audio") from None


def _checked(y: np.ndarray, path: Path) -> np.ndarray:
    if y.size == 0 or not np.isfinite(y).all():
        raise ClipError(f"{path}: empty or non-finite audio", "unreadable_audio")
    return y


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0][:200] if str(err) else ""


def _decode_with_librosa(path: Path, sample_rate: int) -> np.ndarray:
    import librosa

    try:
        with warnings.catch_warnings():  # the soundfile -> audioread fallback warns; a failure is reported below
            warnings.filterwarnings("ignore", message="PySoundFile failed", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*audioread", category=FutureWarning)
            y, _ = librosa.load(str(path), sr=sample_rate, mono=True)
    except Exception as err:  # soundfile/audioread/decoder errors come in many types
        raise ClipError(f"{path}: unreadable audio ({type(err).__name__}: {_first_line(err)})",
                        "unreadable_audio") from None
    return y


def _decode_with_pyav(path: Path, sample_rate: int) -> np.ndarray:
    import av

    from msa_lightning.data.raw import _decode_audio

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ClipError(f"{path}: no audio stream", "unreadable_audio")
            return _decode_audio(container, sample_rate, None)
    except ClipError:
        raise
    except Exception as err:  # FFmpeg reports corrupt input with many error types
        raise ClipError(f"{path}: unreadable audio (PyAV {type(err).__name__}: {_first_line(err)})",
                        "unreadable_audio") from None


def audio_features(y: np.ndarray, sample_rate: int = 22050, hop_length: int = 512,
                   f0: Literal["pyin", "zcr"] = "pyin", f0_min: float = 60.0, f0_max: float = 600.0,
                   htk_mel: bool = True) -> np.ndarray:
    """Frame-level features ``[T, 33]`` float32: pitch (1), MFCC (20), constant-Q chroma (12).

    Args:
        y: mono waveform.
        sample_rate, hop_length: frames are ``hop_length`` samples apart (centred frames, librosa's default).
        f0: ``pyin``: natural log of the fundamental frequency in Hz from probabilistic YIN searched in
            ``[f0_min, f0_max]``, 0 on frames it finds unvoiced (the paper's "log F0"); ``zcr``: the
            zero-crossing rate (the authors' released feature scripts).
        htk_mel: HTK mel scale for the MFCCs (the released scripts' setting).
    """
    import librosa

    if f0 not in ("pyin", "zcr"):
        raise ValueError(f"f0 must be 'pyin' or 'zcr', got {f0!r}")
    y = np.asarray(y, dtype=np.float32)
    if f0 == "pyin":
        hz, voiced, _ = librosa.pyin(y, fmin=f0_min, fmax=f0_max, sr=sample_rate, hop_length=hop_length)
        pitch = np.where(voiced & np.isfinite(hz), np.log(np.where(np.isfinite(hz), hz, 1.0)), 0.0)[None, :]
    else:
        pitch = librosa.feature.zero_crossing_rate(y, hop_length=hop_length)
    mfcc = librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=20, hop_length=hop_length, htk=htk_mel)
    with warnings.catch_warnings():  # the CQT's lowest octaves are computed on short decimated signals
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal", category=UserWarning)
        warnings.filterwarnings("ignore", message="Trying to estimate tuning from empty", category=UserWarning)
        chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate, hop_length=hop_length, n_chroma=12)
    frames = min(pitch.shape[1], mfcc.shape[1], chroma.shape[1])  # all centred: equal counts, kept safe
    out = np.concatenate([pitch[:, :frames], mfcc[:, :frames], chroma[:, :frames]], axis=0).T.astype(np.float32)
    if not np.isfinite(out).all():
        raise ClipError("non-finite audio features", "bad_features")
    return out


def read_audio_features(path: str | Path, sample_rate: int = 22050, hop_length: int = 512,
                        f0: Literal["pyin", "zcr"] = "pyin") -> np.ndarray:
    """``[T, 33]`` features of an audio file, or of a ready ``.npy`` array of that shape."""
    path = Path(path)
    if path.suffix == ".npy":
        return _ready_features(path, AUDIO_DIM, "audio", "unreadable_audio")
    return audio_features(load_audio(path, sample_rate), sample_rate, hop_length, f0)


def _ready_features(path: Path, dim: int, what: str, unreadable: str) -> np.ndarray:
    """A ready ``[T, dim]`` ``.npy`` feature array, checked (a :class:`ClipError` when it is not)."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ClipError(f"{path}: unreadable feature array ({err})", unreadable) from None
    if x.ndim != 2 or x.shape[1] != dim or not np.isfinite(x).all():
        raise ClipError(f"{path}: expected finite {what} features [T, {dim}], found {x.shape}", "bad_features")
    return x.astype(np.float32)


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


def join_sources(texts: dict[str, str], audio: dict[str, Path], visual: dict[str, Path]
                 ) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Join the three sources by clip id: the ids with a transcript, an audio and a visual file (sorted), and
    the others by id as ``(reason, detail)``: ``missing_transcript`` / ``missing_audio`` / ``missing_visual``
    (the first source lacking, in that order) or ``empty_transcript``."""
    complete, bad = [], {}
    for clip in sorted(set(texts) | set(audio) | set(visual)):
        missing = [name for name, source in (("transcript", texts), ("audio", audio), ("visual", visual))
                   if clip not in source]
        if missing:
            bad[clip] = (f"missing_{missing[0]}", f"no {' and no '.join(missing)} file for this id")
        elif not texts[clip].strip():
            bad[clip] = ("empty_transcript", "the transcript is empty")
        else:
            complete.append(clip)
    return complete, bad


def extract_clip(clip: str, text: str, audio_path: str | Path, visual_path: str | Path, sample_rate: int = 22050,
                 hop_length: int = 512, f0: Literal["pyin", "zcr"] = "pyin") -> Clip:
    """One clip's features (:func:`read_audio_features`, :func:`read_visual_features`); a :class:`ClipError`
    (with its ``reason``) when a file cannot be used. A plain function of its arguments, so a worker process can
    run it."""
    return Clip(clip, text, read_audio_features(audio_path, sample_rate, hop_length, f0),
                read_visual_features(visual_path))


def bad_share_error(where: str | Path, report: CorpusReport, max_bad_share: float, setting: str = "max_bad_share",
                    hint: str = "") -> DataError:
    """The one-line error of a corpus with too many unusable clips: the share, the summary and a few examples."""
    shown = "; ".join(f"{k}: {r}" for k, (r, _) in list(report.bad.items())[:5])
    return DataError(f"{where}: {report.bad_share:.1%} of the clips are unusable, more than {setting}="
                     f"{max_bad_share:g} ({report.summary()}; e.g. {shown}){hint}")


def collect_clips(transcripts: str | Path, audio_root: str | Path, visual_root: str | Path,
                  sample_rate: int = 22050, hop_length: int = 512, f0: Literal["pyin", "zcr"] = "pyin",
                  max_bad_share: float = 0.05) -> tuple[list[Clip], CorpusReport]:
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


# ---------------------------------------------------------------------------------------------- synthetic corpus
_POSITIVE = ("good", "great", "love", "awesome", "happy", "best")
_NEGATIVE = ("bad", "awful", "hate", "boring", "sad", "worst")
_NEUTRAL = ("the", "movie", "was", "it", "i", "think", "and", "story", "a", "really", "this", "actor", "just", "so")


def make_synthetic_corpus(out: str | Path, clips: int = 12, seed: int = 0, sample_rate: int = 22050,
                          neutral_share: float = 0.25, seconds: tuple[float, float] = (0.5, 1.2)) -> Path:
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
        words = list(rng.choice(_NEUTRAL, size=int(rng.integers(4, 10))))
        if rng.random() >= neutral_share:
            pool = _POSITIVE if z > 0 else _NEGATIVE
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
BAD_KINDS = ("missing_transcript", "missing_audio", "missing_visual", "empty_transcript", "unreadable_audio",
             "wrong_columns", "no_face")


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


# ---------------------------------------------------------------------------------------------- data module
def _listing_fingerprint(files: dict[str, Path]) -> str:
    """Hash of (id, name, size, mtime) of every file: a changed, added or removed file changes it, without
    reading a million media files."""
    digest = hashlib.sha256()
    for clip in sorted(files):
        stat = files[clip].stat()
        digest.update(f"{clip}\t{files[clip].name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class SKESLCorpusDataModule(SKESLMaskedDataModule):
    """An unlabeled corpus on disk (transcripts TSV, audio files, OpenFace CSVs; :func:`collect_clips`) served
    as masked pretraining batches for ``SKESLPretrain``, exactly as
    :class:`~msa_lightning.papers.skesl.masking.SKESLMaskedDataModule` serves a feature file (same batches,
    sampler, resume and DDP behaviour: only where the clips come from differs).

    ``prepare_data`` (rank 0 of each node) extracts every clip's features once, pads or cuts them to fixed
    lengths and writes them to the store (kind ``skesl_corpus``, keyed by the transcript file's content, the
    media files' names/sizes/times and every setting); the left-out clips, by id and reason, and the summary
    are in the entry's meta (:attr:`report`). Clips go to ``valid`` by a hash of their id (``valid_share``),
    so the split does not move when clips are added; there is no test split.

    Args:
        transcripts, audio, visual: the ``id<TAB>text`` file and the audio / OpenFace folders.
        audio_frames, vision_frames: the length policy (the authors: 400 and 55 frames).
        sample_rate, hop_length, f0: audio features (:func:`audio_features`; ``f0`` ``pyin`` = the paper).
        max_bad_share: the share of unusable clips above which the build fails.
        valid_share: share of clips held out for validation (by id hash).
        predict_split: the split `msa predict` serves (``valid``: a corpus has no test split).
        Remaining keyword arguments: :class:`~msa_lightning.papers.skesl.masking.SKESLMaskedDataModule`
        (tokenizer, text_max_length, lexicon, mask_seed, batch_size, num_workers, cache_dir, ...).
    """

    def __init__(self, transcripts: str, audio: str, visual: str, audio_frames: int = 400, vision_frames: int = 55,
                 sample_rate: int = 22050, hop_length: int = 512, f0: Literal["pyin", "zcr"] = "pyin",
                 max_bad_share: float = 0.05, valid_share: float = 0.02, predict_split: str = "valid",
                 **kwargs) -> None:
        kwargs["predict_split"] = predict_split  # a corpus has no test split (an explicit default for the CLI)
        kwargs.setdefault("text_max_length", 39)
        super().__init__(str(transcripts), **kwargs)
        if f0 not in ("pyin", "zcr"):
            raise ConfigError(f"data.init_args.f0: expected 'pyin' or 'zcr', found {f0!r}")
        if not 0 < valid_share < 1:
            raise ConfigError(f"data.init_args.valid_share: expected a share in (0, 1), found {valid_share!r}")
        self.transcripts, self.audio_root, self.visual_root = Path(transcripts), Path(audio), Path(visual)
        self.audio_frames, self.vision_frames = int(audio_frames), int(vision_frames)
        self.sample_rate, self.hop_length, self.f0 = int(sample_rate), int(hop_length), f0
        self.max_bad_share, self.valid_share = float(max_bad_share), float(valid_share)
        self.report: dict = {}

    @property
    def feature_file(self) -> Path:
        return self.transcripts

    def _entry(self):
        from msa_lightning.data.transcripts import read_transcripts

        store = Store(self.cache_dir)
        if not self.transcripts.is_file():
            raise DataError(f"{self.transcripts}: transcript file not found (data.init_args.transcripts)")
        audio, visual = index_files(self.audio_root, AUDIO_SUFFIXES), index_files(self.visual_root, VISUAL_SUFFIXES)
        inputs = {"transcripts": content_hash(self.transcripts, store.root), "audio": _listing_fingerprint(audio),
                  "visual": _listing_fingerprint(visual), "audio_frames": self.audio_frames,
                  "vision_frames": self.vision_frames, "sample_rate": self.sample_rate, "hop_length": self.hop_length,
                  "f0": self.f0, "max_bad_share": self.max_bad_share}

        def build():
            read_transcripts(self.transcripts)  # a malformed file fails here, before any media is read
            clips, report = collect_clips(self.transcripts, self.audio_root, self.visual_root, self.sample_rate,
                                          self.hop_length, self.f0, self.max_bad_share)
            if not clips:
                raise DataError(f"{self.transcripts}: no usable clip ({report.summary()})")
            a = [fix_length(c.audio, self.audio_frames) for c in clips]
            v = [fix_length(c.vision, self.vision_frames) for c in clips]
            arrays = {"audio": np.stack([x for x, _ in a]), "audio_lengths": np.array([n for _, n in a]),
                      "vision": np.stack([x for x, _ in v]), "vision_lengths": np.array([n for _, n in v]),
                      "ids": np.array([c.id for c in clips], dtype=str),
                      "texts": np.array([c.text for c in clips], dtype=str)}
            meta = {"summary": report.summary(), "total": report.total,
                    "bad": {k: list(v) for k, v in report.bad.items()}, "counts": report.counts()}
            return arrays, meta

        return store.get_or_build("skesl_corpus", inputs, build)

    def prepare_data(self) -> None:
        self._entry()

    def _load(self) -> None:
        if self.splits:
            return
        entry = self._entry()
        self.report = {k: entry.meta[k] for k in ("summary", "total", "bad", "counts")}
        ids, texts = entry["ids"].tolist(), entry["texts"].tolist()
        held_out = fallback_draws(ids, "valid") < self.valid_share  # a hash of ("valid", id): stable as clips come
        for split, rows in (("train", np.flatnonzero(~held_out)), ("valid", np.flatnonzero(held_out))):
            if len(rows) == 0:
                raise DataError(f"{self.transcripts}: split {split!r} is empty ({len(ids)} usable clips, "
                                f"valid_share={self.valid_share:g})")
            self.splits[split] = SplitArrays(
                ids=[ids[i] for i in rows], raw_text=[texts[i] for i in rows], text_bert=None,
                audio=entry["audio"][rows], vision=entry["vision"][rows], audio_lengths=entry["audio_lengths"][rows],
                vision_lengths=entry["vision_lengths"][rows], labels={})
