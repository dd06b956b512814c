"""ASR transcripts for MOSI: reading, matching to feature files, word error rate, sentiment substitutions.

Transcript files hold one utterance per line, ``id<TAB>text`` (UTF-8, a byte-order mark and CRLF line
ends tolerated; another encoding is an error naming the line: :mod:`msa_lightning.textfiles`). Ids are
normalised like the feature files' (``{video}$_${clip}`` -> ``{video}_{clip}``), so both spellings match.

Matching a transcript file to a feature file never misaligns silently: :func:`apply_transcripts`
reports every id the file lacks and treats it by an explicit policy:

* ``"error"`` — raise, naming the missing ids (the default of the DataModule);
* ``"gold"``  — keep the feature file's own (gold) text for those utterances;
* ``"empty"`` — use an empty transcript (what a real system that produced nothing would give).

A fill policy logs the count and the ids, and still fails when the share of missing ids exceeds
``max_missing_share`` (a setting of the DataModule, default 1%); a file that matches none of the
ids (the wrong file, or ids written another way) always fails, naming an example id of each side.

The statistics that motivate SWRM (Wu et al., 2022, Section 1 and Appendix A):

* corpus word error rate, ``(S + D + I) / N`` summed over utterances, from a word-level
  Levenshtein alignment of each ASR transcript against the gold one;
* the share of utterances in which a gold sentiment word (per a lexicon) is aligned to a
  *different* word of the ASR transcript (a substitution; deletions are reported separately).

Before comparing, words are normalised: upper case, punctuation other than apostrophes turned
into spaces, and bracketed markers such as ``[UNK]`` (what the IBM and iFlytek files hold for an
utterance they did not recognise) dropped, so such an utterance counts as all deletions (the
error count is the same as with one substitution). Apostrophes are kept by default: that
reproduces the paper's Table 3 exactly on the real files (SpeechBrain 37.54, IBM 29.70, iFlytek
23.91). The gold transcripts are written without apostrophes and SpeechBrain with them, so
``DON'T`` against ``DONT`` counts as an error; ``strip_apostrophes`` compares the spellings
``DONT``/``DONT`` instead (SpeechBrain then scores 35.11).

``msa data wer`` runs :func:`compare_transcript_files`.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

from msa_lightning.data.lexicon import DEFAULT_LEXICON, SentimentLexicon, load_lexicon
from msa_lightning.data.reader import normalise_id
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.textfiles import iter_text_lines, open_text

log = logging.getLogger(__name__)

MissingPolicy = Literal["error", "gold", "empty"]
MISSING_POLICIES = ("error", "gold", "empty")
#: transcript sources of the SWRM paper, in the order of its tables
ASR_SOURCES = ("gold", "speechbrain", "ibm", "iflytek")
#: word error rates the SWRM paper reports (Appendix A, Table 3), in percent
PAPER_WER = {"speechbrain": 37.54, "ibm": 29.70, "iflytek": 23.91}


class TranscriptError(DataError):
    """A transcript file is malformed or does not cover the utterances it must cover."""


# ----------------------------------------------------------------------------- reading
def read_transcripts(path: str | Path) -> dict[str, str]:
    """``{normalised id: text}`` of an ``id<TAB>text`` file (blank lines skipped).

    A line without a tab, or one id given two different texts, raises :class:`TranscriptError`
    naming the file and line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TranscriptError(f"{path}: transcript file not found (expected lines `id<TAB>text`)")
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in iter_text_lines(path, "transcript file", TranscriptError):
        if not line.strip():
            continue
        if "\t" not in line:
            raise TranscriptError(f"{path}:{number}: expected `id<TAB>text`, found no tab in {line[:60]!r}")
        raw_id, text = line.split("\t", 1)
        key = normalise_id(raw_id.strip())
        text = text.strip()
        if key in out and out[key] != text:
            raise TranscriptError(
                f"{path}:{number}: id {key!r} appears again (first on line {first_line[key]}) with a different text"
            )
        out.setdefault(key, text)
        first_line.setdefault(key, number)
    return out


def read_labels_csv(path: str | Path, split: str | None = None) -> dict[str, str]:
    """Gold texts of a MOSI ``labels.csv`` (``video_id``, ``clip_id``, ``text``, ``mode``), optionally
    of one split (``train``/``valid``/``test``)."""
    path = Path(path).expanduser()
    rows = list(csv.DictReader(open_text(path, "label file", TranscriptError)))
    need = {"video_id", "clip_id", "text"} | ({"mode"} if split else set())
    if not rows or not need <= set(rows[0]):
        raise TranscriptError(f"{path}: expected a CSV with columns {sorted(need)}")
    return {f"{r['video_id']}_{r['clip_id']}": r["text"].strip() for r in rows if split is None or r["mode"] == split}


def read_text_source(path: str | Path) -> dict[str, str]:
    """A ``.tsv`` transcript file, or the ``text`` column of a ``labels.csv``."""
    return read_labels_csv(path) if str(path).lower().endswith(".csv") else read_transcripts(path)


def apply_transcripts(
    ids: Sequence[str],
    transcripts: dict[str, str],
    fallback: Sequence[str] | None = None,
    missing: MissingPolicy = "error",
    where: str = "transcripts",
    max_missing_share: float = 1.0,
) -> tuple[list[str], list[str]]:
    """Texts for ``ids`` (in their order) from ``transcripts``; returns ``(texts, missing_ids)``.

    Ids absent from ``transcripts`` follow ``missing`` (see the module docstring); ``fallback``
    holds the texts the ``"gold"`` policy keeps; a fill policy fails when more than
    ``max_missing_share`` of the ids are absent. ``where`` names the source in messages.
    """
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"missing={missing!r}: expected one of {MISSING_POLICIES}")
    keys = [normalise_id(i) for i in ids]
    absent = [k for k in keys if k not in transcripts]
    if keys and len(absent) == len(keys):
        example = next(iter(transcripts), None)
        raise TranscriptError(
            f"{where}: the transcript file matches none of the {len(keys)} utterance ids "
            f"(feature file ids look like {keys[0]!r}, transcript ids like {example!r}); "
            "is it the transcript file of this dataset?"
        )
    if absent:
        shown = ", ".join(absent[:20]) + (f", ... ({len(absent)} in all)" if len(absent) > 20 else "")
        if missing == "error":
            raise TranscriptError(
                f"{where}: no transcript for {len(absent)} of {len(keys)} utterances: {shown}. "
                "Set missing='gold' to keep the feature file's text for them, or "
                "missing='empty' to use an empty transcript."
            )
        if missing == "gold" and fallback is None:
            raise ValueError("missing='gold' needs the gold texts (fallback)")
        share = len(absent) / len(keys)
        if share > max_missing_share:
            raise TranscriptError(
                f"{where}: no transcript for {len(absent)} of {len(keys)} utterances "
                f"({100 * share:.1f}%, more than max_missing_share={max_missing_share:g}): {shown}"
            )
        log.warning(
            "%s: no transcript for %d of %d utterances (%s); using the %s text for them",
            where,
            len(absent),
            len(keys),
            shown,
            "gold" if missing == "gold" else "empty",
        )
    texts = []
    for i, k in enumerate(keys):
        if k in transcripts:
            texts.append(transcripts[k])
        else:
            texts.append(fallback[i] if missing == "gold" else "")
    return texts, absent


# ----------------------------------------------------------------------------- alignment
_MARKER = re.compile(r"\[[^\]]*\]")
_NON_WORD = re.compile(r"[^0-9A-Z]+")


def normalise_words(text: str, strip_apostrophes: bool = False) -> list[str]:
    """Upper-case words, punctuation (and apostrophes if ``strip_apostrophes``) split off, ``[MARKERS]`` dropped."""
    text = _MARKER.sub(" ", text.upper())
    if strip_apostrophes:
        text = text.replace("'", "").replace("\u2019", "")
        return _NON_WORD.sub(" ", text).split()
    return re.sub(r"[^0-9A-Z']+", " ", text).split()


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    """Minimum edit-distance alignment of two word sequences.

    Returns ``(op, ref_word, hyp_word)`` in order, ``op`` one of ``"C"`` (correct), ``"S"``
    (substitution), ``"D"`` (deletion: ref word missing from hyp), ``"I"`` (insertion). Unit costs;
    among equally cheap alignments the back-trace prefers a match/substitution, then a deletion.

    Why not ``jiwer``: it gives the same WER (the tests check it on the real files), but it breaks
    ties towards deletion + insertion pairs, which changes the S/D/I split and the sentiment-word
    substitution share this module reports (IBM: 15.1% instead of 16.3%; the paper: 17.6%).
    """
    n, m = len(ref), len(hyp)
    # cost[i][j]: distance between ref[:i] and hyp[:j]
    cost = [list(range(m + 1))] + [[i] + [0] * m for i in range(1, n + 1)]
    for i in range(1, n + 1):
        row, prev, r = cost[i], cost[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (r != hyp[j - 1])
            row[j] = min(diag, prev[j] + 1, row[j - 1] + 1)
    ops = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("C" if ref[i - 1] == hyp[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            ops.append(("D", ref[i - 1], None))
            i -= 1
        else:
            ops.append(("I", None, hyp[j - 1]))
            j -= 1
    return ops[::-1]


def corpus_wer(refs: Iterable[Sequence[str]], hyps: Iterable[Sequence[str]]) -> float:
    """``sum(S + D + I) / sum(len(ref))`` over paired word sequences (a fraction, not percent)."""
    errors = words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        errors += sum(op != "C" for op, _, _ in align_words(ref, hyp))
        words += len(ref)
    return errors / max(words, 1)


def sentiment_substitutions(ref: Sequence[str], hyp: Sequence[str], lexicon: SentimentLexicon) -> list[tuple[str, str]]:
    """``(gold word, ASR word)`` pairs where a gold sentiment word is aligned to a different word."""
    return [(r, h) for op, r, h in align_words(ref, hyp) if op == "S" and r in lexicon]


# ----------------------------------------------------------------------------- report
@dataclass
class SourceReport:
    """Comparison of one transcript source with gold (counts over the compared utterances)."""

    name: str
    utterances: int  #: utterances present in both gold and this source
    missing: list[str]  #: gold ids this source lacks (not compared)
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    with_sentiment: int  #: compared utterances whose gold text holds a sentiment word
    sentiment_substituted: int  #: ... in which one of them is replaced by another word
    sentiment_deleted: int  #: ... in which one of them is deleted (and none substituted)

    @property
    def wer(self) -> float:
        return (self.substitutions + self.deletions + self.insertions) / max(self.ref_words, 1)

    @property
    def substitution_share(self) -> float:
        """Share of compared utterances with a substituted gold sentiment word (the paper's statistic)."""
        return self.sentiment_substituted / max(self.utterances, 1)


def compare_transcripts(
    gold: dict[str, str],
    hyp: dict[str, str],
    lexicon: SentimentLexicon,
    name: str = "asr",
    strip_apostrophes: bool = False,
) -> SourceReport:
    """WER and sentiment-word substitutions of ``hyp`` against ``gold`` (both ``{id: text}``)."""
    common = [i for i in gold if i in hyp]
    missing = [i for i in gold if i not in hyp]
    counts = {"S": 0, "D": 0, "I": 0}
    ref_words = with_sentiment = substituted = deleted = 0
    for i in common:
        ref = normalise_words(gold[i], strip_apostrophes)
        ops = align_words(ref, normalise_words(hyp[i], strip_apostrophes))
        for op, _, _ in ops:
            if op != "C":
                counts[op] += 1
        ref_words += len(ref)
        if any(w in lexicon for w in ref):
            with_sentiment += 1
        if any(op == "S" and r in lexicon for op, r, _ in ops):
            substituted += 1
        elif any(op == "D" and r in lexicon for op, r, _ in ops):
            deleted += 1
    return SourceReport(
        name,
        len(common),
        missing,
        ref_words,
        counts["S"],
        counts["D"],
        counts["I"],
        with_sentiment,
        substituted,
        deleted,
    )


def format_reports(reports: Sequence[SourceReport], lexicon: SentimentLexicon) -> str:
    """A Markdown table (WER and sentiment shares in percent) plus notes on missing ids."""
    lines = [
        f"lexicon: {lexicon.name} ({len(lexicon)} words)",
        "",
        "| source | utterances | missing | WER % | paper WER % | S | D | I | sent. subst. % | sent. deleted % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in reports:
        paper = PAPER_WER.get(r.name.lower())
        lines.append(
            f"| {r.name} | {r.utterances} | {len(r.missing)} | {100 * r.wer:.2f} | "
            f"{'' if paper is None else f'{paper:.2f}'} | {r.substitutions} | {r.deletions} | {r.insertions} | "
            f"{100 * r.substitution_share:.1f} | {100 * r.sentiment_deleted / max(r.utterances, 1):.1f} |"
        )
    for r in reports:
        if r.missing:
            lines.append(
                f"\n{r.name}: no transcript for {', '.join(r.missing[:10])}"
                + (f" (+{len(r.missing) - 10} more)" if len(r.missing) > 10 else "")
                + " (not compared)"
            )
    lines.append(
        "\nsent. subst. %: utterances where a gold sentiment word is aligned to a different ASR word;"
        "\nsent. deleted %: utterances where one is deleted (and none substituted)."
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files
@dataclass
class TranscriptComparison:
    """:func:`compare_transcript_files`' result: each source's report against the gold transcripts."""

    gold_path: Path
    gold_utterances: int
    split: str | None
    lexicon: SentimentLexicon
    reports: list[SourceReport]

    def table(self) -> str:
        """Where the gold came from, then :func:`format_reports`' table and notes."""
        split = f", split {self.split}" if self.split else ""
        head = f"gold: {self.gold_path} ({self.gold_utterances} utterances{split})"
        return head + "\n" + format_reports(self.reports, self.lexicon)


def sources_in_folder(folder: str | Path, gold_path: str | Path) -> list[tuple[str, Path]]:
    """``(name, file)`` of every ``*.tsv`` in ``folder`` except the gold file, the known ASR systems first
    (:data:`ASR_SOURCES` order), then by name."""
    gold = Path(gold_path).resolve()
    found = [(f.stem, f) for f in sorted(Path(folder).expanduser().glob("*.tsv")) if f.resolve() != gold]
    order = {name: i for i, name in enumerate(ASR_SOURCES)}
    return sorted(found, key=lambda s: (order.get(s[0], len(order)), s[0]))


def compare_transcript_files(
    gold_path: str | Path,
    sources: Sequence[tuple[str, str | Path]],
    *,
    labels: str | Path | None = None,
    split: str | None = None,
    lexicon: str = DEFAULT_LEXICON,
    min_valence: float = 0.0,
    strip_apostrophes: bool = False,
) -> TranscriptComparison:
    """WER and sentiment-word substitutions of each ``(name, transcript file)`` against the gold file (a ``.tsv``,
    or a ``labels.csv``), optionally on the utterances of one ``split`` (named by ``labels``, a ``labels.csv`` with
    a ``mode`` column; default: the gold file itself). A missing or malformed file is a DataError naming it."""
    gold_path = Path(gold_path).expanduser()
    if split and labels is None and gold_path.suffix.lower() != ".csv":
        raise ConfigError("--split needs --labels (or a labels.csv as --gold)")
    gold = read_text_source(gold_path)
    if split:
        keep = read_labels_csv(labels or gold_path, split)
        gold = {k: v for k, v in gold.items() if k in keep}
    try:
        words = load_lexicon(lexicon, min_valence)
    except (FileNotFoundError, ValueError) as err:  # a lexicon file that is missing or empty
        raise DataError(str(err)) from None
    reports = [
        compare_transcripts(gold, read_transcripts(path), words, name, strip_apostrophes) for name, path in sources
    ]
    return TranscriptComparison(gold_path, len(gold), split, words, reports)
