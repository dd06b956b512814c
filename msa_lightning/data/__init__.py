"""Feature files, validation, memory-mapped cache, synthetic data, training order and DataModules.

The names below are imported on first use (``from msa_lightning.data import MOSIDataModule`` imports
Lightning then), so tools that only read feature files (``msa data inspect``) stay light.
"""

from __future__ import annotations

import importlib

#: public name -> the submodule that defines it
_EXPORTS = {
    "ensure_cache": "cache",
    "load_cached": "cache",
    "MOSEIDataModule": "datamodule",
    "MOSIDataModule": "datamodule",
    "MSADataModule": "datamodule",
    "SIMSDataModule": "datamodule",
    "tokenize_cached": "datamodule",
    "MOSIASRDataModule": "mosi_asr",
    "FeatureFileError": "reader",
    "SplitArrays": "reader",
    "normalise_id": "reader",
    "read_feature_file": "reader",
    "split_overlaps": "reader",
    "EpochBatchSampler": "sampling",
    "ResumableDataLoader": "sampling",
    "DATASETS": "specs",
    "DatasetSpec": "specs",
    "get_spec": "specs",
    "make_synthetic": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
