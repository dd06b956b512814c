"""Reading the suite's text inputs the same way everywhere.

Transcript TSVs, ``label.csv``, pipeline YAML, lexicon and id lists are read as UTF-8 with an optional
byte-order mark (Excel and Notepad write one), and Windows line ends (CRLF) are tolerated. A byte that is
not UTF-8 (a file saved as Latin-1 or GBK) is one :class:`~msa_lightning.errors.DataError` naming the file
and the line, never a ``UnicodeDecodeError`` traceback, and never a silently replaced character; a BOM
never becomes part of the first id.

* :func:`read_text` — the whole file as one string, line ends ``\\n``;
* :func:`iter_text_lines` — ``(line number, line)`` pairs, streamed (large transcript files);
* :func:`read_text_lines` — the lines as a list;
* :func:`open_text` — a text stream for ``csv`` and ``yaml`` readers.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

from msa_lightning.errors import DataError, MSAError

BOM = b"\xef\xbb\xbf"


def _not_utf8(path: Path, what: str, line: int, raw: bytes, start: int, error: type[MSAError]) -> MSAError:
    """``path, line N: the transcript file is not UTF-8 (byte 0xe9 at column 7) ...``"""
    column = len(raw[:start].decode("utf-8", errors="replace")) + 1
    return error(
        f"{path}, line {line}: the {what} is not UTF-8 (byte 0x{raw[start]:02x} at column {column}); "
        f"save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
    )


def _read_bytes(path: Path, what: str, error: type[MSAError]) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror or type(err).__name__})") from None


def read_text(path: str | Path, what: str = "file", error: type[MSAError] = DataError) -> str:
    """The text of ``path``: UTF-8, a leading BOM dropped, CRLF turned into ``\\n``.

    ``what`` names the file in messages (``"transcript file"``); ``error`` is the class raised
    (:class:`DataError` for data, :class:`~msa_lightning.errors.ConfigError` for settings files).
    """
    path = Path(path)
    raw = _read_bytes(path, what, error)
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        line_end = raw.find(b"\n", err.start)
        line = raw[line_start : len(raw) if line_end < 0 else line_end]
        raise _not_utf8(path, what, raw.count(b"\n", 0, err.start) + 1, line, err.start - line_start, error) from None
    return text.replace("\r\n", "\n")


def iter_text_lines(
    path: str | Path, what: str = "file", error: type[MSAError] = DataError
) -> Iterator[tuple[int, str]]:
    """``(number, line)`` of every line (from 1, without its line end), read as :func:`read_text` reads."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror or type(err).__name__})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            raw = raw.rstrip(b"\n").removesuffix(b"\r")
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, what, number, raw, err.start, error) from None


def read_text_lines(path: str | Path, what: str = "file", error: type[MSAError] = DataError) -> list[str]:
    """Every line of ``path`` (without line ends), read as :func:`read_text` reads."""
    return [line for _, line in iter_text_lines(path, what, error)]


def open_text(path: str | Path, what: str = "file", error: type[MSAError] = DataError) -> io.StringIO:
    """A text stream of ``path`` (read whole, as :func:`read_text` reads) for ``csv.reader``, ``yaml`` etc."""
    return io.StringIO(read_text(path, what, error), newline="")


def read_yaml_mapping(path: str | Path, what: str, expected: str) -> dict:
    """A YAML file that holds a mapping (a pipeline, a sweep definition); a missing file, bad YAML or another kind of
    document is one ConfigError starting with ``"{what} {path}: "`` (``expected``: what the mapping should hold)."""
    import yaml

    from msa_lightning.errors import ConfigError

    where = f"{what} {path}"
    if not Path(path).is_file():
        raise ConfigError(f"{where}: file not found")
    try:
        document = yaml.safe_load(read_text(path, f"{what} file", ConfigError))
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: expected a mapping with {expected}")
    return document
