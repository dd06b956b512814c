"""The store of derived arrays: one keying rule, atomic entries, a meta record, memory-mapped reads."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from msa_lightning.store import FORMAT_VERSIONS, Entry, Store, content_hash


def test_put_get_roundtrip_is_memory_mapped(tmp_path):
    store = Store(tmp_path)
    arrays = {"train/audio": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "ids": np.array([3, 1], np.int64)}
    entry = store.put("features", {"file": "abc", "spec": None}, arrays, {"splits": {"train": {"ids": ["a", "b"]}}})
    assert entry.path.parent == tmp_path / "features" and (entry.path / "train" / "audio.npy").is_file()
    again = store.get("features", {"spec": None, "file": "abc"})  # key order does not matter
    assert again is not None and again.path == entry.path
    x = again["train/audio"]
    assert isinstance(x, np.memmap) and not x.flags.writeable and x.dtype == np.float32
    np.testing.assert_array_equal(x, arrays["train/audio"])
    loaded = again.arrays(mmap=False)
    assert set(loaded) == set(arrays) and not isinstance(loaded["ids"], np.memmap)
    meta = json.loads((entry.path / "meta.json").read_text())
    assert meta["kind"] == "features" and meta["inputs"] == {"file": "abc", "spec": None}
    assert meta["format_version"] == FORMAT_VERSIONS["features"] and meta["created"]
    assert meta["splits"]["train"]["ids"] == ["a", "b"]  # the caller's meta
    assert meta["arrays"]["train/audio"] == {"shape": [2, 3, 4], "dtype": "float32"}
    with pytest.raises(KeyError, match="no array 'nope'"):
        again["nope"]


def test_key_depends_on_kind_inputs_and_format_version(tmp_path, monkeypatch):
    store = Store(tmp_path)
    base = store.key("tokens", {"tokenizer": "tiny-bert", "max_length": 24, "texts": "h"})
    assert store.key("tokens", {"max_length": 24, "texts": "h", "tokenizer": "tiny-bert"}) == base
    assert store.key("tokens", {"tokenizer": "tiny-bert", "max_length": 25, "texts": "h"}) != base
    assert store.key("export", {"tokenizer": "tiny-bert", "max_length": 24, "texts": "h"}) != base
    monkeypatch.setitem(FORMAT_VERSIONS, "tokens", FORMAT_VERSIONS["tokens"] + 1)
    assert store.key("tokens", {"tokenizer": "tiny-bert", "max_length": 24, "texts": "h"}) != base
    with pytest.raises(ValueError, match="unknown store kind 'nonsense'"):
        store.key("nonsense", {})
    with pytest.raises(TypeError, match="JSON values"):
        store.key("tokens", {"x": object()})


def test_get_or_build_builds_once_and_failed_builds_leave_nothing(tmp_path):
    store = Store(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return {"x": np.ones(3)}, {"note": "hi"}

    a = store.get_or_build("tokens", {"k": 1}, build)
    b = store.get_or_build("tokens", {"k": 1}, build)
    assert len(calls) == 1 and a.path == b.path and b.meta["note"] == "hi"

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.get_or_build("tokens", {"k": 2}, broken)

    def half():  # the build fails while the entry is being written
        return {"x": np.ones(2), "../escape": np.ones(1)}, {}

    with pytest.raises(ValueError, match="bad array name"):
        store.get_or_build("tokens", {"k": 3}, half)
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == [a.path.name]  # no temp or partial folder
    assert store.get("tokens", {"k": 3}) is None


def test_incomplete_folder_is_not_an_entry_and_is_replaced(tmp_path):
    store = Store(tmp_path)
    folder = store.folder("tokens", {"k": 1})
    (folder / "x.npy").parent.mkdir(parents=True)
    np.save(folder / "x.npy", np.zeros(2))  # a crash before meta.json was written
    assert store.get("tokens", {"k": 1}) is None
    entry = store.put("tokens", {"k": 1}, {"x": np.ones(2)})
    np.testing.assert_array_equal(entry["x"], np.ones(2))


def _put_same_entry(root: str, value: float) -> str:
    entry = Store(root).put("tokens", {"k": "race"}, {"x": np.full(100_000, value)}, {"writer": value})
    return str(entry.path)


def test_concurrent_writers_keep_one_complete_entry(tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        paths = pool.starmap(_put_same_entry, [(str(tmp_path), 1.0), (str(tmp_path), 2.0)])
    assert paths[0] == paths[1]
    entry = Entry(paths[0])
    values = np.unique(entry["x"])
    assert len(values) == 1 and float(values[0]) == entry.meta["writer"]  # one writer's whole entry
    assert [p.name for p in (tmp_path / "tokens").iterdir()] == [Path(paths[0]).name]


def test_content_hash_follows_the_bytes(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"one")
    first = content_hash(f, tmp_path / "memo")
    assert first == content_hash(tmp_path / "." / "a.bin", tmp_path / "memo")
    assert (tmp_path / "memo" / "hashes.json").is_file()
    twin = tmp_path / "b.bin"
    twin.write_bytes(b"one")
    assert content_hash(twin, tmp_path / "memo") == first
    f.write_bytes(b"two!")  # new size -> new memo key
    assert content_hash(f, tmp_path / "memo") != first


def test_entries_lists_complete_entries_of_a_kind(tmp_path):
    store = Store(tmp_path)
    store.put("swrm_topk", {"a": 1}, {"x": np.zeros(1)})
    store.put("swrm_topk", {"a": 2}, {"x": np.zeros(1)})
    store.put("tokens", {"a": 1}, {"x": np.zeros(1)})
    assert sorted(e.meta["inputs"]["a"] for e in store.entries("swrm_topk")) == [1, 2]
    assert list(store.entries("export")) == []


def test_local_fingerprint_follows_files_not_paths(tmp_path):
    from msa_lightning.store import local_fingerprint

    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"w1")
    first = local_fingerprint(str(model), tmp_path / "memo")
    assert set(first) == {"config.json", "sub/weights.bin"}
    (model / "sub" / "weights.bin").write_bytes(b"w2!")
    assert local_fingerprint(str(model), tmp_path / "memo") != first
    assert local_fingerprint("bert-base-uncased", tmp_path / "memo") is None  # a hub name
