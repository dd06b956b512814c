"""``msa pretrain-data`` (synth, build, inspect): SKESL's unlabeled corpus as litdata shards.

Each command runs once in a subprocess, as a user runs it (``build`` with 2 feature workers, ``synth``, ``inspect``,
and the ``build`` killed with -9); the other calls go through the same entry point in this process
(:func:`msa_here`: ``msa_lightning.cli.main``, its exit status and output), which skips the seconds of importing
the suite that each subprocess costs. The shards are read back with ``litdata.StreamingDataset``. Corpora are tiny
(at most a dozen clips of about a second, 16 kHz) and use ``--f0 zcr`` except one pyin run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import msa_in_process

from msa_lightning.corpus import sources as corpus
from msa_lightning.corpus.shards import chunk_bytes, extract_part, part_items, part_key
from msa_lightning.errors import ConfigError
from msa_lightning.media.openface import read_openface_csv
from msa_lightning.media.synthetic import BAD_KINDS, make_synthetic_corpus
from msa_lightning.papers.skesl.masking import id_draws

MSA = [sys.executable, "-m", "msa_lightning.cli"]
FAST = ["--f0", "zcr", "--sample-rate", "16000", "--valid-share", "0.3"]


def _env(tmp_path: Path) -> dict:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "MSA_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("MSA_DEBUG", None)
    return env


def msa(tmp_path: Path, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MSA, *map(str, args)], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(autouse=True)
def _in_process_env(tmp_path, monkeypatch):
    """What :func:`_env` gives a subprocess, for the commands run in this process."""
    monkeypatch.setenv("MSA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MSA_DEBUG", raising=False)


def msa_here(capsys, *args) -> subprocess.CompletedProcess:
    return msa_in_process(capsys, *args)


def build_args(root: Path, out: Path, *extra) -> list:
    return [
        "pretrain-data",
        "build",
        "--transcripts",
        root / "transcripts.tsv",
        "--audio",
        root / "audio",
        "--visual",
        root / "openface",
        "--out",
        out,
        *extra,
    ]


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("msa: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def read_split(folder: Path) -> dict[str, dict]:
    import litdata

    ds = litdata.StreamingDataset(str(folder))
    items = [ds[i] for i in range(len(ds))]
    return {item["id"]: item for item in items}


def corpus_ids(root: Path) -> list[str]:
    return sorted(line.split("\t")[0] for line in (root / "transcripts.tsv").read_text().splitlines())


# ------------------------------------------------------------------------------------------- in-process parts
def test_part_file_round_trip_and_key(tmp_path):
    """A part holds each clip's features cut to the limits (not padded), and the failures by id and reason; its key
    follows the clip's files."""
    root = make_synthetic_corpus(tmp_path / "c", clips=3, seed=3, sample_rate=16000)
    texts = dict(line.split("\t") for line in (root / "transcripts.tsv").read_text().splitlines())
    clips = [(c, t, str(root / "audio" / f"{c}.wav"), str(root / "openface" / f"{c}.csv")) for c, t in texts.items()]
    (root / "audio" / f"{clips[2][0]}.wav").write_bytes(b"not audio")
    features = {"audio_frames": 12, "vision_frames": 400, "sample_rate": 16000, "hop_length": 512, "f0": "zcr"}
    key = part_key(clips, features)
    assert extract_part(str(tmp_path / "part.npz"), clips, features) == (2, 1)
    items = list(part_items(tmp_path / "part.npz"))
    assert [i["id"] for i in items] == [c[0] for c in clips[:2]]
    for item, (clip, text, audio, visual) in zip(items, clips):
        direct = corpus.extract_clip(clip, text, audio, visual, 16000, 512, "zcr")
        assert item["text"] == text and item["audio"].dtype == np.float32
        np.testing.assert_array_equal(item["audio"], direct.audio[:12])  # cut to audio_frames
        np.testing.assert_array_equal(item["vision"], direct.vision)  # shorter than vision_frames: not padded
        success = read_openface_csv(visual)[1]
        assert not success.all() and (item["vision"][~success] == 0).all()  # failed face frames are zero rows
    with np.load(tmp_path / "part.npz") as part:
        assert part["bad_ids"].tolist() == [clips[2][0]] and part["bad_reasons"].tolist() == ["unreadable_audio"]
    assert part_key(clips, {**features, "f0": "pyin"}) != key
    os.utime(clips[0][2], ns=(1, 1))
    assert part_key(clips, features) != key


def test_chunk_bytes_reads_litdata_s_spelling():
    """``--chunk-bytes``: a number of bytes or litdata's decimal units, case-insensitive; anything else is one
    ConfigError."""
    assert chunk_bytes("64MB") == 64_000_000 and chunk_bytes("500kB") == 500_000 and chunk_bytes("1000000") == 10**6
    assert chunk_bytes("1.5 gb") == 1_500_000_000 and chunk_bytes("2k") == 2000 and chunk_bytes("7b") == 7
    for bad in ("", "0", "-5MB", "64 MiB", "MB", "1e6", "64MB!"):
        with pytest.raises(ConfigError, match="--chunk-bytes: expected a size such as 64MB"):
            chunk_bytes(bad)


# ------------------------------------------------------------------------------------------- the real command
@pytest.mark.slow
def test_build_writes_streaming_shards_and_is_up_to_date_on_rerun(tmp_path, capsys):
    """The real command with 2 feature workers (the default start method) writes the shards and the manifest; the
    same build again is "up to date" (nothing rewritten), other settings need --force (in this process)."""
    root = make_synthetic_corpus(tmp_path / "corpus", clips=8, seed=5, sample_rate=16000)
    out = tmp_path / "shards"
    run = msa(
        tmp_path,
        *build_args(
            root,
            out,
            *FAST,
            "--workers",
            "2",
            "--clips-per-part",
            "3",
            "--audio-frames",
            "30",
            "--vision-frames",
            "20",
            "--chunk-bytes",
            "200kB",
        ),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (
        "features: 3 parts of up to 3 clips: 0 reused from an earlier run, 3 extracted (8 clips, 2 workers"
        in run.stderr
    ), run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "msa-skesl-shards/1" and manifest["finished"] is True
    assert (
        manifest["audio_dim"],
        manifest["vision_dim"],
        manifest["audio_frames"],
        manifest["vision_frames"],
        manifest["f0"],
    ) == (33, 709, 30, 20, "zcr")
    assert manifest["counts"]["clips"] == 8 and manifest["counts"]["used"] == 8 and manifest["bad"] == {}
    assert manifest["inputs"]["transcripts"]["path"] == str((root / "transcripts.tsv").resolve())
    assert not (out / "parts").exists()  # the parts are gone once the shards are written

    train, valid = read_split(out / "train"), read_split(out / "valid")
    ids = corpus_ids(root)
    assert not set(train) & set(valid) and sorted([*train, *valid]) == ids  # disjoint and complete
    assert manifest["splits"] == {"train": len(train), "valid": len(valid)} and valid and train
    assert sorted(valid) == [c for c, d in zip(ids, id_draws(ids, "valid")) if d < 0.3]  # the id-hash rule
    # written in the order of a hash of each id, not sorted (a chunk of sorted VoxCeleb ids is one speaker)
    order = [c for c in ids if c in train]
    assert list(train) == sorted(order, key=lambda c: id_draws([c], "order")[0]) and list(train) != order
    assert len(json.loads((out / "train" / "index.json").read_text())["chunks"]) > 1  # --chunk-bytes reached litdata
    texts = dict(line.split("\t") for line in (root / "transcripts.tsv").read_text().splitlines())
    for clip, item in {**train, **valid}.items():
        assert item["text"] == texts[clip]
        assert item["audio"].dtype == np.float32 and item["audio"].shape[1] == 33 and 0 < len(item["audio"]) <= 30
        assert item["vision"].dtype == np.float32 and item["vision"].shape[1] == 709 and 0 < len(item["vision"]) <= 20
    clip = ids[0]
    direct = corpus.extract_clip(
        clip, texts[clip], root / "audio" / f"{clip}.wav", root / "openface" / f"{clip}.csv", 16000, 512, "zcr"
    )
    item = {**train, **valid}[clip]
    np.testing.assert_allclose(item["audio"], direct.audio[:30], rtol=1e-5, atol=1e-4)  # FFTs: thread-dependent
    np.testing.assert_array_equal(item["vision"], direct.vision[:20])

    chunk = next((out / "train").glob("*.bin"))
    stamp = chunk.stat().st_mtime_ns
    again = msa_here(
        capsys,
        *build_args(
            root,
            out,
            *FAST,
            "--workers",
            "2",
            "--clips-per-part",
            "3",
            "--audio-frames",
            "30",
            "--vision-frames",
            "20",
            "--chunk-bytes",
            "200kB",
        ),
    )
    assert again.returncode == 0 and "up to date" in again.stdout and "features:" not in again.stderr, again.stderr
    assert chunk.stat().st_mtime_ns == stamp

    other = msa_here(
        capsys, *build_args(root, out, *FAST, "--audio-frames", "12", "--vision-frames", "20", "--chunk-bytes", "200kB")
    )
    line = one_line_error(other)
    assert "holds shards built from other inputs or settings (audio_frames 30 -> 12)" in line and "--force" in line
    forced = msa_here(
        capsys,
        *build_args(
            root, out, *FAST, "--audio-frames", "12", "--vision-frames", "20", "--chunk-bytes", "200kB", "--force"
        ),
    )
    assert forced.returncode == 0, forced.stderr[-3000:]
    rebuilt = {**read_split(out / "train"), **read_split(out / "valid")}
    assert sorted(rebuilt) == ids and max(len(i["audio"]) for i in rebuilt.values()) == 12


@pytest.mark.slow
def test_build_reports_each_bad_clip_and_resumes_from_finished_parts(tmp_path, capsys):
    """`synth --with-bad`: one clip of each bad kind. Above --max-bad-share the build is one error line and the
    manifest lists every clip by reason; a re-run reuses the finished parts (one deleted part is redone). `synth`
    and `inspect` in subprocesses, the builds in this process."""
    root, out = tmp_path / "corpus", tmp_path / "shards"
    made = msa(
        tmp_path, "pretrain-data", "synth", root, "--clips", "6", "--seed", "2", "--sample-rate", "16000", "--with-bad"
    )
    assert made.returncode == 0, made.stderr[-3000:]
    assert "msa pretrain-data build --transcripts" in made.stdout and "one of each kind" in made.stdout

    failed = msa_here(capsys, *build_args(root, out, *FAST, "--clips-per-part", "2"))
    line = one_line_error(failed)
    assert (
        "53.8% of the clips are unusable, more than --max-bad-share=0.05 (6 of 13 clips used; left out: "
        "empty_transcript 1, missing_audio 1, missing_transcript 1, missing_visual 1, no_face 1, "
        "unreadable_audio 1, wrong_columns 1" in line
    ), line
    manifest = json.loads((out / "manifest.json").read_text())
    expected = {reason: [f"id19999/bad_{reason}/00001"] for reason in BAD_KINDS}
    assert manifest["finished"] is False and manifest["bad"] == expected
    assert manifest["counts"] == {"clips": 13, "used": 6, "left_out": 7, **{r: 1 for r in BAD_KINDS}}
    assert "success is 0 in all 5 frames" in manifest["bad_details"]["id19999/bad_no_face/00001"]
    assert not (out / "train").exists()
    parts = sorted((out / "parts").glob("part-*.npz"))
    assert len(parts) == 5  # 6 good + 3 unreadable-file clips (the join's 4 never reach a part), 2 per part
    parts[-1].unlink()  # as if the build had been killed before its last part

    resumed = msa_here(
        capsys,
        *build_args(
            root, out, *FAST, "--clips-per-part", "2", "--max-bad-share", "0.6", "--keep-parts", "--valid-share", "0.4"
        ),
    )  # unfinished: other settings ok
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "5 parts of up to 2 clips: 4 reused from an earlier run, 1 extracted" in resumed.stderr, resumed.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] is True and manifest["bad"] == expected and manifest["valid_share"] == 0.4
    good = sorted(c for c in corpus_ids(root) if not c.startswith("id19999"))
    assert sorted([*read_split(out / "train"), *read_split(out / "valid")]) == good
    assert len(list((out / "parts").glob("part-*.npz"))) == 5  # --keep-parts

    shown = msa(tmp_path, "pretrain-data", "inspect", out)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "finished" in shown.stdout and "6 of 13 clips used; left out: empty_transcript 1" in shown.stdout
    assert "no_face 1: id19999/bad_no_face/00001" in shown.stdout and "parts: 5 files" in shown.stdout
    assert f"train: {manifest['splits']['train']} clips" in shown.stdout and "MB on disk" in shown.stdout, shown.stdout


@pytest.mark.slow
def test_killed_pyin_build_resumes_with_the_clips_not_yet_done(tmp_path, capsys):
    """A build killed (-9) after its first parts goes on from them (the re-run in this process); pyin's log F0 of
    the synthetic tones is right."""
    root = make_synthetic_corpus(tmp_path / "corpus", clips=5, seed=7, sample_rate=16000)
    out = tmp_path / "shards"
    args = build_args(
        root, out, "--f0", "pyin", "--sample-rate", "16000", "--valid-share", "0.3", "--clips-per-part", "1"
    )
    proc = subprocess.Popen(
        [*MSA, *map(str, args)],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def finished_parts() -> list[Path]:  # a part is written to a temporary name, then renamed
        return [p for p in (out / "parts").glob("part-*.npz") if ".tmp" not in p.name]

    deadline = time.monotonic() + 300
    while not finished_parts() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = len(finished_parts())
    assert 1 <= done < 5 and not (out / "train").exists()

    resumed = msa_here(capsys, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"5 parts of up to 1 clips: {done} reused from an earlier run, {5 - done} extracted" in resumed.stderr
    assert not list(out.rglob("*.tmp*"))  # a part the kill cut short is not reused nor left behind
    items = {**read_split(out / "train"), **read_split(out / "valid")}
    assert sorted(items) == corpus_ids(root)
    for item in items.values():  # synthetic tones lie between 120 and 240 Hz; unvoiced frames are 0
        voiced = item["audio"][:, 0][item["audio"][:, 0] != 0]
        assert len(voiced) > len(item["audio"]) / 2 and (np.abs(voiced - np.log(180)) < np.log(240 / 180) + 0.2).all()


@pytest.mark.slow
def test_build_input_errors_are_one_line(tmp_path, capsys):
    root = make_synthetic_corpus(tmp_path / "corpus", clips=2, seed=1, sample_rate=16000)
    (root / "transcripts.tsv").write_text("id10000/yt0000/00001 no tab here\n")
    line = one_line_error(msa_here(capsys, *build_args(root, tmp_path / "out", *FAST)))
    assert "transcripts.tsv:1: expected `id<TAB>text`" in line, line
    line = one_line_error(msa_here(capsys, *build_args(root, tmp_path / "out", *FAST[:2], "--sample-rate", "8000")))
    assert "--sample-rate 8000 --hop-length 512 --f0 zcr: the audio features cannot be computed" in line, line
    assert "Nyquist" in line and not (tmp_path / "out").exists()


def test_pretrain_corpus_transcripts_through_msa(tmp_path):
    """`msa pretrain-data build` on a transcript file saved with a BOM and CRLF keeps every clip (no id
    '\\ufeffid...'); a Latin-1 byte is one error line naming the file and line, and nothing is built."""
    root = make_synthetic_corpus(tmp_path / "corpus", clips=4, seed=4, sample_rate=16000)
    tsv = root / "transcripts.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    tsv.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    out = tmp_path / "shards"
    run = msa(tmp_path, *build_args(root, out, *FAST, "--audio-frames", "10", "--vision-frames", "5"))
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["used"] == 4 and manifest["bad"] == {}, manifest
    ids = sorted(line.split("\t")[0] for line in lines)
    assert sorted([*read_split(out / "train"), *read_split(out / "valid")]) == ids

    tsv.write_bytes(tsv.read_bytes().replace(b" the ", b" th\xe9 ", 1))  # saved as Latin-1
    number = next(i for i, line in enumerate(tsv.read_bytes().split(b"\n"), 1) if b"\xe9" in line)
    line = one_line_error(msa(tmp_path, *build_args(root, tmp_path / "out2", *FAST)))
    assert f"{tsv}, line {number}: the transcript file is not UTF-8 (byte 0xe9" in line, line
    assert not (tmp_path / "out2").exists()
