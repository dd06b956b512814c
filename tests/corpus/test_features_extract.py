"""`msa features extract`, the custom-dataset route and `msa infer`, on tiny videos written here.

The raw release: the 9 synthetic clips of ``make_synthetic_raw`` (grey frames: no face), of which ``vidA_1`` shows
a real portrait, ``vidB_1`` the portrait with a silent sound track, and ``vidC_1`` is not a video at all.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_msa

from msa_lightning.errors import ConfigError, DataError
from msa_lightning.media.openface import layout_dim, write_openface_csv
from msa_lightning.media.synthetic import SYNTHETIC_ROWS, make_synthetic_raw, write_synthetic_clip

pytest.importorskip("dlib")

IDS = [f"{video}_{clip}" for video, clip, *_ in SYNTHETIC_ROWS]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = make_synthetic_raw(tmp_path_factory.mktemp("features") / "raw")
    write_synthetic_clip(root / "Raw/vidA/1.mp4", seconds=1.0, fps=10, tone=220.0, face=True)
    write_synthetic_clip(root / "Raw/vidB/1.mp4", seconds=0.6, fps=10, tone=0.0, face=True)
    (root / "Raw/vidC/1.mp4").write_bytes(b"not a video at all")
    return root


def openface_folder(folder: Path, layout: str = "openface2", without: tuple[str, ...] = ()) -> Path:
    """One CSV per clip, cycling through the spellings real builds write; vidD_1's tracks no face; vidE_1's is
    missing."""
    rng = np.random.default_rng(1)
    for n, clip in enumerate(IDS):
        if clip == "vidE_1":
            continue
        video, _, number = clip.partition("_")
        success = np.zeros(6, bool) if clip == "vidD_1" else np.ones(6, bool)
        write_openface_csv(
            folder / video / f"{number}.csv",
            np.round(rng.normal(size=(6, layout_dim(layout))), 3),
            success,
            spaced=n % 2 == 0,
            face_id=n % 3 != 0,
            layout=layout,
            without=without,
        )
    return folder


@pytest.fixture(scope="module")
def extracted(raw, tmp_path_factory):
    """The default command, as the README gives it (two workers), and what it wrote."""
    out, cache = tmp_path_factory.mktemp("out") / "mine.pkl", tmp_path_factory.mktemp("cache")
    proc = run_msa(
        "features", "extract", "--raw", raw, "--out", out, "--tokenizer", "tiny-bert", "--f0", "zcr",
        "--workers", "2", "--max-bad-share", "0.2", cache=cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, cache, proc


def test_extract_writes_a_feature_file_and_a_manifest(extracted):
    out, _, proc = extracted
    assert "8 of 9 clips used; left out: unreadable_video 1; kept zero-filled: no_face 6, silent 1" in proc.stdout
    assert "features: 0 clips reused from the store, 9 extracted" in proc.stdout
    assert "features: 100%" in proc.stderr  # the progress bar, per clip
    manifest = json.loads(out.with_name("mine.manifest.json").read_text())
    assert (
        manifest["bad"]["vidC_1"]["reason"] == "unreadable_video"
        and "vidC/1.mp4" in manifest["bad"]["vidC_1"]["detail"]
    )
    assert manifest["zero_filled"]["vidB_1"] == ["silent"] and manifest["zero_filled"]["vidA_2"] == ["no_face"]
    assert "vidA_1" not in manifest["zero_filled"] and manifest["faceless_frames"]["vidA_2"][0] > 0
    assert manifest["dataset"] == {
        "label_range": [-1.0, 1.0],
        "metric_family": "sims",
        "unimodal_labels": ["T", "A", "V"],
    }
    assert manifest["settings"]["vision"]["extractor"] == "dlib" and "dlib-bin" in manifest["packages"]
    data = pickle.loads(out.read_bytes())
    assert [len(data[s]["id"]) for s in ("train", "valid", "test")] == [4, 2, 2]
    train = data["train"]
    assert train["id"][0] == "vidA$_$1" and train["audio"].shape[2] == 33 and train["vision"].shape[2] == 140
    # train rows: vidA_1 (a face), vidA_2 (grey: no face), vidB_1 (a face, silent), vidB_2
    assert train["vision"][0].any() and not train["vision"][1].any() and train["audio"][1].any()
    assert train["vision"][2].any() and not train["audio"][2].any() and train["audio_lengths"][2] > 1
    np.testing.assert_allclose(train["regression_labels_T"], [0.6, -0.8, 0.0, -1.0])


def test_the_file_is_a_custom_dataset_every_reader_takes(extracted):
    from msa_lightning.data.datamodule import MSADataModule
    from msa_lightning.data.file_report import inspect_file

    out, cache, _ = extracted
    report = inspect_file(str(out))
    assert f"# {out} (custom)" in report and "vision           shape (4, 10, 140)" in report
    dm = MSADataModule(str(out), dataset="custom", batch_size=2, cache_dir=str(cache))
    facts = dm.data_facts()
    assert (facts.audio_dim, facts.vision_dim, facts.label_bound, facts.metric_family, facts.num_train_samples) == (
        33, 140, 1.0, "sims", 4
    )  # fmt: skip


def test_a_second_run_reuses_everything_and_bad_clips_fail_only_above_the_share(raw, extracted, capsys):
    from msa_lightning.corpus.extract import ExtractOptions, extract_features
    from msa_lightning.media.extractors import audio_settings, vision_settings

    out, cache, _ = extracted
    options = ExtractOptions(audio_settings("librosa", "zcr"), vision_settings("dlib"), tokenizer="tiny-bert")
    options.max_bad_share = 0.2
    extract_features(raw, out, options, cache_dir=cache)
    assert "up to date" in capsys.readouterr().out
    options.max_bad_share = 0.1
    with pytest.raises(DataError, match=r"11\.1% of the clips are unusable, more than --max-bad-share=0\.1 .*"
                       r"vidC_1: unreadable_video"):  # fmt: skip
        extract_features(raw, out.with_name("strict.pkl"), options, cache_dir=cache)
    assert "8 clips reused from the store, 1 extracted" in capsys.readouterr().out  # a bad clip is tried again


def test_openface_csvs_of_every_spelling_then_fit_and_infer(raw, extracted, tmp_path):
    """OpenFace CSVs (spaced or not, with or without face_id, one without a tracked face, one missing), the
    custom-dataset route to `msa fit`, and `msa infer` with the extraction the checkpoint carries."""
    from msa_lightning.corpus.extract import ExtractOptions, extract_features
    from msa_lightning.experiments.infer import infer
    from msa_lightning.media.extractors import audio_settings, vision_settings

    _, cache, _ = extracted
    folder = openface_folder(tmp_path / "openface")
    out = tmp_path / "openface.pkl"
    options = ExtractOptions(audio_settings("librosa", "zcr"), vision_settings(f"openface:{folder}"))
    options.tokenizer, options.max_bad_share = "tiny-bert", 0.25
    manifest = extract_features(raw, out, options, cache_dir=cache)
    assert {k: v["reason"] for k, v in manifest["bad"].items()} == {
        "vidC_1": "unreadable_audio", "vidE_1": "missing_openface"
    }  # fmt: skip
    assert manifest["zero_filled"]["vidD_1"] == ["no_face"] and manifest["settings"]["vision"]["dim"] == 709

    # a folder of CSVs written with fewer output flags: one line naming the group and the flag
    proc = run_msa(
        "features", "extract", "--raw", raw, "--out", tmp_path / "x.pkl",
        "--vision", f"openface:{openface_folder(tmp_path / 'no_aus', without=('AU intensities', 'AU presence'))}",
    )  # fmt: skip
    assert_one_line_error(proc, "--vision openface:", "has no AU intensities", "run FeatureExtraction with -aus")

    config = tmp_path / "custom.yaml"
    config.write_text(
        "model:\n  class_path: LFDNNModule\n  init_args: {text_encoder: bag, hidden: 8, post_fusion_dim: 8}\n"
        f"data:\n  class_path: MSADataModule\n  init_args: {{path: {out}, dataset: custom, batch_size: 4}}\n"
        f"trainer: {{max_epochs: 1, default_root_dir: {tmp_path / 'runs'}, enable_progress_bar: false}}\n"
    )
    fit = run_msa("fit", "--config", config, cache=cache, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = next((tmp_path / "runs").glob("*/version_0"))

    videos = [raw / "Raw/vidA/1.mp4", raw / "Raw/vidD/2.mp4"]
    csvs = tmp_path / "new_csvs"
    for video in videos:
        write_openface_csv(csvs / f"{video.stem}.csv", np.zeros((4, 709)), spaced=True)
    (tmp_path / "said.tsv").write_text("1\tthis is great\n2\tso boring\n")
    proc = run_msa(
        "infer", *videos, "--ckpt", run, "--openface", csvs, "--transcripts", tmp_path / "said.tsv",
        "--out", tmp_path / "scores.csv", cache=cache, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "class (sims family)" in proc.stdout and str(videos[0]) in proc.stdout
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "clip,score,class,text" and len(lines) == 3 and lines[1].endswith("this is great")
    assert all(line.split(",")[2] in ("negative", "neutral", "positive") for line in lines[1:])

    # the videos' features cannot match the checkpoint: one error naming both
    old = tmp_path / "old_csvs"
    for video in videos:
        write_openface_csv(old / f"{video.stem}.csv", np.zeros((4, 427)), layout="openface2.0", face_id=False)
    with pytest.raises(ConfigError, match=r"no gaze angles .* trained on OpenFace openface2 CSVs, 709-d"):
        infer([str(v) for v in videos], str(run), str(tmp_path / "x.csv"), openface=str(old), cache_dir=str(cache))
    with pytest.raises(ConfigError, match=r"trained on OpenFace openface2 CSVs; give the videos' CSVs with --openface"):
        infer([str(v) for v in videos], str(run), str(tmp_path / "x.csv"), cache_dir=str(cache))
    # the ASR model is loaded before any video is decoded (vidC_1 is not a video: decoding it would fail first)
    with pytest.raises(ConfigError, match=r"--asr no/such-whisper: pretrained speech-recognition processor"):
        infer([str(raw / "Raw/vidC/1.mp4")], str(run), asr="no/such-whisper", openface=str(csvs), cache_dir=str(cache))


def _extract_in_child(raw: Path, out: Path, cache: Path, echo=lambda *_: None) -> None:
    from msa_lightning.corpus.extract import ExtractOptions, extract_features
    from msa_lightning.media.extractors import audio_settings, vision_settings

    options = ExtractOptions(audio_settings("librosa", "zcr"), vision_settings("dlib"), tokenizer="tiny-bert")
    options.max_bad_share = 0.2
    extract_features(raw, out, options, cache_dir=cache, echo=echo)


def _extract_killed_after(entries: int, raw: Path, out: Path, cache: Path) -> None:
    """``_extract_in_child`` that SIGKILLs itself once ``entries`` clip features are in the store: a crash at a
    known point, not a race with the remaining clips."""
    import os
    import signal

    from msa_lightning.store import Store

    get_or_build, written = Store.get_or_build, []

    def get_or_build_then_die(self, kind, *args, **kwargs):
        entry = get_or_build(self, kind, *args, **kwargs)
        written.append(kind)
        if written.count("clip_features") == entries:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: what a crash or `kill -9` leaves
        return entry

    Store.get_or_build = get_or_build_then_die
    _extract_in_child(raw, out, cache)


def test_a_run_killed_with_sigkill_goes_on_from_its_finished_clips(raw, extracted, tmp_path):
    import multiprocessing
    import signal

    cache = tmp_path / "cache"
    child = multiprocessing.get_context("fork").Process(
        target=_extract_killed_after, args=(7, raw, tmp_path / "a.pkl", cache)
    )
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    entries = len(list(cache.glob("clip_features/*/meta.json")))  # two per clip: audio and vision
    assert entries == 7 and not (tmp_path / "a.pkl").exists()
    lines: list[str] = []
    _extract_in_child(raw, tmp_path / "a.pkl", cache, lines.append)
    reused = int(next(line for line in lines if "clips reused" in line).split()[1])
    assert reused == 3, lines  # 3 clips whole; the 4th, its vision entry written but not its audio, is redone
    # the file equals the one of the uninterrupted run with the same settings
    a, b = pickle.loads((tmp_path / "a.pkl").read_bytes()), pickle.loads(extracted[0].read_bytes())
    for split in ("train", "valid", "test"):
        for key in ("audio", "vision", "audio_lengths", "vision_lengths", "regression_labels"):
            np.testing.assert_array_equal(a[split][key], b[split][key])


def test_label_range_and_metric_family_come_from_label_csv(tmp_path):
    from msa_lightning.corpus.extract import label_facts

    rows = [{"video_id": "v", "clip_id": str(i), "label": str(x), "mode": "train"} for i, x in enumerate((-2.4, 0, 3))]
    assert label_facts(rows, None, None) == {"label_range": [-3.0, 3.0], "metric_family": "mosi", "unimodal_labels": []}
    with pytest.raises(ConfigError, match=r"labels span \[-2\.4, 7\], outside the field's ranges"):
        label_facts(rows[:2] + [{**rows[2], "label": "7"}], None, None)
    with pytest.raises(DataError, match=r"clip v_0 has a label outside --label-range \[-1, 1\] \(2 clips in all\)"):
        label_facts(rows, (-1, 1), None)
    with pytest.raises(ConfigError, match=r"--label-range 0 10 is not a range of the field: give --metric-family"):
        label_facts([{**r, "label": "5"} for r in rows], (0, 10), None)
    assert label_facts(rows, (-5, 5), "mosi")["label_range"] == [-5.0, 5.0]


def test_a_file_the_command_did_not_write_is_never_overwritten(raw, tmp_path):
    from msa_lightning.corpus.extract import ExtractOptions, extract_features
    from msa_lightning.media.extractors import audio_settings, vision_settings

    options = ExtractOptions(audio_settings("librosa"), vision_settings("dlib"), text=str(tmp_path / "said.tsv"))
    with pytest.raises(ConfigError, match=r"--text .*said.tsv: file not found \(--text takes 'column' or a"):
        extract_features(raw, tmp_path / "new.pkl", options)
    theirs = tmp_path / "unaligned_39.pkl"
    theirs.write_bytes(b"someone's features")
    with pytest.raises(ConfigError, match=r"exists and is not one `msa features extract` wrote"):
        extract_features(raw, theirs, ExtractOptions(audio_settings("librosa"), vision_settings("dlib")))
    assert theirs.read_bytes() == b"someone's features"


def test_word_aligned_files_average_frames_per_word_on_the_tokens(raw, extracted, tmp_path):
    from msa_lightning.corpus.extract import ExtractOptions, extract_features, word_means
    from msa_lightning.data.datamodule import MSADataModule
    from msa_lightning.media.extractors import audio_settings, vision_settings

    frames = np.arange(10, dtype=np.float32)[:, None] * [1.0, 2.0]  # frame k at k / 10 s
    means = word_means(frames, 10.0, [("a", 0.0, 0.3), ("b", 0.3, 0.32), ("c", 0.5, 0.9)])
    np.testing.assert_allclose(means, [[1, 2], [3, 6], [6.5, 13]])  # frames 0-2; the one nearest 0.31; 5-8

    _, cache, _ = extracted
    alignment = tmp_path / "words.tsv"
    alignment.write_text("".join(f"{i}\tgood\t0.0\t0.2\n{i}\tmovie\t0.2\t0.5\n" for i in IDS) + "vidA_2\tlate\t5\t6\n")
    options = ExtractOptions(audio_settings("librosa", "zcr"), vision_settings("dlib"), tokenizer="tiny-bert")
    options.max_bad_share, options.align, options.alignment, options.text_max_length = 0.2, "words", str(alignment), 8
    out = tmp_path / "aligned.pkl"
    manifest = extract_features(raw, out, options, cache_dir=cache, echo=lambda *_: None)
    # a word timed after the clip's end (vidA_2 lasts 1 s) takes its last frame, and is counted
    assert manifest["alignment"]["words_past_end"] == {"vidA_2": 1} and manifest["alignment"]["words"] == 17
    data = pickle.loads(out.read_bytes())
    train = data["train"]
    assert train["raw_text"][1] == "good movie late"
    assert train["audio"].shape == (4, 8, 33) and train["vision"].shape == (4, 8, 140) and "audio_lengths" not in train
    assert train["raw_text"][0] == "good movie"
    assert not train["audio"][0, 0].any() and not train["vision"][0, 0].any()  # [CLS] carries no frames
    valid = train["text_bert"][0, 1].astype(bool)
    words = int(valid.sum()) - 2  # word pieces between [CLS] and [SEP]
    assert train["audio"][0, 1 : 1 + words].any(axis=1).all() and not train["audio"][0, 1 + words :].any()
    dm = MSADataModule(str(out), dataset="custom", batch_size=2, cache_dir=str(cache))
    dm.setup()
    assert dm.aligned_file


def test_whisper_tokens_are_grouped_into_timed_words_at_their_leading_space():
    from msa_lightning.corpus.transcribe import whisper_words
    from msa_lightning.nn.pretrained import tiny_whisper

    tokenizer = tiny_whisper()[1].tokenizer
    start, end = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|endoftext|>"])
    the, *cat = tokenizer(" the c\tat", add_special_tokens=False)["input_ids"]  # " the" one token, " c\tat" five
    ids = [start, the, *cat, end]
    times = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.7]  # where each token ends
    assert len(ids) == len(times)
    # a word runs from the end of the token before it to the end of its last token; the tab is cleaned away
    assert whisper_words(tokenizer, ids, times) == [("the", 0.0, 0.2), ("c at", 0.2, 0.7)]


def test_word_aligned_file_from_whisper_word_timestamps(raw, extracted, whisper_dir, tmp_path):
    """``--align words --asr``: Whisper's words (a random model: junk words, timings from its attention) split into
    tokens as a given alignment's are, cached per clip in the store, counted in the manifest."""
    from msa_lightning.corpus.extract import transcript_key
    from msa_lightning.store import Store

    _, cache, _ = extracted
    out = tmp_path / "whisper_words.pkl"
    proc = run_msa(
        "features", "extract", "--raw", raw, "--out", out, "--asr", whisper_dir, "--align", "words",
        "--tokenizer", "tiny-bert", "--f0", "zcr", "--max-bad-share", "0.2", "--text-max-length", "12",
        "--asr-max-new-tokens", "16", cache=cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "features: 8 clips reused from the store, 1 extracted" in proc.stdout  # vidC_1 is not a video
    manifest = json.loads(out.with_name("whisper_words.manifest.json").read_text())
    assert manifest["settings"]["asr"]["word_timestamps"] and manifest["settings"]["align"] == "words"
    # tiny-whisper's config lists no alignment heads: openai-whisper's default, the last half of the decoder's
    alignment = manifest["alignment"]
    assert alignment["source"] == "whisper word timestamps (transformers, default alignment heads)"
    store = Store(cache)

    def cached_words(clip: str) -> list:  # what the store holds for the clip under the run's ASR settings
        video = raw / "Raw" / clip.replace("$_$", "/").replace("_", "/")
        key = transcript_key(store, video.with_suffix(".mp4"), manifest["settings"]["asr"])
        return store.get("clip_transcript", key).meta["words"]

    data = pickle.loads(out.read_bytes())
    ids = [i for split in data.values() for i in split["id"]]
    assert len(ids) == 8 and alignment["words"] == sum(len(cached_words(i)) for i in ids) > 0
    train = data["train"]
    assert train["audio"].shape == (4, 12, 33) and train["text_bert"].shape == (4, 3, 12)
    for n, (clip, text) in enumerate(zip(train["id"], train["raw_text"])):  # vidA_1, vidA_2, vidB_1 (silent), vidB_2
        words = cached_words(clip)
        assert text == " ".join(w for w, _, _ in words) and all(0 <= s <= e for _, s, e in words)
        pieces = int(train["text_bert"][n, 1].sum()) - 2  # word pieces between [CLS] and [SEP]
        assert not train["audio"][n, 0].any() and not train["audio"][n, 1 + pieces :].any()
        if n != 2:  # every word piece carries its word's sound (the silent clip's is zeros)
            assert train["audio"][n, 1 : 1 + pieces].any(axis=1).all()


def test_faster_whisper_word_timestamps_on_a_converted_model(raw, extracted, whisper_dir, tmp_path):
    pytest.importorskip("faster_whisper")  # the optional extra msa_lightning[faster-whisper]
    from ctranslate2.converters import TransformersConverter

    from msa_lightning.corpus.extract import ExtractOptions, asr_settings, extract_features
    from msa_lightning.media.extractors import audio_settings, vision_settings

    _, cache, _ = extracted
    model = TransformersConverter(str(whisper_dir), copy_files=["tokenizer.json"]).convert(str(tmp_path / "ct2"))
    options = ExtractOptions(audio_settings("librosa", "zcr"), vision_settings("dlib"), tokenizer="tiny-bert")
    options.asr = asr_settings(model, "faster-whisper", max_new_tokens=8, words=True)
    options.align, options.max_bad_share, options.text_max_length = "words", 0.2, 12
    manifest = extract_features(raw, tmp_path / "fw.pkl", options, cache_dir=cache, echo=lambda *_: None)
    assert manifest["alignment"]["source"] == "whisper word timestamps (faster-whisper)"
    data = pickle.loads((tmp_path / "fw.pkl").read_bytes())
    assert data["test"]["audio"].shape == (2, 12, 33)
    # a clip Whisper heard no word in keeps [CLS] [SEP] and zero frames (listed in the manifest)
    for i in manifest["alignment"]["clips_without_words"]:
        split = next(s for s in data if f"{i.replace('_', '$_$')}" in data[s]["id"])
        row = data[split]["id"].index(i.replace("_", "$_$"))
        assert data[split]["raw_text"][row] == "" and not data[split]["audio"][row].any()


def test_what_the_text_needs_is_checked_before_any_clip_is_decoded(raw, tmp_path, monkeypatch):
    from msa_lightning.corpus.extract import ExtractOptions, extract_features
    from msa_lightning.media.extractors import audio_settings, vision_settings

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))  # no tokenizer cached, whatever this machine has
    cache = tmp_path / "cache"
    proc = run_msa("features", "extract", "--raw", raw, "--out", tmp_path / "x.pkl", cache=cache)
    assert_one_line_error(proc, "--tokenizer bert-base-uncased: ", "hf download bert-base-uncased", "local directory")
    assert "features:" not in proc.stderr + proc.stdout and not list(cache.glob("clip_features/*"))

    def run(**settings):
        options = ExtractOptions(audio_settings("librosa"), vision_settings("dlib"), tokenizer="tiny-bert")
        for key, value in settings.items():
            setattr(options, key, value)
        extract_features(raw, tmp_path / "x.pkl", options, cache_dir=cache)

    with pytest.raises(
        ConfigError, match=r"--asr no/such-whisper: pretrained speech-recognition .*`hf download no/such-whisper`"
    ):
        run(asr={"model": "no/such-whisper", "backend": "transformers", "language": None})
    with pytest.raises(ConfigError, match=r"--align words needs word timings: --alignment FILE .* or --asr MODEL"):
        run(align="words")
    with pytest.raises(ConfigError, match=r"--alignment w.tsv: word timings are read only with --align words"):
        run(alignment="w.tsv")
    with pytest.raises(ConfigError, match=r"--align words: give --alignment FILE or --asr MODEL, not both"):
        run(align="words", alignment="w.tsv", asr={"model": "tiny-whisper"})
    with pytest.raises(ConfigError, match=r"--text said.tsv: not read when --asr transcribes the clips"):
        run(text="said.tsv", asr={"model": "tiny-whisper"})
    malformed = tmp_path / "words.tsv"
    malformed.write_text("vidA_1\tgood\t0.5\n")
    with pytest.raises(DataError, match=r"words.tsv, line 1: expected id<TAB>word<TAB>start<TAB>end"):
        run(align="words", alignment=str(malformed))
    assert not list(cache.glob("clip_features/*"))
