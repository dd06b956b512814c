"""`msa transcribe`: Whisper transcripts of an audio corpus, resumable, with failures recorded by id.

A tiny randomly initialised Whisper (``tiny-whisper``), saved with ``save_pretrained`` and loaded from its
folder, transcribes a few generated clips: its text is junk (bytes, control characters among them), so the
tests check the file's structure, ids, resume and error reporting, not words. ``msa transcribe`` runs once in a
subprocess, as a user runs it; the other commands go through the same entry point in this process
(:func:`_msa_here`), without the seconds of importing the suite that a process start costs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import msa_in_process

from msa_lightning.corpus.transcribe import (
    clean_text,
    errors_path,
    language_path,
    read_ids,
    repair_last_line,
    transcribe,
    windows,
)
from msa_lightning.data.transcripts import read_transcripts
from msa_lightning.errors import DataError

REPO = Path(__file__).resolve().parents[2]
GOOD = [
    "id10000/yt0000/00001",
    "id10000/yt0001/00001",
    "id10001/yt0000/00002",
    "id10002/yt0000/00003",
    "id10009/long/00001",
    "id10009/long/00003",
]
BROKEN = "id10009/long/00002"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The synthetic SKESL corpus (4 clips at 22.05 kHz, VoxCeleb ids) plus a 31 s flac at 8 kHz (two
    Whisper windows), a .wav that is not audio and an AAC .m4a."""
    import soundfile

    from msa_lightning.media.synthetic import make_synthetic_corpus

    root = make_synthetic_corpus(tmp_path_factory.mktemp("corpus"), clips=4)
    long = root / "audio" / "id10009" / "long"
    long.mkdir(parents=True)
    soundfile.write(long / "00001.flac", 0.1 * np.random.default_rng(0).normal(size=8000 * 31), 8000)
    (long / "00002.wav").write_bytes(b"RIFF but not really a wav file")
    _write_m4a(long / "00003.m4a")
    return root


def _write_m4a(path: Path, seconds: float = 2.0, rate: int = 16000) -> None:
    """An AAC .m4a (VoxCeleb2's format), which libsndfile cannot read, through PyAV."""
    import av

    y = (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for i in range(0, len(y), 1024):
            frame = av.AudioFrame.from_ndarray(y[None, i : i + 1024], format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _run(whisper_dir: Path, corpus: Path, out: Path, **kwargs):
    kwargs.setdefault("max_new_tokens", 5)
    return transcribe(str(whisper_dir), corpus / "audio", out, batch_size=2, device="cpu", progress=False, **kwargs)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_one_line_per_clip_failures_recorded_and_corpus_joins(whisper_dir, corpus, tmp_path):
    from msa_lightning.corpus.sources import collect_clips

    out = tmp_path / "asr.tsv"
    tally = _run(whisper_dir, corpus, out)
    lines = _lines(out)
    assert [line.split("\t")[0] for line in lines] == GOOD  # every readable clip, in id order
    assert all(line.count("\t") == 1 for line in lines)
    texts = [line.split("\t")[1] for line in lines]
    assert all(t and t == clean_text(t) for t in texts)  # the model's control characters were cleaned
    assert len(set(texts)) > 1  # outputs follow the audio
    assert (tally.transcribed, tally.long_clips, dict(tally.failed)) == (6, 1, {"unreadable_audio": 1})
    error_lines = _lines(errors_path(out))
    assert len(error_lines) == 1 and error_lines[0].startswith(f"{BROKEN}\tunreadable_audio\t")
    shown = tally.summary()  # what `msa transcribe` prints
    assert "transcribed 6 clips" in shown and "1 failed (unreadable_audio 1)" in shown
    assert "1 clips longer than 30 s" in shown

    # the suite's reader takes the file, and the corpus joiner matches its ids to the OpenFace files
    assert sorted(read_transcripts(out)) == GOOD
    clips, report = collect_clips(out, corpus / "audio", corpus / "openface", f0="zcr", max_bad_share=0.5)
    assert [c.id for c in clips] == GOOD[:4]
    assert {clip: reason for clip, (reason, _) in report.bad.items()} == {
        "id10009/long/00001": "missing_visual",
        BROKEN: "missing_transcript",
        "id10009/long/00003": "missing_visual",
    }


def test_rerun_skips_done_and_redoes_deleted_and_truncated_lines(whisper_dir, corpus, tmp_path, caplog):
    out = tmp_path / "asr.tsv"
    _run(whisper_dir, corpus, out, ids=None)
    first = out.read_bytes()

    again = _run(whisper_dir, corpus, out)  # only the unreadable clip is tried again
    assert (again.skipped, again.transcribed, sum(again.failed.values())) == (6, 0, 1)
    assert out.read_bytes() == first

    lines = _lines(out)
    kept = [lines[0]] + lines[2:-1]
    out.write_text("\n".join(kept + [lines[-1][:-3]]), encoding="utf-8")  # line 2 deleted, the last cut mid-way
    with caplog.at_level(logging.INFO, logger="msa_lightning"):
        redo = _run(whisper_dir, corpus, out)
    assert (redo.skipped, redo.transcribed) == (4, 2)
    assert "its last line was incomplete" in caplog.text
    now = _lines(out)
    assert now[:4] == kept  # finished lines untouched
    assert sorted(line.split("\t")[0] for line in now[4:]) == [GOOD[1], GOOD[5]]


def test_detect_language_writes_one_line_per_transcribed_clip(whisper_dir, corpus, tmp_path, caplog):
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    out = tmp_path / "asr.tsv"
    tally = _run(whisper_dir, corpus, out, detect_language=True)
    rows = [line.split("\t") for line in _lines(language_path(out))]
    assert [r[0] for r in rows] == GOOD and sum(tally.languages.values()) == len(GOOD)
    assert all(r[1] in LANGUAGES and 0 < float(r[2]) <= 1 for r in rows)
    assert "detected languages: " in tally.summary()

    ids = tmp_path / "ids.txt"  # clips transcribed without the flag are named on a later run with it
    ids.write_text(GOOD[0] + "\n", encoding="utf-8")
    _run(whisper_dir, corpus, tmp_path / "plain.tsv", ids=ids)
    with caplog.at_level(logging.INFO, logger="msa_lightning"):
        _run(whisper_dir, corpus, tmp_path / "plain.tsv", ids=ids, detect_language=True)
    assert "note: 1 clips already in" in caplog.text

    lines = _lines(out)  # a clip redone keeps its one language line
    out.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    assert _run(whisper_dir, corpus, out, detect_language=True).transcribed == 1
    assert [line.split("\t")[0] for line in _lines(language_path(out))] == GOOD


def test_ids_file_restricts_the_run_and_reports_ids_without_audio(whisper_dir, corpus, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{GOOD[2]}\tignored text\n\nid19999/none/00001\n", encoding="utf-8")
    assert read_ids(ids) == [GOOD[2], "id19999/none/00001"]
    out = tmp_path / "asr.tsv"
    tally = _run(whisper_dir, corpus, out, ids=ids)
    assert [line.split("\t")[0] for line in _lines(out)] == [GOOD[2]]
    assert dict(tally.failed) == {"missing_audio": 1}
    assert _lines(errors_path(out))[0].startswith("id19999/none/00001\tmissing_audio\t")


def test_everything_done_loads_nothing_new_and_clears_old_errors(whisper_dir, corpus, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text(GOOD[0] + "\n", encoding="utf-8")
    out = tmp_path / "asr.tsv"
    _run(whisper_dir, corpus, out, ids=ids)
    errors_path(out).write_text("stale\tunreadable_audio\told\n", encoding="utf-8")
    tally = _run(whisper_dir, corpus, out, ids=ids)
    assert (tally.skipped, tally.transcribed) == (1, 0)
    assert not errors_path(out).exists()


def test_language_detection_bfloat16_and_english_only_models(whisper_dir, corpus, tmp_path):
    from msa_lightning.errors import ConfigError
    from msa_lightning.nn.pretrained import tiny_whisper

    ids = tmp_path / "ids.txt"
    ids.write_text(GOOD[0] + "\n", encoding="utf-8")
    tally = _run(whisper_dir, corpus, tmp_path / "auto.tsv", ids=ids, language=None, dtype="bfloat16")
    assert tally.transcribed == 1 and len(_lines(tmp_path / "auto.tsv")) == 1

    assert _run(whisper_dir, corpus, tmp_path / "de.tsv", ids=ids, language="German").transcribed == 1
    with pytest.raises(ConfigError, match="--language klingon: not a language of"):
        _run(whisper_dir, corpus, tmp_path / "xx.tsv", ids=ids, language="klingon")

    english = tmp_path / "tiny_whisper_en"  # like openai/whisper-*.en: no language or task tokens to force
    model, processor = tiny_whisper()
    model.generation_config.is_multilingual = False
    model.save_pretrained(english)
    processor.save_pretrained(english)
    with pytest.raises(ConfigError, match="--max-new-tokens 445: .* decodes at most 444 tokens"):
        _run(whisper_dir, corpus, tmp_path / "long.tsv", ids=ids, max_new_tokens=445)
    with pytest.raises(ConfigError, match="English-only model"):
        _run(english, corpus, tmp_path / "de.tsv", ids=ids, language="de")
    assert _run(english, corpus, tmp_path / "en.tsv", ids=ids, language="en").transcribed == 1
    with pytest.raises(ConfigError, match="--detect-language: .* English-only model"):
        _run(english, corpus, tmp_path / "en.tsv", ids=ids, detect_language=True)


def test_a_second_run_on_the_same_file_is_refused(whisper_dir, corpus, tmp_path):
    from filelock import FileLock

    out = tmp_path / "asr.tsv"
    with FileLock(f"{out}.lock"):  # as a running `msa transcribe --out asr.tsv` holds it
        with pytest.raises(DataError, match="another msa transcribe is writing this file"):
            _run(whisper_dir, corpus, out)
    assert not out.exists()


def test_bad_folder_and_malformed_transcript_file_are_errors(whisper_dir, corpus, tmp_path):
    from msa_lightning.data.transcripts import TranscriptError
    from msa_lightning.errors import ConfigError

    with pytest.raises(DataError, match="folder not found"):
        transcribe(str(whisper_dir), tmp_path / "nope", tmp_path / "a.tsv", device="cpu", progress=False)
    with pytest.raises(ConfigError, match="a folder; expected the transcript file"):
        _run(whisper_dir, corpus, tmp_path)
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab on this line\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match="bad.tsv:1"):  # never appended to, never overwritten
        _run(whisper_dir, corpus, bad)
    assert bad.read_text(encoding="utf-8") == "no tab on this line\n"


def test_clean_text_windows_and_line_repair(tmp_path):
    assert clean_text(" a\tb\r\nc\x06 d\u2028e  ") == "a b c d e"
    assert clean_text("\r\r\n") == ""
    y = np.arange(10)
    assert [len(w) for w in windows(y, 4)] == [4, 3, 3]  # equal pieces, none tiny
    assert len(windows(y, 10)) == 1 and windows(y, 10)[0] is y

    f = tmp_path / "t.tsv"
    f.write_bytes(b"a\tx\nb\ty")
    assert repair_last_line(f) == "b\ty" and f.read_bytes() == b"a\tx\n"
    assert repair_last_line(f) is None and f.read_bytes() == b"a\tx\n"
    f.write_bytes(b"half a li")
    assert repair_last_line(f) == "half a li" and f.read_bytes() == b""
    assert repair_last_line(tmp_path / "absent.tsv") is None


def _msa(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", "transcribe", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_msa_transcribe_command_writes_the_tsv_and_the_errors_file(whisper_dir, corpus, tmp_path):
    out = tmp_path / "vox" / "asr.tsv"
    common = [
        "--model",
        str(whisper_dir),
        "--audio",
        str(corpus / "audio"),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
    ]
    run = _msa(*common)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "transcribed 6 clips" in run.stdout and f"1 failed (unreadable_audio 1): see {out}.errors.tsv" in run.stdout
    assert [line.split("\t")[0] for line in _lines(out)] == GOOD
    assert "Traceback" not in run.stderr and "transcribe: 100%" in run.stderr  # the progress bar


def _msa_here(capsys, *args: str) -> subprocess.CompletedProcess:
    return msa_in_process(capsys, *args)


def test_msa_transcribe_missing_model_is_one_error_line(corpus, tmp_path, capsys):
    """A hub name that no cache holds (offline, as every test): one error line (in this process)."""
    run = _msa_here(
        capsys,
        "transcribe",
        "--model",
        "openai/whisper-no-such-size",
        "--audio",
        str(corpus / "audio"),
        "--out",
        str(tmp_path / "asr.tsv"),
    )
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("msa: error:"), run.stderr
    assert "'openai/whisper-no-such-size'" in lines[0] and "tiny-whisper" in lines[0]
    assert not (tmp_path / "asr.tsv").exists()


def test_msa_pretrain_data_build_accepts_the_transcripts(whisper_dir, corpus, tmp_path, capsys, monkeypatch):
    """`msa pretrain-data build` (in this process; as a subprocess: test_skesl_shards.py) on transcribe's file."""
    import json

    out = tmp_path / "asr.tsv"
    _run(whisper_dir, corpus, out)
    shards = tmp_path / "shards"
    monkeypatch.setenv("MSA_CACHE_DIR", str(tmp_path / "cache"))
    run = _msa_here(
        capsys,
        "pretrain-data",
        "build",
        "--transcripts",
        str(out),
        "--audio",
        str(corpus / "audio"),
        "--visual",
        str(corpus / "openface"),
        "--out",
        str(shards),
        "--f0",
        "zcr",
        "--max-bad-share",
        "0.5",
        "--valid-share",
        "0.5",
    )
    assert run.returncode == 0, run.stdout[-1000:] + run.stderr[-2000:]
    manifest = json.loads((shards / "manifest.json").read_text(encoding="utf-8"))
    assert sum(manifest["splits"].values()) == 4  # the four clips with transcript, audio and OpenFace output
    assert manifest["bad"] == {
        "missing_visual": ["id10009/long/00001", "id10009/long/00003"],
        "missing_transcript": [BROKEN],
    }
