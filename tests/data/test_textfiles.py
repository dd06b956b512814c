"""msa_lightning.textfiles: UTF-8 with an optional BOM, CRLF tolerated, a byte that is not UTF-8 named by line."""

from __future__ import annotations

import csv

import pytest

from msa_lightning.errors import ConfigError, DataError
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
