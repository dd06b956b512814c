"""The feature-file validator (one clear error per problem) and the memory-mapped cache."""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_msa

from msa_lightning.data import cache as cache_mod
from msa_lightning.data.cache import ensure_cache, load_cached
from msa_lightning.data.reader import FeatureFileError, normalise_id, read_feature_file
from msa_lightning.data.specs import SPLITS, get_spec
from msa_lightning.data.synthetic import make_synthetic

MOSI = get_spec("mosi")
SIMS = get_spec("sims")


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path, monkeypatch):
    """Tests never write to the user's default cache folder."""
    monkeypatch.setattr(cache_mod, "DEFAULT_CACHE_DIR", tmp_path / "default_cache")


@pytest.fixture(scope="module")
def small_mosi(tmp_path_factory) -> Path:
    """8 samples per split (the generator's minimum)."""
    return make_synthetic("mosi", tmp_path_factory.mktemp("reader") / "mosi.pkl", size_factor=0.001, seed=3)


@pytest.fixture(scope="module")
def small_sims(tmp_path_factory) -> Path:
    return make_synthetic("sims", tmp_path_factory.mktemp("reader") / "sims.pkl", size_factor=0.001, seed=4)


def load(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def write(data, path: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def mutated(src: Path, dst: Path, fn) -> Path:
    data = load(src)
    fn(data)
    return write(data, dst)


def expect_error(path: Path, *parts: str, spec=None) -> str:
    """Reading ``path`` raises one FeatureFileError whose single-line message names every part."""
    with pytest.raises(FeatureFileError) as info:
        read_feature_file(path, spec)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith(str(path)), msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- file-level errors
def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.pkl", "feature file not found")


def test_not_a_pickle(tmp_path):
    bad = tmp_path / "garbage.pkl"
    bad.write_bytes(b"\x00\x01 this is not a pickle \xff" * 10)
    expect_error(bad, "not a readable pickle")


def test_top_level_not_a_dict(tmp_path, small_mosi):
    data = load(small_mosi)
    expect_error(write([data["train"]], tmp_path / "list.pkl"), "expected a dict of splits", "found list")


def test_missing_split(tmp_path, small_mosi):
    path = mutated(small_mosi, tmp_path / "f.pkl", lambda d: d.pop("valid"))
    expect_error(path, "missing split 'valid'", "found splits ['test', 'train']")


def test_split_not_a_dict(tmp_path, small_mosi):
    path = mutated(small_mosi, tmp_path / "f.pkl", lambda d: d.__setitem__("test", [1, 2]))
    expect_error(path, "split 'test'", "expected a dict of arrays", "found list")


# --------------------------------------------------------------------------- key-level errors
def test_missing_key(tmp_path, small_mosi):
    path = mutated(small_mosi, tmp_path / "f.pkl", lambda d: d["train"].pop("audio"))
    expect_error(path, "split 'train'", "key 'audio'", "expected the key to be present", "found keys [")


def test_missing_text(tmp_path, small_mosi):
    def drop(d):
        d["valid"].pop("text_bert")
        d["valid"].pop("raw_text")

    expect_error(
        mutated(small_mosi, tmp_path / "f.pkl", drop),
        "split 'valid'",
        "key 'text_bert'",
        "'text_bert' or 'raw_text' to be present",
    )


@pytest.mark.parametrize("key", ["vision", "audio_lengths", "regression_labels", "raw_text", "text_bert"])
def test_lengths_disagree(tmp_path, small_mosi, key):
    path = mutated(small_mosi, tmp_path / "f.pkl", lambda d: d["test"].__setitem__(key, d["test"][key][:-1]))
    expect_error(path, "split 'test'", f"key {key!r}", "expected 8 samples (the length of 'id')", "found 7")


def test_audio_lengths_longer_than_sequence(tmp_path, small_mosi):
    def longer(d):
        d["train"]["audio_lengths"][3] = MOSI.audio_len + 5

    path = mutated(small_mosi, tmp_path / "f.pkl", longer)
    expect_error(
        path,
        "split 'train'",
        "key 'audio_lengths'",
        f"expected lengths in [0, {MOSI.audio_len}]",
        f"found {MOSI.audio_len + 5}",
    )


def test_negative_vision_length(tmp_path, small_mosi):
    def negative(d):
        d["valid"]["vision_lengths"][0] = -2

    expect_error(mutated(small_mosi, tmp_path / "f.pkl", negative), "key 'vision_lengths'", "found -2")


@pytest.mark.parametrize("dataset,value,bounds", [("mosi", 3.5, "[-3, 3]"), ("sims", -1.2, "[-1, 1]")])
def test_labels_outside_range(tmp_path, small_mosi, small_sims, dataset, value, bounds):
    src = small_mosi if dataset == "mosi" else small_sims
    data = load(src)
    data["test"]["regression_labels"][2] = value
    path = write(data, tmp_path / "f.pkl")
    bad_id = normalise_id(data["test"]["id"][2])
    expect_error(
        path,
        "split 'test'",
        "key 'regression_labels'",
        f"expected labels in {bounds} for {dataset}",
        f"found {value:g} at id {bad_id!r} (1 outside)",
        spec=get_spec(dataset),
    )
    read_feature_file(path)  # no spec: no range check


def test_unimodal_label_outside_range(tmp_path, small_sims):
    def bad(d):
        d["valid"]["regression_labels_A"][0] = 2.0

    expect_error(mutated(small_sims, tmp_path / "f.pkl", bad), "key 'regression_labels_A'", "found 2", spec=SIMS)


def test_string_audio(tmp_path, small_mosi):
    def strings(d):
        d["train"]["audio"] = np.array([["x"] * 3] * 8, dtype=object)[:, :, None]

    expect_error(
        mutated(small_mosi, tmp_path / "f.pkl", strings),
        "split 'train'",
        "key 'audio'",
        "expected a float array [N, T, D]",
        "found dtype object",
    )


def test_unicode_audio(tmp_path, small_mosi):
    def strings(d):
        d["test"]["audio"] = d["test"]["audio"].astype(str)

    expect_error(mutated(small_mosi, tmp_path / "f.pkl", strings), "key 'audio'", "found dtype <U")


def test_audio_wrong_rank(tmp_path, small_mosi):
    def flat(d):
        d["train"]["audio"] = d["train"]["audio"].mean(1)

    expect_error(
        mutated(small_mosi, tmp_path / "f.pkl", flat),
        "key 'audio'",
        "expected a float array [N, T, D]",
        f"found shape (8, {MOSI.audio_dim})",
    )


def test_string_labels(tmp_path, small_mosi):
    def strings(d):
        d["train"]["regression_labels"] = np.array(["pos"] * 8)

    expect_error(
        mutated(small_mosi, tmp_path / "f.pkl", strings),
        "key 'regression_labels'",
        "expected float labels",
        "found dtype <U3",
    )


def test_nan_labels(tmp_path, small_mosi):
    def nan(d):
        d["valid"]["regression_labels"][[1, 4]] = np.nan

    path = mutated(small_mosi, tmp_path / "f.pkl", nan)
    first = normalise_id(pickle.load(open(path, "rb"))["valid"]["id"][1])
    expect_error(
        path,
        "split 'valid'",
        "key 'regression_labels'",
        "expected finite labels",
        f"found nan at id {first!r}",
        "2 NaN/inf labels in all",
        spec=MOSI,
    )


def test_bad_text_bert(tmp_path, small_mosi):
    def negative(d):
        d["train"]["text_bert"][0, 0, 0] = -1

    expect_error(mutated(small_mosi, tmp_path / "f.pkl", negative), "key 'text_bert'", "non-negative token ids")

    def two_rows(d):
        d["train"]["text_bert"] = d["train"]["text_bert"][:, :2]

    expect_error(
        mutated(small_mosi, tmp_path / "g.pkl", two_rows),
        "key 'text_bert'",
        "an array [N, 3, L]",
        "found shape (8, 2, 50)",
    )


def test_non_string_raw_text(tmp_path, small_mosi):
    def ints(d):
        d["test"]["raw_text"][5] = 42

    expect_error(
        mutated(small_mosi, tmp_path / "f.pkl", ints), "key 'raw_text'", "a list of strings", "an element of type int"
    )


# --------------------------------------------------------------------------- what a valid file gives
def test_nonfinite_features_are_zeroed_and_counted(tmp_path, small_mosi, caplog):
    def poison(d):
        audio = d["train"]["audio"]
        audio[0, 0, 0], audio[1, 2, 3], audio[5, 0, 1] = np.nan, -np.inf, np.inf
        d["test"]["vision"][2, 1, 4] = np.nan

    path = mutated(small_mosi, tmp_path / "f.pkl", poison)
    with caplog.at_level(logging.WARNING, logger="msa_lightning.data.reader"):
        splits = read_feature_file(path, MOSI)
    assert splits["train"].nonfinite == {"audio": 3}
    assert splits["test"].nonfinite == {"vision": 1}
    assert splits["valid"].nonfinite == {}
    train = splits["train"].audio
    assert np.isfinite(train).all() and train[0, 0, 0] == 0 and train[1, 2, 3] == 0 and train[5, 0, 1] == 0
    assert splits["test"].vision[2, 1, 4] == 0
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("split 'train', key 'audio': replaced 3 non-finite values" in m for m in messages), messages
    assert any("split 'test', key 'vision': replaced 1 non-finite values" in m for m in messages), messages


def test_valid_file_contents(small_mosi):
    raw = load(small_mosi)
    splits = read_feature_file(small_mosi, MOSI)
    assert set(splits) == set(SPLITS)
    s = splits["train"]
    assert len(s) == 8 and s.ids[0] == "synthtrain0000_0" and s.ids[7] == "synthtrain0000_7"
    assert s.audio.dtype == np.float32 and s.vision.dtype == np.float32
    assert s.text_bert.dtype == np.int64 and s.audio_lengths.dtype == np.int64
    np.testing.assert_array_equal(s.audio, raw["train"]["audio"])
    np.testing.assert_array_equal(s.audio_lengths, raw["train"]["audio_lengths"])
    np.testing.assert_array_equal(s.labels["M"], raw["train"]["regression_labels"])
    assert set(s.labels) == {"M"} and s.raw_text == raw["train"]["raw_text"]


def test_ids_normalised(tmp_path, small_mosi):
    def ids(d):
        d["train"]["id"] = ["vid$_$3", "other_video_12"] + d["train"]["id"][2:]

    splits = read_feature_file(mutated(small_mosi, tmp_path / "f.pkl", ids))
    assert splits["train"].ids[:2] == ["vid_3", "other_video_12"]
    assert normalise_id("a$_$b$_$1") == "a_b_1" and normalise_id("x_1") == "x_1"


def test_extension_label_keys(tmp_path):
    path = make_synthetic("sims", tmp_path / "sims_bimodal.pkl", size_factor=0.001, seed=5, bimodal_labels=True)
    raw = load(path)
    splits = read_feature_file(path, SIMS)
    for split in SPLITS:
        labels = splits[split].labels
        assert set(labels) == {"M", "T", "A", "V", "AV", "AT", "VT"}
        for key in ("T", "A", "V", "AV", "AT", "VT"):
            np.testing.assert_array_equal(labels[key], raw[split][f"regression_labels_{key}"])
            assert labels[key].dtype == np.float32


def test_aligned_file_without_length_keys(tmp_path):
    path = make_synthetic("mosi", tmp_path / "aligned.pkl", size_factor=0.001, aligned=True, seed=6)
    s = read_feature_file(path, MOSI)["valid"]
    assert s.audio.shape[1] == MOSI.text_len and (s.audio_lengths == MOSI.text_len).all()
    assert (s.vision_lengths == MOSI.text_len).all()


def test_label_column_vector_is_flattened(tmp_path, small_mosi):
    def column(d):
        d["train"]["regression_labels"] = d["train"]["regression_labels"][:, None]

    raw = load(small_mosi)
    s = read_feature_file(mutated(small_mosi, tmp_path / "f.pkl", column))["train"]
    assert s.labels["M"].shape == (8,)
    np.testing.assert_array_equal(s.labels["M"], raw["train"]["regression_labels"])


# --------------------------------------------------------------------------- memory-mapped cache
def test_cache_roundtrip_is_memory_mapped(tmp_path, small_sims):
    cache_dir = tmp_path / "cache"
    folder = ensure_cache(small_sims, SIMS, cache_dir)
    assert folder.parent == cache_dir / "features" and (folder / "meta.json").is_file()
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]  # no leftover temp folder
    names = {p.name for p in (folder / "train").iterdir()}
    assert {
        "audio.npy",
        "vision.npy",
        "text_bert.npy",
        "audio_lengths.npy",
        "vision_lengths.npy",
        "labels_M.npy",
        "labels_T.npy",
        "labels_A.npy",
        "labels_V.npy",
    } <= names

    direct = read_feature_file(small_sims, SIMS)
    cached = load_cached(folder)
    for split in SPLITS:
        a, b = direct[split], cached[split]
        for key in ("audio", "vision", "text_bert"):
            arr = getattr(b, key)
            assert isinstance(arr, np.memmap), f"{split}/{key} is {type(arr).__name__}"
            assert not arr.flags.writeable
            np.testing.assert_array_equal(arr, getattr(a, key))
            assert arr.dtype == getattr(a, key).dtype
        np.testing.assert_array_equal(b.audio_lengths, a.audio_lengths)
        np.testing.assert_array_equal(b.vision_lengths, a.vision_lengths)
        assert set(b.labels) == set(a.labels)
        for k in a.labels:
            np.testing.assert_array_equal(b.labels[k], a.labels[k])
        assert b.ids == a.ids and b.raw_text == a.raw_text and b.nonfinite == a.nonfinite

    in_memory = load_cached(folder, mmap=False)["train"]
    assert not isinstance(in_memory.audio, np.memmap)
    np.testing.assert_array_equal(in_memory.audio, direct["train"].audio)


def test_cache_keeps_nonfinite_counts(tmp_path, small_mosi):
    def poison(d):
        d["valid"]["audio"][0, 0, :2] = np.nan

    path = mutated(small_mosi, tmp_path / "f.pkl", poison)
    cached = load_cached(ensure_cache(path, MOSI, tmp_path / "cache"))
    assert cached["valid"].nonfinite == {"audio": 2} and np.isfinite(cached["valid"].audio).all()


def test_second_ensure_cache_does_not_rewrite(tmp_path, small_mosi, monkeypatch):
    cache_dir = tmp_path / "cache"
    folder = ensure_cache(small_mosi, MOSI, cache_dir)
    files = sorted(folder.rglob("*"))
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    calls = []
    monkeypatch.setattr(cache_mod, "read_feature_file", lambda *a, **k: calls.append(a) or pytest.fail("re-read"))
    assert ensure_cache(small_mosi, MOSI, cache_dir) == folder
    assert not calls
    assert sorted(folder.rglob("*")) == files
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert len([p for p in (cache_dir / "features").iterdir() if p.is_dir()]) == 1


def test_different_content_gives_different_folder(tmp_path, small_mosi):
    cache_dir = tmp_path / "cache"
    path = tmp_path / "f.pkl"
    path.write_bytes(small_mosi.read_bytes())
    first = ensure_cache(path, MOSI, cache_dir)

    def change(d):
        d["test"]["regression_labels"][0] = -2.0

    mutated(small_mosi, path, change)  # same path, new content (the hash memo must not be stale)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    second = ensure_cache(path, MOSI, cache_dir)
    assert second != first and re.fullmatch(r"[0-9a-f]{24}", second.name)
    assert load_cached(second)["test"].labels["M"][0] == -2.0
    assert load_cached(first)["test"].labels["M"][0] != -2.0
    # identical bytes at another path share the folder
    twin = tmp_path / "twin.pkl"
    twin.write_bytes(path.read_bytes())
    assert ensure_cache(twin, MOSI, cache_dir) == second


def test_invalid_file_leaves_no_cache(tmp_path, small_mosi):
    cache_dir = tmp_path / "cache"
    path = mutated(small_mosi, tmp_path / "f.pkl", lambda d: d["train"].pop("vision"))
    with pytest.raises(FeatureFileError, match="key 'vision'"):
        ensure_cache(path, MOSI, cache_dir)
    assert not (cache_dir / "features").exists() or not any((cache_dir / "features").iterdir())


def test_cache_is_keyed_by_the_spec_it_was_validated_against(tmp_path, small_mosi):
    """A file converted as MOSI and then opened as CH-SIMS is validated again: its labels in
    [-3, 3] do not fit CH-SIMS, and the reader says so (the old cache skipped validation)."""
    cache_dir = tmp_path / "cache"
    path = mutated(small_mosi, tmp_path / "f.pkl", lambda d: d["train"]["regression_labels"].__setitem__(0, 2.4))
    mosi = ensure_cache(path, MOSI, cache_dir)
    assert load_cached(mosi)["train"].labels["M"][0] == pytest.approx(2.4)
    with pytest.raises(
        FeatureFileError,
        match=r"split 'train', key 'regression_labels': expected labels in "
        r"\[-1, 1\] for sims, found 2\.4",
    ):
        ensure_cache(path, SIMS, cache_dir)
    # no spec (``msa data convert`` without --dataset) is its own entry; the MOSI one is reused as is
    assert ensure_cache(path, None, cache_dir) != mosi
    assert ensure_cache(path, MOSI, cache_dir) == mosi


# --------------------------------------------------------------------------- checks across splits
def test_feature_sizes_must_agree_between_splits(tmp_path, small_mosi):
    def wider(d):
        d["test"]["vision"] = np.concatenate([d["test"]["vision"], d["test"]["vision"][:, :, :3]], axis=2)

    expect_error(
        mutated(small_mosi, tmp_path / "f.pkl", wider),
        "split 'test'",
        "key 'vision'",
        f"feature size {MOSI.vision_dim} (as in split 'train')",
        f"found {MOSI.vision_dim + 3}",
    )


@pytest.mark.parametrize("split", SPLITS)
def test_empty_split_is_an_error(tmp_path, small_mosi, split):
    def empty(d):
        for key, value in list(d[split].items()):
            d[split][key] = value[:0]

    expect_error(mutated(small_mosi, tmp_path / "f.pkl", empty), f"split {split!r}", "at least one sample", "0 samples")


def test_split_overlaps_are_found(tmp_path, small_mosi, caplog):
    from msa_lightning.data.reader import split_overlaps, warn_overlaps

    def leak(d):
        d["test"]["id"] = list(d["test"]["id"])
        d["test"]["id"][:3] = list(d["train"]["id"])[:3]

    splits = read_feature_file(mutated(small_mosi, tmp_path / "f.pkl", leak))
    found = split_overlaps(splits)
    assert list(found) == ["train/test"] and found["train/test"] == splits["train"].ids[:3]
    with caplog.at_level(logging.WARNING):
        warn_overlaps(splits, "f.pkl")
    assert "LEAK in f.pkl: 3 utterance ids appear in both 'train' and 'test'" in caplog.text
    assert splits["train"].ids[0] in caplog.text
    assert split_overlaps(read_feature_file(small_mosi)) == {}


# --------------------------------------------------------------------------- the real `msa data` command
def test_msa_data_inspect_reports_bad_files_and_leaks(tmp_path, small_mosi):
    def wider(d):
        d["valid"]["audio"] = np.concatenate([d["valid"]["audio"]] * 2, axis=2)

    bad = mutated(small_mosi, tmp_path / "wide.pkl", wider)
    assert_one_line_error(
        run_msa("data", "inspect", bad, cache=tmp_path / "cache"),
        str(bad),
        "split 'valid'",
        "key 'audio'",
        f"feature size {MOSI.audio_dim}",
        f"found {2 * MOSI.audio_dim}",
    )

    def infinite(d):
        d["test"]["regression_labels_T"] = np.zeros(len(d["test"]["id"]), np.float32)
        d["test"]["regression_labels_T"][3] = np.inf

    bad = mutated(small_mosi, tmp_path / "inf.pkl", infinite)
    clip = normalise_id(pickle.load(open(bad, "rb"))["test"]["id"][3])
    assert_one_line_error(
        run_msa("data", "inspect", bad, cache=tmp_path / "cache"),
        str(bad),
        "split 'test'",
        "key 'regression_labels_T'",
        "expected finite labels",
        f"found inf at id {clip!r}",
    )

    def leak(d):
        d["test"]["id"] = list(d["train"]["id"])[:2] + list(d["test"]["id"])[2:]

    leaky = mutated(small_mosi, tmp_path / "leak.pkl", leak)
    result = run_msa("data", "inspect", leaky, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "LEAK: 2 utterance ids appear in both 'train' and 'test'" in result.stdout


def test_msa_data_convert_revalidates_for_another_dataset(tmp_path, small_mosi):
    path = mutated(small_mosi, tmp_path / "f.pkl", lambda d: d["train"]["regression_labels"].__setitem__(0, 2.4))
    ensure_cache(path, MOSI, tmp_path / "cache")  # converted as MOSI once
    assert_one_line_error(
        run_msa("data", "convert", path, "--dataset", "sims", "--cache-dir", tmp_path / "cache"),
        str(path),
        "split 'train'",
        "expected labels in [-1, 1] for sims",
        "found 2.4",
    )
