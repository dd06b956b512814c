"""Reading and validating the field's feature files (the pickles of the reference toolkit).

A feature file is a pickled dict ``{"train": split, "valid": split, "test": split}``; each split
is a dict of per-sample arrays (see the README's table). :func:`read_feature_file` loads one,
checks it once, and returns clean arrays: every problem raises :class:`FeatureFileError` with one
sentence naming the file, split, key, what was expected and what was found. Non-finite feature
values (``-inf`` and NaN occur in the real MOSEI acoustic features) are replaced by 0 and counted;
the counts are logged and stored with the cache, never dropped silently.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msa_lightning.batch import LABEL_KEYS
from msa_lightning.data.specs import SPLITS, DatasetSpec
from msa_lightning.errors import DataError

log = logging.getLogger(__name__)

#: feature-file key of each label key of :class:`~msa_lightning.batch.MSABatch`
LABEL_FILE_KEYS = {"M": "regression_labels", **{k: f"regression_labels_{k}" for k in LABEL_KEYS[1:]}}
FEATURE_KEYS = ("audio", "vision", "text")  # float sequences [N, T, D]


class FeatureFileError(DataError):
    """A feature file does not follow the field's schema."""


@dataclass
class SplitArrays:
    """One validated split: numpy arrays (possibly memory-mapped) and python lists."""

    ids: list[str]
    raw_text: list[str]
    text_bert: np.ndarray | None  # [N, 3, L] float in the files -> int64 here
    audio: np.ndarray  # [N, Ta, Da] float32
    vision: np.ndarray  # [N, Tv, Dv] float32
    audio_lengths: np.ndarray  # [N] int64
    vision_lengths: np.ndarray  # [N] int64
    labels: dict[str, np.ndarray]  # {"M": [N], "T": [N], ...} float32
    text: np.ndarray | None = None  # [N, L, 768] precomputed text features
    nonfinite: dict[str, int] = field(default_factory=dict)  # key -> values replaced by 0

    def __len__(self) -> int:
        return len(self.ids)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by its cache name (``labels_M`` etc. for labels)."""
        out = {
            "audio": self.audio,
            "vision": self.vision,
            "audio_lengths": self.audio_lengths,
            "vision_lengths": self.vision_lengths,
        }
        if self.text_bert is not None:
            out["text_bert"] = self.text_bert
        if self.text is not None:
            out["text"] = self.text
        out.update({f"labels_{k}": v for k, v in self.labels.items()})
        return out


def normalise_id(raw: str) -> str:
    """``"{video}$_${clip}"`` (the feature files) and ``"{video}_{clip}"`` both become the latter."""
    return str(raw).replace("$_$", "_")


class _Checker:
    """Builds the one-sentence errors of a single file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, split: str, key: str, expected: str, found: str) -> FeatureFileError:
        return FeatureFileError(f"{self.path}: split {split!r}, key {key!r}: expected {expected}, found {found}")

    def array(self, split: str, key: str, value, ndim: int, what: str) -> np.ndarray:
        if isinstance(value, list):
            try:
                value = np.asarray(value)
            except ValueError:
                raise self.fail(split, key, what, "a ragged list") from None
        if not isinstance(value, np.ndarray) and hasattr(value, "numpy"):  # torch tensors
            value = value.numpy()
        if not isinstance(value, np.ndarray):
            raise self.fail(split, key, what, type(value).__name__)
        if value.dtype.kind not in "fiub":
            raise self.fail(split, key, what, f"dtype {value.dtype}")
        if value.ndim != ndim:
            raise self.fail(split, key, what, f"shape {value.shape}")
        return value


def read_feature_file(path: str | Path, spec: DatasetSpec | None = None) -> dict[str, SplitArrays]:
    """Load and validate a feature pickle; returns ``{"train": SplitArrays, "valid": ..., "test": ...}``.

    ``spec`` (optional) enables the label-range check of that dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"{path}: feature file not found")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as err:
        raise FeatureFileError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise FeatureFileError(f"{path}: expected a dict of splits {SPLITS}, found {type(data).__name__}")
    check = _Checker(path)
    out = {}
    for split in SPLITS:
        if split not in data:
            raise FeatureFileError(f"{path}: missing split {split!r} (found splits {sorted(map(str, data))})")
        if not isinstance(data[split], dict):
            raise FeatureFileError(
                f"{path}: split {split!r}: expected a dict of arrays, found {type(data[split]).__name__}"
            )
        out[split] = _read_split(check, split, data[split], spec)
        if len(out[split]) == 0:
            raise check.fail(split, "id", "at least one sample", "0 samples (an empty split)")
    _check_feature_sizes(check, out)
    return out


def _check_feature_sizes(check: _Checker, splits: dict[str, SplitArrays]) -> None:
    """Every split must carry the same feature sizes (a model is built for one ``audio_dim``...)."""
    first = SPLITS[0]
    for key in ("audio", "vision", "text"):
        arr = getattr(splits[first], key)
        for split in SPLITS[1:]:
            other = getattr(splits[split], key)
            if (arr is None) != (other is None):
                raise check.fail(
                    split,
                    key,
                    f"the key present in every split as in {first!r}",
                    f"present in {first!r}: {arr is not None}, in {split!r}: {other is not None}",
                )
            if arr is not None and other.shape[2] != arr.shape[2]:
                raise check.fail(
                    split,
                    key,
                    f"feature size {arr.shape[2]} (as in split {first!r})",
                    f"{other.shape[2]} (shape {tuple(other.shape)})",
                )


def split_overlaps(splits: dict[str, SplitArrays]) -> dict[str, list[str]]:
    """Ids the training split shares with ``valid``/``test`` (a leak): ``{"train/test": [ids], ...}``,
    only pairs that share some."""
    train = set(splits["train"].ids)
    out = {}
    for split in SPLITS[1:]:
        shared = [i for i in splits[split].ids if i in train]
        if shared:
            out[f"train/{split}"] = shared
    return out


def warn_overlaps(splits: dict[str, SplitArrays], where: str) -> dict[str, list[str]]:
    """Log a loud warning for every id the training split shares with an evaluation split."""
    overlaps = split_overlaps(splits)
    for pair, shared in overlaps.items():
        a, b = pair.split("/")
        log.warning(
            "LEAK in %s: %d utterance ids appear in both %r and %r (e.g. %s); evaluation on %r is not held out",
            where,
            len(shared),
            a,
            b,
            ", ".join(shared[:5]),
            b,
        )
    return overlaps


def _read_split(check: _Checker, split: str, d: dict, spec: DatasetSpec | None) -> SplitArrays:
    for key in ("id", "audio", "vision", "regression_labels"):
        if key not in d:
            raise check.fail(split, key, "the key to be present", f"keys {sorted(d)}")
    if "text_bert" not in d and "raw_text" not in d:
        raise check.fail(split, "text_bert", "'text_bert' or 'raw_text' to be present", f"keys {sorted(d)}")

    ids = [normalise_id(i) for i in list(d["id"])]
    n = len(ids)
    raw_text = list(d["raw_text"]) if "raw_text" in d else [""] * n
    if not all(isinstance(t, str) for t in raw_text):
        bad = next(type(t).__name__ for t in raw_text if not isinstance(t, str))
        raise check.fail(split, "raw_text", "a list of strings", f"an element of type {bad}")

    def per_sample(key: str, arr) -> None:
        if len(arr) != n:
            raise check.fail(split, key, f"{n} samples (the length of 'id')", f"{len(arr)}")

    per_sample("raw_text", raw_text)
    nonfinite: dict[str, int] = {}

    def features(key: str) -> np.ndarray:
        arr = check.array(split, key, d[key], 3, "a float array [N, T, D]")
        per_sample(key, arr)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        bad = ~np.isfinite(arr)
        count = int(bad.sum())
        if count:
            nonfinite[key] = count
            arr[bad] = 0.0
            log.warning(
                "%s: split %r, key %r: replaced %d non-finite values (NaN/inf) by 0", check.path, split, key, count
            )
        return arr

    audio, vision = features("audio"), features("vision")
    text = features("text") if d.get("text") is not None else None

    text_bert = None
    if d.get("text_bert") is not None:
        tb = check.array(split, "text_bert", d["text_bert"], 3, "an array [N, 3, L] of ids/mask/segments")
        per_sample("text_bert", tb)
        if tb.shape[1] != 3:
            raise check.fail(split, "text_bert", "an array [N, 3, L] of ids/mask/segments", f"shape {tb.shape}")
        if not np.isfinite(tb).all() or (tb < 0).any():
            raise check.fail(split, "text_bert", "non-negative token ids", "negative or non-finite values")
        text_bert = tb.astype(np.int64)

    def lengths(key: str, seq: np.ndarray) -> np.ndarray:
        if key not in d or d[key] is None:  # aligned files: every sequence is full length
            return np.full(n, seq.shape[1], dtype=np.int64)
        arr = np.asarray(d[key])
        if arr.dtype.kind not in "iuf" or arr.ndim != 1:
            raise check.fail(split, key, "N integer lengths", f"dtype {arr.dtype}, shape {arr.shape}")
        per_sample(key, arr)
        if (arr < 0).any() or (arr > seq.shape[1]).any():
            worst = int(arr.max()) if (arr > seq.shape[1]).any() else int(arr.min())
            raise check.fail(split, key, f"lengths in [0, {seq.shape[1]}] (the sequence length)", f"{worst}")
        return arr.astype(np.int64)

    audio_lengths, vision_lengths = lengths("audio_lengths", audio), lengths("vision_lengths", vision)

    labels = {}
    for name, key in LABEL_FILE_KEYS.items():
        if key not in d or d[key] is None:
            continue
        arr = np.asarray(d[key])
        if arr.dtype.kind not in "iuf":
            raise check.fail(split, key, "float labels", f"dtype {arr.dtype}")
        arr = arr.reshape(len(arr), -1)[:, 0] if arr.ndim > 1 else arr
        per_sample(key, arr)
        finite = np.isfinite(arr)
        if not finite.all():
            i = int(np.argmin(finite))
            raise check.fail(
                split,
                key,
                "finite labels",
                f"{float(arr[i])} at id {ids[i]!r} ({int((~finite).sum())} NaN/inf labels in all)",
            )
        if spec is not None:
            lo, hi = spec.label_range
            outside = (arr < lo - 1e-6) | (arr > hi + 1e-6)
            if outside.any():
                i = int(np.argmax(outside))
                raise check.fail(
                    split,
                    key,
                    f"labels in [{lo:g}, {hi:g}] for {spec.name}",
                    f"{float(arr[i]):g} at id {ids[i]!r} ({int(outside.sum())} outside)",
                )
        labels[name] = arr.astype(np.float32)

    return SplitArrays(
        ids=ids,
        raw_text=raw_text,
        text_bert=text_bert,
        audio=audio,
        vision=vision,
        audio_lengths=audio_lengths,
        vision_lengths=vision_lengths,
        labels=labels,
        text=text,
        nonfinite=nonfinite,
    )


# ---------------------------------------------------------------------------------------------- sizes only
#: numpy's functions that rebuild a pickled array (protocols <= 4: ``_reconstruct`` + state; 5: ``_frombuffer``)
_ARRAY_BUILDERS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
    for name in ("_reconstruct", "_frombuffer")
}
#: feature files larger than this are not read for their sizes (their bytes pass through memory once)
SIZES_READ_LIMIT = 2 << 30


class _ShapeOnly:
    """Stands in for a pickled numpy array: keeps its shape, drops its bytes (no array is built)."""

    def __init__(self, *args) -> None:
        # _frombuffer(buffer, dtype, shape, order); _reconstruct(ndarray, (0,), b"b") gets its shape in the state
        self.shape = tuple(args[2]) if len(args) == 4 else None

    def __setstate__(self, state) -> None:
        self.shape = tuple(state[1])


class _SizesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return _ShapeOnly if (module, name) in _ARRAY_BUILDERS else super().find_class(module, name)


def feature_sizes(path: str | Path) -> tuple[int, int] | None:
    """``(audio_dim, vision_dim)`` of a feature pickle's train split, read without building its arrays (a
    pipeline checks its stages' sizes with it before anything runs). None when the file is missing, larger than
    :data:`SIZES_READ_LIMIT`, or not of the field's layout: the reader reports those when the stage runs."""
    path = Path(path)
    try:
        if path.stat().st_size > SIZES_READ_LIMIT:
            log.info("%s: feature sizes not checked ahead (a pickle of %d bytes)", path, path.stat().st_size)
            return None
        with open(path, "rb") as f:
            train = _SizesUnpickler(f).load()["train"]
        sizes = tuple(int(train[key].shape[2]) for key in ("audio", "vision"))
    except Exception:  # noqa: BLE001 (any unreadable or odd file: unknown here, reported by the stage itself)
        return None
    return sizes  # type: ignore[return-value]
