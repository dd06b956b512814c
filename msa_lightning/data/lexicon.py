"""Sentiment lexicons: which words count as sentiment words.

SWRM (Wu et al., 2022, Section 3.1) counts the sentiment words among a masked LM's candidates with
Hu & Liu's opinion lexicon plus the MPQA subjectivity lexicon. Neither ships with a maintained
Python package, so the default here is VADER's lexicon (``vaderSentiment``, every word with a
non-zero mean valence); any word list can be used instead:

* ``"vader"`` — VADER's lexicon, alphabetic entries of two or more letters (emoticons dropped),
  ``|valence| > min_valence``;
* a plain word list, one word per line; blank lines and lines starting with ``#`` or ``;`` are
  comments (Hu & Liu's ``positive-words.txt``/``negative-words.txt`` read as they are); a line may
  carry more columns after a tab or space, only the first is the word;
* an MPQA ``subjclueslen1-HLTEMNLP05.tff`` file (lines of ``key=value`` pairs, the word in ``word1=``).

Several sources can be combined: ``load_lexicon(["pos.txt", "neg.txt", "mpqa.tff"])`` or, from a
config or command line, one string separated by commas.

Words are lower-cased; a word written with an apostrophe is also entered without it (``don't`` ->
``dont``), because the MOSI transcripts are written without apostrophes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from msa_lightning.textfiles import read_text_lines

DEFAULT_LEXICON = "vader"


@dataclass(frozen=True)
class SentimentLexicon:
    """A set of lower-case sentiment words with a name and a content fingerprint (for cache keys)."""

    words: frozenset[str]
    name: str

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.lower() in self.words

    def __len__(self) -> int:
        return len(self.words)

    @property
    def fingerprint(self) -> str:
        """SHA-256 prefix of the sorted words: equal word sets give equal cache keys."""
        return hashlib.sha256("\n".join(sorted(self.words)).encode()).hexdigest()[:16]


def _with_variants(words: Iterable[str]) -> set[str]:
    out = set()
    for w in words:
        w = w.strip().lower()
        if not w:
            continue
        out.add(w)
        if "'" in w:
            out.add(w.replace("'", ""))
    return out


def vader_words(min_valence: float = 0.0) -> set[str]:
    """Alphabetic VADER entries of two or more letters (apostrophes and hyphens allowed) with
    ``|mean valence| > min_valence``."""
    try:
        import vaderSentiment.vaderSentiment as vader
    except ImportError:  # pragma: no cover - the package is a dependency
        raise ImportError(
            "the default lexicon needs the `vaderSentiment` package; install it or pass a word-list file as the lexicon"
        ) from None
    path = Path(os.path.dirname(vader.__file__)) / "vader_lexicon.txt"
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        word, valence = parts[0], float(parts[1])
        if abs(valence) > min_valence and len(word) > 1 and word.replace("'", "").replace("-", "").isalpha():
            words.append(word)
    return _with_variants(words)


def read_word_list(path: str | Path) -> set[str]:
    """Words of a word-list or MPQA ``.tff`` file (format in the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"lexicon file {path} not found (expected one word per line, or an MPQA .tff file)")
    words = []
    for line in read_text_lines(path, "lexicon file"):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if "word1=" in line:  # MPQA subjectivity clues
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            words.append(fields.get("word1", ""))
        else:
            words.append(line.split()[0])
    found = _with_variants(words)
    if not found:
        raise ValueError(f"lexicon file {path} holds no words")
    return found


def load_lexicon(
    spec: str | Path | Iterable[str | Path] = DEFAULT_LEXICON, min_valence: float = 0.0
) -> SentimentLexicon:
    """A lexicon from ``"vader"``, word-list/MPQA files, or a comma-separated mix of them.

    ``min_valence`` only applies to VADER: keep words with ``|valence| > min_valence``.
    """
    if isinstance(spec, (str, Path)):
        parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    else:
        parts = [str(p) for p in spec]
    if not parts:
        raise ValueError("empty lexicon specification; use 'vader' or word-list file paths")
    words: set[str] = set()
    names = []
    for part in parts:
        if part.lower() == "vader":
            words |= vader_words(min_valence)
            names.append("vader" if min_valence == 0 else f"vader>{min_valence:g}")
        else:
            words |= read_word_list(part)
            names.append(Path(part).name)
    return SentimentLexicon(frozenset(words), "+".join(names))
