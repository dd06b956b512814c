"""Custom datasets: a feature file written by ``msa features extract`` from a user's own videos.

Beside ``FILE.pkl`` lies ``FILE.manifest.json`` (:func:`manifest_path`): the extraction settings (so ``msa infer``
extracts new videos the same way), package versions, every clip's problems by id, and the dataset facts the
field's specs hard-code for the shipped datasets: the label range (read from ``label.csv``, or given) and the
metric family. ``dataset: custom`` (``MSADataModule``, ``msa data inspect --dataset custom``) builds its
:class:`~msa_lightning.data.specs.DatasetSpec` from them (:func:`custom_spec`), so labels, splits and ids are
validated as for the shipped datasets.
"""

from __future__ import annotations

import json
from pathlib import Path

from msa_lightning.data.specs import DatasetSpec, get_spec
from msa_lightning.errors import ConfigError, DataError

CUSTOM = "custom"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "msa-features-1"


def manifest_path(feature_file: str | Path) -> Path:
    """``FILE.pkl`` -> ``FILE.manifest.json``."""
    path = Path(feature_file)
    return path.with_name(path.stem + MANIFEST_SUFFIX)


def read_features_manifest(feature_file: str | Path) -> dict | None:
    """The manifest beside a feature file, or None when there is none (a shipped file)."""
    path = manifest_path(feature_file)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable feature manifest ({type(err).__name__}: {err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: not a manifest of `msa features extract` (format {MANIFEST_FORMAT!r})")
    return manifest


def custom_spec(feature_file: str | Path) -> DatasetSpec:
    """The spec of a custom feature file, from its manifest (label range, metric family, sizes)."""
    manifest = read_features_manifest(feature_file)
    if manifest is None:
        raise ConfigError(
            f"dataset 'custom': {manifest_path(feature_file)} not found; dataset 'custom' reads the label range and "
            "metric family from the manifest `msa features extract` writes beside the feature file"
        )
    facts = manifest["dataset"]
    low, high = (float(v) for v in facts["label_range"])
    sizes = manifest["counts"]["splits"]
    return DatasetSpec(
        CUSTOM,
        facts["metric_family"],
        (low, high),
        int(manifest["settings"]["text_max_length"]),
        int(manifest["settings"]["audio"]["dim"]),
        int(manifest["audio_frames"]),
        int(manifest["settings"]["vision"]["dim"]),
        int(manifest["vision_frames"]),
        (int(sizes["train"]), int(sizes["valid"]), int(sizes["test"])),
        Path(feature_file).name,
        tuple(facts.get("unimodal_labels", ())),
    )


def spec_for(dataset: str | None, feature_file: str | Path) -> DatasetSpec | None:
    """The spec of ``dataset`` for ``feature_file``: a shipped dataset's, the custom one, or None without a name
    (then a file with a manifest is read as ``custom``)."""
    if dataset is None:
        return custom_spec(feature_file) if read_features_manifest(feature_file) is not None else None
    if dataset.lower() == CUSTOM:
        return custom_spec(feature_file)
    return get_spec(dataset)
