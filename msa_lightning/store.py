"""One on-disk store for every derived array of the suite (feature caches, tokens, SWRM positions,
exports, frozen features, stage activations).

One keying rule: an entry's key is the SHA-256 of the canonical JSON of ``{kind, format version of
that kind, inputs}``, where ``inputs`` holds the *content hashes* of the input files and every
setting that shaped the result (dataset spec, tokenizer, max length, lexicon fingerprint,
checkpoint hash, ...). Changing any of them gives a new entry; nothing is trusted by file name or
path alone.

Layout: ``{root}/{kind}/{key[:24]}/`` holds one ``.npy`` file per array (a name such as
``"train/audio"`` becomes ``train/audio.npy``) and ``meta.json`` (kind, format version, inputs,
creation time, array shapes and the caller's meta). An entry is written under a temporary folder
and renamed into place when complete, so readers (other DDP ranks, loader workers, a later run
after a crash) only ever see complete entries; when two processes build the same entry at once,
the first rename wins and the other's copy is discarded. Arrays are read memory-mapped, so every
rank and worker shares the operating system's page cache of one copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

DEFAULT_ROOT = Path(os.environ.get("MSA_CACHE_DIR", Path.home() / ".cache" / "msa_lightning"))

#: Format version of each kind of entry: bump one when the layout or the meaning of its arrays
#: changes, and every old entry of that kind stops matching (it enters every key).
FORMAT_VERSIONS: dict[str, int] = {
    "features": 2,  # validated feature file: "{split}/{array}" + meta splits (ids, raw text, ...)
    "tokens": 1,  # re-tokenised text: "ids" [N, 3, L]
    "swrm_topk": 1,  # SWRM masked-LM top-k per word of a set of texts (one shard)
    "swrm_positions": 1,  # SWRM s, p, candidates of one list of texts
    "export": 1,  # model outputs per split ("{split}/{output}")
    "frozen_features": 1,  # outputs of a frozen extractor
    "stage_features": 1,  # activations of an earlier stage of a multi-stage experiment
    "skesl_masked": 1,  # SKESL sentiment word masking of a list of texts: ids, target, label, from_lexicon, word
    "skesl_corpus": 1,  # SKESL corpus: fixed-length audio/vision frames, lengths, ids, texts; bad clips in meta
    "raw_media": 1,  # one decoded clip: "frames" [T, H, W, 3] uint8, "audio" [S] float32 (media/decode.py, data/raw.py)
    "clip_features": 1,  # one clip's audio or vision features "features" [T, D] (corpus/extract.py)
    "clip_transcript": 2,  # one clip's ASR transcript (meta "text"[, "words"]; corpus/extract.py); 2: whole clips
}

META_FILE = "meta.json"
HASH_MEMO = "hashes.json"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a unique temporary file beside ``path``, then rename it into place, so
    readers only ever see complete files."""
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


_memo: dict[str, str] = {}


def content_hash(path: str | Path, memo_dir: str | Path | None = None, chunk: int = 1 << 24) -> str:
    """SHA-256 of a file's bytes, memoised by (path, size, mtime_ns) in this process and in
    ``{memo_dir}/hashes.json`` (default :data:`DEFAULT_ROOT`), so a large file is hashed once."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if key in _memo:
        return _memo[key]
    memo = Path(memo_dir or DEFAULT_ROOT) / HASH_MEMO
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        known[key] = digest.hexdigest()
        try:
            atomic_write(memo, lambda tmp: tmp.write_text(json.dumps(known)))
        except OSError:  # a read-only cache folder is fine: we just hash again next time
            pass
    _memo[key] = known[key]
    return known[key]


def local_fingerprint(name: str | None, memo_dir: str | Path | None = None) -> dict[str, str] | None:
    """Content hashes of a local model/tokenizer given by path (``{file name: sha256}``, every file of
    a folder), so an entry follows the files rather than the path; None for hub names."""
    if not isinstance(name, (str, Path)):
        return None
    path = Path(name).expanduser()
    if path.is_file():
        return {path.name: content_hash(path, memo_dir)}
    if path.is_dir():
        return {str(f.relative_to(path)): content_hash(f, memo_dir) for f in sorted(path.rglob("*")) if f.is_file()}
    return None


def canonical_json(value) -> str:
    """Sorted keys, no whitespace; paths, tuples and numpy scalars written as plain JSON values."""

    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, (set, frozenset)):
            return sorted(v)
        raise TypeError(f"store inputs must be JSON values, found {type(v).__name__}: {v!r}")

    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=plain)


class Entry:
    """A complete store entry: a folder of ``.npy`` arrays and its ``meta.json``."""

    def __init__(self, path: str | Path, meta: dict | None = None) -> None:
        self.path = Path(path)
        self.meta = meta if meta is not None else json.loads((self.path / META_FILE).read_text())

    @property
    def names(self) -> list[str]:
        return list(self.meta.get("arrays", {}))

    def file(self, name: str) -> Path:
        return self.path / f"{name}.npy"

    def __getitem__(self, name: str) -> np.ndarray:
        """The array ``name``, memory-mapped read-only."""
        if name not in self.meta.get("arrays", {}):
            raise KeyError(f"{self.path}: no array {name!r} (has {self.names})")
        return np.load(self.file(name), mmap_mode="r")

    def __contains__(self, name: str) -> bool:
        return name in self.meta.get("arrays", {})

    def arrays(self, mmap: bool = True) -> dict[str, np.ndarray]:
        """Every array by name (memory-mapped read-only, or read into memory with ``mmap=False``)."""
        return {name: np.load(self.file(name), mmap_mode="r" if mmap else None) for name in self.names}

    def __repr__(self) -> str:
        return f"Entry({self.meta.get('kind')!r}, {str(self.path)!r})"


class Store:
    """Content-keyed entries of arrays under ``root`` (default :data:`DEFAULT_ROOT`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else DEFAULT_ROOT

    def content_hash(self, path: str | Path) -> str:
        """:func:`content_hash` memoised in this store's root."""
        return content_hash(path, self.root)

    def key(self, kind: str, inputs: Mapping) -> str:
        if kind not in FORMAT_VERSIONS:
            raise ValueError(
                f"unknown store kind {kind!r}; known kinds: {sorted(FORMAT_VERSIONS)} "
                "(add yours to msa_lightning.store.FORMAT_VERSIONS)"
            )
        text = canonical_json({"kind": kind, "version": FORMAT_VERSIONS[kind], "inputs": dict(inputs)})
        return hashlib.sha256(text.encode()).hexdigest()

    def folder(self, kind: str, inputs: Mapping) -> Path:
        return self.root / kind / self.key(kind, inputs)[:24]

    def get(self, kind: str, inputs: Mapping) -> Entry | None:
        """The complete entry for ``(kind, inputs)``, or None."""
        folder = self.folder(kind, inputs)
        try:
            return Entry(folder)
        except (OSError, ValueError):  # absent (or, never expected, unreadable meta)
            return None

    def put(self, kind: str, inputs: Mapping, arrays: Mapping[str, np.ndarray], meta: Mapping | None = None) -> Entry:
        """Write an entry atomically (temporary folder + rename); if another process wrote the same
        entry first, theirs is kept and returned."""
        folder = self.folder(kind, inputs)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        try:
            shapes = {}
            for name, arr in arrays.items():
                if not name or name.startswith("/") or ".." in name.split("/"):
                    raise ValueError(f"bad array name {name!r}")
                arr = np.asarray(arr)
                file = tmp / f"{name}.npy"
                file.parent.mkdir(parents=True, exist_ok=True)
                np.save(file, arr, allow_pickle=False)
                shapes[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
            record = {
                **dict(meta or {}),
                "kind": kind,
                "format_version": FORMAT_VERSIONS[kind],
                "key": self.key(kind, inputs),
                "inputs": json.loads(canonical_json(dict(inputs))),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "arrays": shapes,
            }
            (tmp / META_FILE).write_text(canonical_json(record))
            try:
                os.rename(tmp, folder)
            except OSError:  # the folder exists: another process finished first
                if not (folder / META_FILE).is_file():  # a stale incomplete folder: replace it
                    shutil.rmtree(folder, ignore_errors=True)
                    os.rename(tmp, folder)
                else:
                    shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Entry(folder)

    def get_or_build(
        self, kind: str, inputs: Mapping, build: Callable[[], tuple[Mapping[str, np.ndarray], Mapping]]
    ) -> Entry:
        """The entry for ``(kind, inputs)``; ``build()`` -> ``(arrays, meta)`` runs only when it is absent."""
        entry = self.get(kind, inputs)
        if entry is None:
            arrays, meta = build()
            entry = self.put(kind, inputs, arrays, meta)
        return entry

    def entries(self, kind: str) -> Iterator[Entry]:
        """Every complete entry of ``kind`` (for kinds made of several entries, such as shards)."""
        for meta in sorted((self.root / kind).glob(f"*/{META_FILE}")):
            try:
                yield Entry(meta.parent)
            except (OSError, ValueError):
                continue
