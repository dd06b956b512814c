"""A memory-mapped cache of feature files.

A pickle must be unpickled whole into every process that reads it: 8 DDP ranks with 4 loader
workers each would hold 8 (or more) copies of MOSEI's several GB. Instead, :func:`ensure_cache`
validates a pickle once and writes each array to its own ``.npy`` file under a folder named by the
pickle's content hash; :func:`load_cached` opens them with ``mmap_mode="r"``, so every rank and
worker shares the operating system's page cache of one copy.

Layout: ``{cache_dir}/{sha256[:20]}/{split}/{array}.npy`` plus ``meta.json`` (ids, raw text,
non-finite counts). The folder is written under a temporary name and renamed when complete, so a
crashed or concurrent conversion never leaves a half-written cache behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from msa_lightning.data.reader import SplitArrays, read_feature_file
from msa_lightning.data.specs import SPLITS, DatasetSpec

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("MSA_CACHE_DIR", Path.home() / ".cache" / "msa_lightning"))
CACHE_VERSION = 1


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a unique temporary file beside ``path``, then rename it into place, so
    readers (other ranks, workers, a later run after a crash) only ever see complete files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_hash(path: str | Path, memo_dir: str | Path | None = None, chunk: int = 1 << 24) -> str:
    """SHA-256 of the file's bytes, memoised in ``memo_dir`` by (path, size, mtime) so large files hash once."""
    path = Path(path).resolve()
    stat = path.stat()
    memo = Path(memo_dir or DEFAULT_CACHE_DIR) / "hashes.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    value = digest.hexdigest()
    try:
        known[key] = value
        atomic_write(memo, lambda tmp: tmp.write_text(json.dumps(known)))
    except OSError:  # a read-only home is fine: we just hash again next time
        pass
    return value


def cache_folder(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
    return cache_dir / f"v{CACHE_VERSION}-{file_hash(path, cache_dir)[:20]}"


def ensure_cache(path: str | Path, spec: DatasetSpec | None = None, cache_dir: str | Path | None = None) -> Path:
    """Convert ``path`` into the cache unless it is already there; returns the cache folder."""
    folder = cache_folder(path, cache_dir)
    if (folder / "meta.json").is_file():
        return folder
    splits = read_feature_file(path, spec)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        meta = {"source": str(Path(path).resolve()), "version": CACHE_VERSION, "splits": {}}
        for split, arrays in splits.items():
            (tmp / split).mkdir()
            for name, arr in arrays.arrays().items():
                np.save(tmp / split / f"{name}.npy", arr)
            meta["splits"][split] = {"ids": arrays.ids, "raw_text": arrays.raw_text,
                                     "nonfinite": arrays.nonfinite, "labels": sorted(arrays.labels)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("cached %s -> %s", path, folder)
    return folder


def load_cached(folder: str | Path, mmap: bool = True) -> dict[str, SplitArrays]:
    """Open a cache folder written by :func:`ensure_cache` (arrays memory-mapped read-only)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    mode = "r" if mmap else None
    out = {}
    for split in SPLITS:
        m = meta["splits"][split]
        d = folder / split

        def arr(name: str):
            f = d / f"{name}.npy"
            return np.load(f, mmap_mode=mode) if f.is_file() else None

        out[split] = SplitArrays(
            ids=m["ids"], raw_text=m["raw_text"], text_bert=arr("text_bert"), audio=arr("audio"),
            vision=arr("vision"), audio_lengths=np.asarray(arr("audio_lengths")),
            vision_lengths=np.asarray(arr("vision_lengths")),
            labels={k: np.asarray(arr(f"labels_{k}")) for k in m["labels"]}, text=arr("text"),
            nonfinite=m["nonfinite"],
        )
    return out
