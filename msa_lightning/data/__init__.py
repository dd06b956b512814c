"""Feature files, validation, memory-mapped cache, synthetic data, training order and DataModules.

The names below are imported on first use (``from msa_lightning.data import MOSIDataModule`` imports
Lightning then), so tools that only read feature files (``msa data inspect``) stay light.
"""

from __future__ import annotations

import importlib

from msa_lightning.deprecated import moved_names

#: public name -> the submodule that defines it
_EXPORTS = {
    "DataFacts": "base",
    "SuiteDataModule": "base",
    "follow_data": "base",
    "ensure_cache": "cache",
    "load_cached": "cache",
    "MOSEIDataModule": "datamodule",
    "MOSIDataModule": "datamodule",
    "MSADataModule": "datamodule",
    "SIMSDataModule": "datamodule",
    "tokenize_cached": "datamodule",
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

#: names this package exported in release 0.1 that now live in a paper's package
_moved = moved_names(__name__, {"MOSIASRDataModule": "msa_lightning.papers.swrm.data"})


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        return _moved(name)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
