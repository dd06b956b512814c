"""``label.csv`` of the raw releases (CH-SIMS, CH-SIMS v2, MOSI) and of custom datasets::

    video_id, clip_id, text, label[, label_T, label_A, label_V], mode, ...

``mode`` names the split (``train``, ``valid``, ``test``); ``label`` is the multimodal label ``M`` and
``label_T/_A/_V`` the unimodal ones where the release has them. Read by :class:`~msa_lightning.data.raw.
RawMediaDataModule` and ``msa features extract``; kept free of heavy imports so a command that only checks its
input starts fast.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from msa_lightning.data.specs import SPLITS
from msa_lightning.errors import DataError
from msa_lightning.textfiles import open_text

#: label.csv column -> label key of the batch
LABEL_COLUMNS = {"label": "M", "label_T": "T", "label_A": "A", "label_V": "V"}
REQUIRED_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")


def read_labels(csv_path: Path) -> list[dict]:
    """Rows of ``label.csv``, checked: the required columns (one error naming the missing ones), a known
    ``mode``, every label a finite number, every clip listed once. Each problem is one :class:`DataError`
    naming the file, line, clip, split and column; a clip listed twice, above all under two modes (a test
    clip leaking into training), is never resolved by a guess. The file is UTF-8 (a BOM, CRLF tolerated)."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: label file not found")
    reader = csv.DictReader(open_text(csv_path, "label file"))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(
            f"{csv_path}: missing columns {missing} (expected at least {list(REQUIRED_COLUMNS)}, "
            f"found {reader.fieldnames})"
        )
    columns = [c for c in LABEL_COLUMNS if c in reader.fieldnames]
    first: dict[tuple[str, str], tuple[int, str]] = {}
    rows = []
    for row in reader:
        rows.append(row)
        number = reader.line_num  # the row's (last) line
        video, clip = (row["video_id"] or "").strip(), (row["clip_id"] or "").strip()
        where = f"{csv_path}, line {number}: clip {video}_{clip}"
        if row["mode"] not in SPLITS:
            raise DataError(f"{where}: mode {row['mode']!r} is not one of {list(SPLITS)}")
        for column in columns:
            value = row[column]
            try:
                label = float(value)
            except (TypeError, ValueError):
                label = None
            if label is None or not math.isfinite(label):
                raise DataError(
                    f"{where} (split {row['mode']!r}): column {column!r}: expected a finite number, "
                    f"found {'nothing (a short row)' if value is None else repr(value)}"
                )
        if (video, clip) in first:
            line, mode = first[(video, clip)]
            leak = (
                ""
                if mode == row["mode"]
                else (
                    f" (under mode {mode!r} there and {row['mode']!r} here: "
                    + (
                        "an evaluation clip would also be trained on)"
                        if "train" in (mode, row["mode"])
                        else "one clip would be evaluated in two splits)"
                    )
                )
            )
            raise DataError(f"{where} is listed again (first on line {line}){leak}; list each clip once")
        first[(video, clip)] = (number, row["mode"])
    return rows
