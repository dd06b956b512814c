"""The memory-mapped feature cache: validated feature files as store entries (kind ``features``).

A pickle must be unpickled whole into every process that reads it: 8 DDP ranks with 4 loader
workers each would hold 8 (or more) copies of MOSEI's several GB. Instead, :func:`ensure_cache`
validates a pickle once and writes each array to the :class:`~msa_lightning.store.Store`;
:func:`load_cached` opens them with ``mmap_mode="r"``, so every rank and worker shares the
operating system's page cache of one copy.

The entry is keyed by the file's *content* and by the dataset spec it was validated against (and
the store's format version of this kind): a file converted as MOSI and then opened as CH-SIMS is
validated again (and fails with the reader's error if its labels do not fit CH-SIMS).
Arrays are named ``{split}/{array}``; the meta record holds each split's ids, raw text, non-finite
counts and label keys.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from msa_lightning.data.reader import SplitArrays, read_feature_file
from msa_lightning.data.specs import SPLITS, DatasetSpec
from msa_lightning.store import DEFAULT_ROOT, Entry, Store

log = logging.getLogger(__name__)

#: kept for callers that pointed tests at another folder (``monkeypatch.setattr(cache, "DEFAULT_CACHE_DIR", ...)``)
DEFAULT_CACHE_DIR = DEFAULT_ROOT
KIND = "features"


def _store(cache_dir: str | Path | None) -> Store:
    return Store(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR)


def cache_inputs(path: str | Path, spec: DatasetSpec | None, store: Store) -> dict:
    """What a feature-cache entry depends on: the file's bytes and the spec it was validated against."""
    return {"file": store.content_hash(path), "spec": dataclasses.asdict(spec) if spec is not None else None}


def ensure_cache(path: str | Path, spec: DatasetSpec | None = None, cache_dir: str | Path | None = None) -> Path:
    """Validate ``path`` (against ``spec``) into the cache unless that is already done; returns the entry folder."""
    store = _store(cache_dir)
    inputs = cache_inputs(path, spec, store)

    def build():
        splits = read_feature_file(path, spec)
        arrays, meta = {}, {"source": str(Path(path).resolve()), "splits": {}}
        for split, s in splits.items():
            arrays.update({f"{split}/{name}": arr for name, arr in s.arrays().items()})
            meta["splits"][split] = {
                "ids": s.ids,
                "raw_text": s.raw_text,
                "nonfinite": s.nonfinite,
                "labels": sorted(s.labels),
            }
        log.info("validated %s%s into the cache", path, f" as {spec.name}" if spec else "")
        return arrays, meta

    return store.get_or_build(KIND, inputs, build).path


def load_cached(folder: str | Path, mmap: bool = True) -> dict[str, SplitArrays]:
    """Open a cache entry written by :func:`ensure_cache` (arrays memory-mapped read-only)."""
    entry = Entry(folder)
    arrays = entry.arrays(mmap=mmap)
    out = {}
    for split in SPLITS:
        m = entry.meta["splits"][split]

        def arr(name: str):
            return arrays.get(f"{split}/{name}")

        out[split] = SplitArrays(
            ids=m["ids"],
            raw_text=m["raw_text"],
            text_bert=arr("text_bert"),
            audio=arr("audio"),
            vision=arr("vision"),
            audio_lengths=arr("audio_lengths"),
            vision_lengths=arr("vision_lengths"),
            labels={k: arr(f"labels_{k}") for k in m["labels"]},
            text=arr("text"),
            nonfinite=m["nonfinite"],
        )
    return out
