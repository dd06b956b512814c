"""OpenFace 2.x ``FeatureExtraction`` CSVs: five metadata columns (``frame, face_id, timestamp, confidence,
success``) then 709 features: gaze 8, eye landmarks 2-D 112 and 3-D 168, head pose 6, face landmarks 2-D
136 and 3-D 204, shape parameters 40, AU intensities 17, AU presence 18 (:func:`openface_columns`). Some
OpenFace builds write a space after every comma; both spellings are read. Frames where OpenFace reports
``success == 0`` (no face tracked) are zeroed, not dropped, so frame ``i`` keeps its time stamp; a clip
with no tracked face at all is a :class:`~msa_lightning.errors.ClipError` (``no_face``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from msa_lightning.errors import ClipError

META_COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success")


VISION_DIM = 709


_AU_INTENSITY = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45")


_AU_PRESENCE = (
    "01",
    "02",
    "04",
    "05",
    "06",
    "07",
    "09",
    "10",
    "12",
    "14",
    "15",
    "17",
    "20",
    "23",
    "25",
    "26",
    "28",
    "45",
)


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
        raise ClipError(
            f"{path}: not an OpenFace 2.x CSV: expected {len(_COLUMNS)} columns (5 metadata + "
            f"{VISION_DIM} features), found {found}",
            "wrong_columns",
        )
    if rows.size and rows.shape[1] != len(_COLUMNS):
        raise ClipError(f"{path}: rows have {rows.shape[1]} values, the header {len(_COLUMNS)}", "unreadable_csv")
    if rows.size == 0:
        raise ClipError(f"{path}: no frames", "no_face")
    success = rows[:, META_COLUMNS.index("success")] > 0.5
    if not success.any():
        raise ClipError(f"{path}: no frame with a tracked face (success is 0 in all {len(rows)} frames)", "no_face")
    features = rows[:, len(META_COLUMNS) :].astype(np.float32)
    features[~success] = 0.0
    if not np.isfinite(features).all():
        raise ClipError(f"{path}: non-finite feature values", "bad_features")
    return features, success


def write_openface_csv(
    path: str | Path, features: np.ndarray, success: np.ndarray | None = None, spaced: bool = False, fps: float = 25.0
) -> Path:
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
