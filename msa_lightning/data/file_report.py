"""A text report of a feature file (``msa data inspect``): shapes, lengths, non-finite counts, overlaps between splits,
label histograms."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from msa_lightning.data.custom import spec_for
from msa_lightning.data.reader import read_feature_file, split_overlaps


def inspect_file(path: str | Path, dataset: str | None = None, bins: int = 7) -> str:
    """A text report of a feature file: shapes, lengths, non-finite counts, label histograms."""
    spec = spec_for(dataset, path)
    reader_log = logging.getLogger("msa_lightning.data.reader")
    level = reader_log.level
    reader_log.setLevel(logging.ERROR)  # the counts are in the report; only for this read
    try:
        splits = read_feature_file(path, spec)
    finally:
        reader_log.setLevel(level)
    lines = [f"# {path}" + (f" ({spec.name})" if spec else "")]

    for pair, shared in split_overlaps(splits).items():  # a leak: evaluation on samples seen in training
        a, b = pair.split("/")
        lines.append(f"LEAK: {len(shared)} utterance ids appear in both {a!r} and {b!r} (e.g. {', '.join(shared[:5])})")
    for name, s in splits.items():
        lines.append(f"\n## {name}: {len(s)} samples")
        for key, arr in s.arrays().items():
            lines.append(f"  {key:16s} shape {tuple(arr.shape)} dtype {arr.dtype}")
        for key in ("audio", "vision"):
            ln = getattr(s, f"{key}_lengths")
            lines.append(
                f"  {key} lengths: min {ln.min()}, mean {ln.mean():.1f}, max {ln.max()} "
                f"(padded to {getattr(s, key).shape[1]})"
            )
        if s.text_bert is not None:
            tl = s.text_bert[:, 1].sum(1)
            lines.append(
                f"  text tokens: min {tl.min()}, mean {tl.mean():.1f}, max {tl.max()} (padded to "
                f"{s.text_bert.shape[2]})"
            )
        lines.append(
            "  non-finite values replaced by 0: " + (", ".join(f"{k}={v}" for k, v in s.nonfinite.items()) or "none")
        )
        for key, y in s.labels.items():
            lo, hi = spec.label_range if spec else (float(y.min()), float(y.max()))
            hist, edges = np.histogram(y, bins=bins, range=(lo, hi) if hi > lo else None)
            lines.append(
                f"  labels {key}: mean {y.mean():+.3f}, zeros {int((y == 0).sum())}, "
                f"neg {int((y < 0).sum())}, pos {int((y > 0).sum())}"
            )
            width = max(hist.max(), 1)
            for count, a, b in zip(hist, edges[:-1], edges[1:]):
                lines.append(f"    [{a:+.2f}, {b:+.2f}) {count:6d} " + "#" * int(round(40 * count / width)))
    return "\n".join(lines)
