"""msa_lightning.textfiles: UTF-8 with an optional BOM, CRLF tolerated, a byte that is not UTF-8 named by line."""

from __future__ import annotations

import csv
import json

import pytest

from msa_lightning.errors import ConfigError, DataError
from msa_lightning.media.synthetic import make_synthetic_corpus
from msa_lightning.textfiles import iter_text_lines, open_text, read_text, read_text_lines


def test_bom_and_crlf_are_read_away(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_bytes(b"\xef\xbb\xbfid1\tcaf\xc3\xa9\r\nid2\tdeux\r\n\r\nid3\tlast")
    assert read_text(f) == "id1\tcaf\u00e9\nid2\tdeux\n\nid3\tlast"
    assert read_text_lines(f) == ["id1\tcaf\u00e9", "id2\tdeux", "", "id3\tlast"]
    assert list(iter_text_lines(f))[0] == (1, "id1\tcaf\u00e9")
    f.write_bytes(b'\xef\xbb\xbfvideo_id,text\r\nv,"two\r\nlines"\r\n')
    assert list(csv.DictReader(open_text(f))) == [{"video_id": "v", "text": "two\nlines"}]
    f.write_bytes(b"a\nb\n")  # plain UTF-8, LF
    assert read_text_lines(f) == ["a", "b"]
    f.write_bytes(b"")
    assert read_text(f) == "" and read_text_lines(f) == []


def test_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_bytes(b"id1\tok\r\nid2\tcaf\xe9 cr\xe8me\r\n")
    for read in (read_text, read_text_lines):
        with pytest.raises(DataError) as info:
            read(f, "transcript file")
        assert str(info.value).startswith(f"{f}, line 2: the transcript file is not UTF-8 (byte 0xe9 at column 8)")
    f.write_bytes("\u00e9t\u00e9\n".encode("utf-8") + b"\xff")  # columns count characters, not bytes
    with pytest.raises(DataError, match=r"line 2: the file is not UTF-8 \(byte 0xff at column 1\)"):
        read_text(f)
    with pytest.raises(ConfigError, match="line 1: the pipeline file is not UTF-8"):
        read_text_lines(_write(tmp_path / "p.yaml", b"name: caf\xe9\n"), "pipeline file", ConfigError)


def test_missing_file_and_folder_are_errors(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: ids file not found"):
        read_text_lines(tmp_path / "nope.tsv", "ids file")
    with pytest.raises(DataError, match="cannot read the label file"):
        read_text(tmp_path, "label file")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------- through `msa`
def test_transcript_files_through_msa(synthetic_mosi, tmp_path):
    """`msa data wer` reads a gold file with a BOM and CRLF (its first id is not '\\ufeffa'); `msa fit` with an ASR
    transcript file holding a Latin-1 byte is one error line naming the file and line."""
    from conftest import assert_one_line_error, run_msa
    from test_asr import fit_swrm_ibm

    (tmp_path / "asr").mkdir()
    (tmp_path / "asr" / "gold.tsv").write_bytes(b"\xef\xbb\xbfa\tI WAS REALLY UPSET\r\nb\tGOOD MOVIE\r\n")
    (tmp_path / "asr" / "toy.tsv").write_bytes(b"a\tI WAS REALLY SET\nb\tGOOD MOVIE\n")
    wer = run_msa("data", "wer", "--dir", tmp_path / "asr", cache=tmp_path / "cache")
    assert wer.returncode == 0, wer.stdout + wer.stderr[-3000:]
    assert "| toy | 2 | 0 | 16.67 |" in wer.stdout  # 2 utterances matched, none missing

    bad = tmp_path / "ibm.tsv"
    bad.write_bytes(b"synthtrain0000_0\tHELLO\nsynthtrain0001_0\tNA\xefVE\n")
    result = fit_swrm_ibm(synthetic_mosi, bad, tmp_path)
    assert_one_line_error(result, f"{bad}, line 2: the transcript file is not UTF-8 (byte 0xef at column 20)")


def test_pretrain_corpus_transcripts_through_msa(tmp_path):
    """`msa pretrain-data build` on a transcript file saved with a BOM and CRLF keeps every clip (no id
    '\\ufeffid...'); a Latin-1 byte is one error line naming the file and line, and nothing is built."""
    from test_skesl_shards import FAST, build_args, msa, one_line_error, read_split

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
