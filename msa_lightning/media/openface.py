"""OpenFace 2.x ``FeatureExtraction`` CSVs, in every variant its releases write.

A full 2.x CSV has five metadata columns (``frame, face_id, timestamp, confidence, success``) then 709
features in ten groups (:data:`GROUPS`): gaze vectors 6 and gaze angles 2, eye landmarks 2-D 112 and 3-D 168,
head pose 6, face landmarks 2-D 136 and 3-D 204, shape parameters 40, AU intensities 17, AU presence 18
(:func:`openface_columns`). These 709 are CH-SIMS's visual features and SKESL's (Qian et al., Section 4.2).

The variants real files come in, all read by column *name* (:func:`read_openface`):

* a space after every comma (``", "``, most builds) or none (``","``);
* with or without ``face_id`` (2.0 releases have none; ``FaceLandmarkVidMulti`` writes several faces per frame,
  of which the most confident tracked one is kept);
* the **layout** (:data:`LAYOUTS`): ``openface2`` (709, 2.1 and later) or ``openface2.0`` (427: the 2.0 releases
  wrote neither gaze angles nor eye landmarks: 431 columns with the four metadata ones).

A file run with only some output flags (``-aus``, ``-pose``, ...) lacks whole groups: it is one
:class:`~msa_lightning.errors.ClipError` (``wrong_columns``) naming the missing group and the flag that writes
it, never "not an OpenFace file". Frames where OpenFace reports ``success == 0`` (no face tracked) are zeroed,
not dropped, so frame ``i`` keeps its time stamp.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msa_lightning.errors import ClipError

META_COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success")

_AU_INTENSITY = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45")
_AU_PRESENCE = _AU_INTENSITY[:16] + ("28", "45")


@dataclass(frozen=True)
class Group:
    """One group of OpenFace output columns and the ``FeatureExtraction`` flag that writes it."""

    name: str
    flag: str
    columns: tuple[str, ...]


#: the feature groups in the order a full 2.x CSV writes them
GROUPS = (
    Group("gaze vectors", "-gaze", tuple(f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz")),
    Group("gaze angles", "-gaze", ("gaze_angle_x", "gaze_angle_y")),
    Group("eye landmarks 2-D", "-gaze", tuple(f"eye_lmk_{a}_{i}" for a in "xy" for i in range(56))),
    Group("eye landmarks 3-D", "-gaze", tuple(f"eye_lmk_{a}_{i}" for a in "XYZ" for i in range(56))),
    Group("head pose", "-pose", tuple(f"pose_{a}" for a in ("Tx", "Ty", "Tz", "Rx", "Ry", "Rz"))),
    Group("face landmarks 2-D", "-2Dfp", tuple(f"{a}_{i}" for a in "xy" for i in range(68))),
    Group("face landmarks 3-D", "-3Dfp", tuple(f"{a}_{i}" for a in "XYZ" for i in range(68))),
    Group(
        "shape parameters",
        "-pdmparams",
        ("p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty", *(f"p_{i}" for i in range(34))),
    ),
    Group("AU intensities", "-aus", tuple(f"AU{n}_r" for n in _AU_INTENSITY)),
    Group("AU presence", "-aus", tuple(f"AU{n}_c" for n in _AU_PRESENCE)),
)
_BY_NAME = {g.name: g for g in GROUPS}

#: layouts a real release writes: name -> its groups (feature size = their columns)
LAYOUTS: dict[str, tuple[str, ...]] = {
    "openface2": tuple(g.name for g in GROUPS),
    "openface2.0": tuple(
        g.name for g in GROUPS if g.name not in ("gaze angles", "eye landmarks 2-D", "eye landmarks 3-D")
    ),
}


def layout_columns(layout: str = "openface2") -> list[str]:
    """The feature columns of ``layout``, in order."""
    return [c for name in LAYOUTS[layout] for c in _BY_NAME[name].columns]


def layout_dim(layout: str) -> int:
    return len(layout_columns(layout))


VISION_DIM = layout_dim("openface2")  # 709


def openface_columns() -> list[str]:
    """The 714 column names of a full OpenFace 2.x ``FeatureExtraction`` CSV, in order."""
    return [*META_COLUMNS, *layout_columns("openface2")]


_COLUMNS = openface_columns()
_KNOWN = set(_COLUMNS)


@dataclass
class OpenFaceFrames:
    """One CSV's frames: ``features [T, D]`` float32 (untracked frames zeroed), ``success [T]`` bool, the
    ``layout`` it matched (``D = layout_dim(layout)``) and the frame rate."""

    features: np.ndarray
    success: np.ndarray
    layout: str
    #: frames per second, from the ``timestamp`` column (OpenFace writes the video's rate; 30 without one)
    frame_rate: float = 30.0


def _read_header(path: Path) -> list[str]:
    try:
        with path.open("r", encoding="utf-8-sig") as handle:  # a BOM is not part of the first column's name
            return [name.strip() for name in handle.readline().split(",")]
    except (OSError, UnicodeDecodeError) as err:
        raise ClipError(f"{path}: unreadable OpenFace CSV ({type(err).__name__}: {err})", "unreadable_csv") from None


def header_layout(path: str | Path, header: list[str] | None = None) -> str:
    """The layout of an OpenFace CSV from its header (the first line only): ``openface2`` or ``openface2.0``.

    Raises:
        ClipError (``wrong_columns``): a file that is not OpenFace's (no ``frame``/``success`` columns), or one
            whose groups match no layout: the message names the first missing group and the flag that writes it.
    """
    path = Path(path)
    header = _read_header(path) if header is None else header
    names = set(header)
    missing_meta = [c for c in ("frame", "success") if c not in names]
    if missing_meta:
        raise ClipError(
            f"{path}: not an OpenFace 2.x CSV: no column {missing_meta[0]!r} (found {len(header)} columns, "
            f"the first {header[:3]})",
            "wrong_columns",
        )
    present = []
    for group in GROUPS:
        have = [c for c in group.columns if c in names]
        if len(have) == len(group.columns):
            present.append(group.name)
        elif have:
            lacking = [c for c in group.columns if c not in names]
            unknown = [c for c in header if c not in _KNOWN]
            raise ClipError(
                f"{path}: OpenFace group {group.name!r} is incomplete: no column {lacking[0]!r}"
                + (f" ({len(lacking)} missing)" if len(lacking) > 1 else "")
                + (f"; unknown columns {unknown[:3]}" if unknown else ""),
                "wrong_columns",
            )
    for layout, groups in LAYOUTS.items():
        if set(groups) == set(present):
            return layout
    # the closest layout a run with fewer flags fell short of: name what it lacks and the flag that writes it
    missing = [name for name in LAYOUTS["openface2.0"] if name not in present] or [
        name for name in LAYOUTS["openface2"] if name not in present
    ]
    group = _BY_NAME[missing[0]]
    return _refuse(path, group, missing)


def _refuse(path: Path, group: Group, missing: list[str]) -> str:
    flags = sorted({_BY_NAME[m].flag for m in missing})
    raise ClipError(
        f"{path}: this OpenFace CSV has no {group.name} ({group.columns[0]} ...)"
        + (f" and no {', '.join(m for m in missing[1:])}" if len(missing) > 1 else "")
        + f": run FeatureExtraction with {' '.join(flags)} (or with no output flag at all, which writes every group)",
        "wrong_columns",
    )


def read_openface(
    path: str | Path, layout: str | None = None, allow_no_face: bool = False, require: str | None = None
) -> OpenFaceFrames:
    """An OpenFace 2.x CSV of any variant (module docstring), as ``[T, D]`` features of its layout.

    Args:
        layout: the layout the file must have (its features are then that layout's columns); None: the file's own.
        allow_no_face: a file with no tracked frame gives all-zero features instead of a ``no_face`` error.
        require: with ``layout``, the name of what needs it (for the error of another layout).

    Raises:
        ClipError: ``unreadable_csv`` (unreadable file or rows), ``wrong_columns`` (:func:`header_layout`, or
            another layout than ``layout``), ``no_face`` (no frames, or no tracked face unless allowed),
            ``bad_features`` (non-finite values).
    """
    path = Path(path)
    header = _read_header(path)
    found = header_layout(path, header)
    if layout is not None and found != layout:
        missing = [g for g in LAYOUTS[layout] if g not in LAYOUTS[found]]
        if missing:
            _refuse(path, _BY_NAME[missing[0]], missing)
        raise ClipError(
            f"{path}: an {found} CSV ({layout_dim(found)} features) where {require or 'this run'} needs "
            f"{layout} ({layout_dim(layout)})",
            "wrong_columns",
        )
    try:
        with path.open("r", encoding="utf-8-sig") as handle:
            handle.readline()
            with warnings.catch_warnings():  # a header without rows is reported below, as a clip without frames
                warnings.simplefilter("ignore", UserWarning)
                rows = np.loadtxt(handle, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ClipError(f"{path}: unreadable OpenFace CSV ({detail})", "unreadable_csv") from None
    if rows.size and rows.shape[1] != len(header):
        raise ClipError(f"{path}: rows have {rows.shape[1]} values, the header {len(header)}", "unreadable_csv")
    if rows.size == 0:
        raise ClipError(f"{path}: no frames", "no_face")
    column = {name: i for i, name in enumerate(header)}
    rows = _one_face_per_frame(rows, column)
    success = rows[:, column["success"]] > 0.5
    if not success.any() and not allow_no_face:
        raise ClipError(f"{path}: no frame with a tracked face (success is 0 in all {len(rows)} frames)", "no_face")
    features = rows[:, [column[c] for c in layout_columns(found)]].astype(np.float32)
    features[~success] = 0.0
    if not np.isfinite(features).all():
        raise ClipError(f"{path}: non-finite feature values", "bad_features")
    rate = 30.0
    if "timestamp" in column and len(rows) > 1:
        step = float(np.median(np.diff(rows[:, column["timestamp"]])))
        rate = 1.0 / step if step > 0 else rate
    return OpenFaceFrames(features, success, found, rate)


def _one_face_per_frame(rows: np.ndarray, column: dict[str, int]) -> np.ndarray:
    """Rows of several faces per frame (``FeatureExtraction`` on a multi-face video, ``FaceLandmarkVidMulti``):
    per frame the tracked face of the highest confidence, frames in order."""
    frame = rows[:, column["frame"]]
    if len(np.unique(frame)) == len(frame):
        return rows
    tracked = rows[:, column["success"]] > 0.5
    confidence = rows[:, column["confidence"]] if "confidence" in column else np.zeros(len(rows))
    order = np.lexsort((-confidence, ~tracked, frame))  # by frame; within one, tracked first, most confident first
    rows = rows[order]
    first = np.concatenate([[True], np.diff(rows[:, column["frame"]]) != 0])
    return rows[first]


def read_openface_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[T, 709]`` float32 (rows with ``success == 0`` zeroed) and ``success`` ``[T]`` bool of a full
    (``openface2``) CSV: what SKESL's corpus needs. Errors as :func:`read_openface`."""
    frames = read_openface(path, layout="openface2", require="a 709-d feature set (CH-SIMS, SKESL)")
    return frames.features, frames.success


def write_openface_csv(
    path: str | Path,
    features: np.ndarray,
    success: np.ndarray | None = None,
    spaced: bool = False,
    fps: float = 25.0,
    face_id: bool = True,
    layout: str = "openface2",
    without: tuple[str, ...] = (),
) -> Path:
    """An OpenFace-format CSV of ``features [T, layout_dim(layout)]`` (for synthetic corpora and tests):
    ``spaced`` writes ``", "`` between values as most builds do, ``face_id=False`` leaves that column out (2.0
    releases), ``without`` drops whole groups (a run with fewer output flags)."""
    features = np.asarray(features, dtype=np.float64)
    columns = layout_columns(layout)
    if features.ndim != 2 or features.shape[1] != len(columns):
        raise ValueError(f"features must be [T, {len(columns)}] for layout {layout}, got {features.shape}")
    t = len(features)
    success = np.ones(t, dtype=bool) if success is None else np.asarray(success, dtype=bool)
    meta = np.stack([np.arange(1, t + 1), np.zeros(t), np.arange(t) / fps, success * 0.98, success], axis=1)
    meta_names = list(META_COLUMNS)
    if not face_id:
        meta, meta_names = np.delete(meta, 1, axis=1), [c for c in meta_names if c != "face_id"]
    dropped = {c for name in without for c in _BY_NAME[name].columns}
    keep = [i for i, c in enumerate(columns) if c not in dropped]
    sep = ", " if spaced else ","
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.write(sep.join(meta_names + [columns[i] for i in keep]) + "\n")
        np.savetxt(handle, np.concatenate([meta, features[:, keep]], axis=1), delimiter=sep, fmt="%.6g")
    return path
