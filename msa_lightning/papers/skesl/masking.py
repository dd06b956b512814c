"""SKESL's sentiment word masking (Qian et al., Findings of ACL 2023, Sections 3.2 and 4.3).

For each transcript the word with the highest sentiment intensity ``|score|`` in VADER's lexicon is
replaced by ``[MASK]``, every one of its word pieces, and its score, linearly scaled from VADER's
``[-4, 4]`` to the MOSI/MOSEI label range ``[-3, 3]`` (a factor of 3/4), becomes the label the
pretraining task predicts. A transcript without a lexicon word gets one word chosen at random masked,
with label 0.0 ("no sentiment here").

Choices the paper leaves open, made here:

* **Words.** A word is a run of letters/digits with inner apostrophes (``don't``) or a run of
  punctuation; punctuation runs are never chosen. The lexicon is the one SWRM uses
  (:func:`msa_lightning.data.lexicon.vader_words`: alphabetic VADER entries, and each apostrophe
  entry also without its apostrophe, as MOSI writes ``dont``) with VADER's mean valence as score.
  Lookup is case-insensitive. Ties in ``|score|`` go to the word that comes first.
* **Every occurrence** of a lexicon word is masked (as the authors' released code does), so that a
  second copy cannot give it away; the model's prediction reads the mean of the outputs at all masked
  pieces (:mod:`msa_lightning.papers.skesl.module`).
* **The random fallback** (``fallback``): ``per_epoch`` (default, the released code) masks the one
  occurrence drawn, and draws it anew every training epoch (from ``(seed, epoch, clip id)``; epoch 0 is
  the draw of ``(seed, clip id)``); ``fixed`` draws one word per clip once and masks every occurrence of it.
* **Truncation** (``recenter``): a lexicon word beyond ``max_length`` tokens moves the token window so
  that the word sits in its middle (the released code; default on); off, only words that keep at least
  one piece within ``max_length`` tokens can be chosen.
* **When.** The lexicon choice is deterministic, so it is computed once and cached in the store (kind
  ``skesl_masked``, epoch 0); the DataModules re-mask the training batches of later epochs when the
  fallback is drawn per epoch. Draws are seeded per clip, so they depend neither on the corpus order nor
  on how the build is split across workers, ranks or resumed runs.

Tokenisation is one batched call of a fast (Rust) tokenizer over pre-split words
(``is_split_into_words``), whose ``word_ids`` map pieces back to words; the choice of word and the
masking are numpy array operations over the whole set of texts.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from msa_lightning.data.sampling import id_draws
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.store import Store, local_fingerprint
from msa_lightning.textfiles import iter_text_lines

#: VADER's valence range and the MOSI/MOSEI label range it is scaled to (Section 4.3)
VADER_BOUND = 4.0
LABEL_BOUND = 3.0
#: a word (letters/digits, inner apostrophes) or a run of punctuation
_WORD = re.compile(r"(\w+(?:['\u2019]\w+)*)|([^\w\s]+)")
STORE_KIND = "skesl_masked"
#: the random fallback's rules: one occurrence drawn per epoch (the released code), or every occurrence, once
FALLBACKS = ("per_epoch", "fixed")


@dataclasses.dataclass(frozen=True)
class IntensityLexicon:
    """Lower-case word -> sentiment intensity already scaled to ``[-3, 3]``."""

    scores: Mapping[str, float]
    name: str

    @functools.cached_property
    def fingerprint(self) -> str:
        text = "\n".join(f"{w}\t{self.scores[w]!r}" for w in sorted(self.scores))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @functools.cached_property
    def sorted_words(self) -> tuple[np.ndarray, np.ndarray]:
        """Words sorted (for ``np.searchsorted``) and their scores in the same order."""
        words = np.array(sorted(self.scores), dtype=str)
        return words, np.array([self.scores[w] for w in words.tolist()], dtype=np.float64)


def _scaled_table(pairs, keep: set[str] | None, name: str) -> IntensityLexicon:
    scores: dict[str, float] = {}
    variants: dict[str, float] = {}
    for word, valence in pairs:
        word = word.strip().lower()
        if keep is not None and word not in keep:
            continue
        scaled = float(valence) * LABEL_BOUND / VADER_BOUND
        scores[word] = scaled
        if "'" in word:
            variants.setdefault(word.replace("'", ""), scaled)
    for word, scaled in variants.items():
        scores.setdefault(word, scaled)  # a real entry wins over an apostrophe-less variant
    return IntensityLexicon(scores, name)


@functools.lru_cache(maxsize=4)
def load_intensity_lexicon(spec: str = "vader", min_valence: float = 0.0) -> IntensityLexicon:
    """``"vader"`` (the ``vaderSentiment`` package's lexicon, the word set of
    :func:`~msa_lightning.data.lexicon.vader_words`) or a file in VADER's format (``word<TAB>mean
    valence in [-4, 4]<TAB>...``). Scores are scaled to ``[-3, 3]``."""
    if spec == "vader":
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        from msa_lightning.data.lexicon import vader_words

        keep = vader_words(min_valence)
        name = "vader" if min_valence == 0 else f"vader>{min_valence:g}"
        return _scaled_table(SentimentIntensityAnalyzer().lexicon.items(), keep, name)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"lexicon {spec!r}: expected 'vader' or a file in VADER's format (word<TAB>valence), "
            f"and {path} is not a file"
        )
    pairs = []
    for number, line in iter_text_lines(path, "lexicon file"):
        parts = line.split("\t")
        if not line.strip() or line.startswith("#"):
            continue
        try:
            valence = float(parts[1])
        except (IndexError, ValueError):
            raise DataError(f"{path}:{number}: expected word<TAB>valence, found {line[:80]!r}") from None
        if not -VADER_BOUND <= valence <= VADER_BOUND:
            raise DataError(f"{path}:{number}: valence {valence} of {parts[0]!r} is outside [-4, 4]")
        if abs(valence) > min_valence:
            pairs.append((parts[0], valence))
    if not pairs:
        raise DataError(f"{path}: no lexicon entries")
    return _scaled_table(pairs, None, path.name)


@dataclasses.dataclass
class MaskedText:
    """The masked transcripts of ``N`` clips, padded to ``L`` tokens.

    Attributes:
        ids: ``[N, 3, L]`` int64 token ids (with ``[MASK]`` in place of the chosen word), attention
            mask and segment ids: the layout of the suite's ``text_bert``.
        target: ``[N, L]`` bool, True on the masked pieces (the positions the prediction reads).
        label: ``[N]`` float32, the chosen word's scaled intensity (0.0 for the random fallback).
        from_lexicon: ``[N]`` bool, whether the chosen word is a lexicon word.
        word: ``[N]`` str, the masked word (lower case).
    """

    ids: np.ndarray
    target: np.ndarray
    label: np.ndarray
    from_lexicon: np.ndarray
    word: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "ids": self.ids,
            "target": self.target,
            "label": self.label,
            "from_lexicon": self.from_lexicon,
            "word": self.word,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "MaskedText":
        return cls(**{k: np.asarray(arrays[k]) for k in ("ids", "target", "label", "from_lexicon", "word")})


def split_words(text: str) -> tuple[list[str], list[bool]]:
    """The words of ``text`` and, for each, whether it can be masked (not a punctuation run)."""
    words, maskable = [], []
    for match in _WORD.finditer(text):
        words.append(match.group(0))
        maskable.append(match.group(1) is not None)
    return words, maskable


def fast_tokenizer(tokenizer):
    """``tokenizer`` (a name or path is loaded) checked for what masking needs: a fast tokenizer (its
    ``word_ids`` find a word's tokens) with a mask token; anything else is one :class:`ConfigError`."""
    if isinstance(tokenizer, str):
        from msa_lightning.nn.pretrained import PretrainedNotAvailable, load_tokenizer

        try:
            tokenizer = load_tokenizer(tokenizer)
        except PretrainedNotAvailable as err:
            raise ConfigError(f"tokenizer {tokenizer!r} cannot be loaded: {err}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"sentiment word masking needs a fast tokenizer (word_ids), got {type(tokenizer).__name__}")
    if tokenizer.mask_token_id is None:
        raise ConfigError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no mask token")
    return tokenizer


def mask_sentiment_words(
    texts: Sequence[str],
    tokenizer,
    max_length: int = 50,
    lexicon: IntensityLexicon | str = "vader",
    ids: Sequence[str] | None = None,
    seed: int = 0,
    where: str = "texts",
    fallback: str = "per_epoch",
    epoch: int = 0,
    recenter: bool = True,
) -> MaskedText:
    """Mask the most sentiment-laden word of each text (module docstring).

    Args:
        texts: transcripts, one per clip.
        tokenizer: a fast Hugging Face tokenizer, or its name/path (``tiny-bert`` for tests).
        max_length: token length including ``[CLS]``/``[SEP]`` (longer texts are truncated).
        lexicon: an :class:`IntensityLexicon` or a spec for :func:`load_intensity_lexicon`.
        ids: clip ids (seed the random fallback and name clips in errors); default the row numbers.
        seed: seed of the random fallback.
        where: what ``texts`` are, for error messages (e.g. a file and split).
        fallback: ``per_epoch`` (one occurrence, drawn per epoch) or ``fixed`` (every occurrence of a
            word drawn once).
        epoch: the training epoch of a ``per_epoch`` draw.
        recenter: a lexicon word beyond ``max_length`` moves the token window onto it.

    Raises:
        DataError: a text without any word (empty or blank), naming the clips.
    """
    if max_length < 3:
        raise ConfigError(f"max_length={max_length}: needs room for [CLS], one word and [SEP] (>= 3)")
    if fallback not in FALLBACKS:
        raise ConfigError(f"random fallback {fallback!r}: expected one of {list(FALLBACKS)}")
    tokenizer = fast_tokenizer(tokenizer)
    lex = load_intensity_lexicon(lexicon) if isinstance(lexicon, str) else lexicon
    n = len(texts)
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} texts")
    split = [split_words(str(t)) for t in texts]
    counts = np.array([len(w) for w, _ in split], dtype=np.int64)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(ids[i] for i in empty[:5])
        raise DataError(
            f"{where}: {len(empty)} transcript(s) without any word to mask (ids {shown}"
            f"{', ...' if len(empty) > 5 else ''})"
        )
    words_per = [w for w, _ in split]
    enc = tokenizer(
        words_per,
        is_split_into_words=True,
        max_length=max_length,
        padding="max_length",
        truncation=True,
        return_token_type_ids=True,
        return_attention_mask=True,
        return_tensors="np",
    )
    # word index of every token, -1 on special and padding tokens ([N, L]; None becomes NaN)
    word_of = np.array([enc.word_ids(i) for i in range(n)], dtype=np.float64)
    word_of = np.nan_to_num(word_of, nan=-1).astype(np.int64)

    # every word of every text in one flat array, and its (row, column) in an [N, W] word grid
    width = int(counts.max())
    rows = np.repeat(np.arange(n), counts)
    cols = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    flat_words = np.array([w for ws in words_per for w in ws], dtype=str)
    keys = np.strings.lower(flat_words)
    maskable = np.zeros((n, width), dtype=bool)
    maskable[rows, cols] = np.fromiter((m for _, ms in split for m in ms), dtype=bool, count=len(rows))

    lex_words, lex_scores = lex.sorted_words
    pos = np.searchsorted(lex_words, keys).clip(max=max(len(lex_words) - 1, 0))
    hit = (lex_words[pos] == keys) if len(lex_words) else np.zeros(len(keys), dtype=bool)
    score = np.zeros((n, width))
    score[rows, cols] = np.where(hit, lex_scores[pos] if len(lex_words) else 0.0, 0.0)
    in_lexicon = np.zeros((n, width), dtype=bool)
    in_lexicon[rows, cols] = hit

    present = np.zeros((n, width + 1), dtype=bool)  # column `width` collects the -1 of special tokens
    present[np.repeat(np.arange(n), word_of.shape[1]), word_of.ravel()] = True
    present = present[:, :width]
    candidates = in_lexicon & maskable & present
    from_lexicon = candidates.any(axis=1)
    best = np.where(candidates, np.abs(score), -1.0).argmax(axis=1)  # first of the highest |score|

    # the random fallback: the k-th present maskable word (or any present word if none is maskable)
    pool = maskable & present
    pool = np.where(pool.any(axis=1, keepdims=True), pool, present)
    draws = id_draws(ids, seed if fallback == "fixed" or epoch == 0 else seed * 1_000_003 + int(epoch))
    k = np.minimum((draws * pool.sum(axis=1)).astype(np.int64), pool.sum(axis=1) - 1)
    random_pick = (np.cumsum(pool, axis=1) > k[:, None]).argmax(axis=1)
    chosen = np.where(from_lexicon, best, random_pick)

    # every occurrence of a lexicon word (same lower-case form) is masked, in all its pieces; a random
    # fallback word every occurrence (fixed) or the drawn one only (per_epoch)
    _, key_code = np.unique(keys, return_inverse=True)
    code = np.full((n, width), -1, dtype=np.int64)
    code[rows, cols] = key_code
    chosen_code = code[np.arange(n), chosen]
    every = from_lexicon | (fallback == "fixed")
    only_drawn = np.arange(width)[None, :] == chosen[:, None]
    words_masked = np.where(every[:, None], (code == chosen_code[:, None]) & present, only_drawn)
    masked_words = np.concatenate([words_masked, np.zeros((n, 1), dtype=bool)], axis=1)
    target = masked_words[np.arange(n)[:, None], word_of]  # word_of == -1 reads the all-False last column

    input_ids = np.where(target, tokenizer.mask_token_id, enc["input_ids"]).astype(np.int64)
    text = np.stack([input_ids, enc["attention_mask"].astype(np.int64), enc["token_type_ids"].astype(np.int64)], axis=1)
    label = np.where(from_lexicon, score[np.arange(n), chosen], 0.0).astype(np.float32)
    flat_index = np.cumsum(counts) - counts + chosen
    masked = MaskedText(ids=text, target=target, label=label, from_lexicon=from_lexicon, word=keys[flat_index])
    if recenter:
        # rows whose strongest lexicon word lies beyond the window: the window moves onto it
        usable = in_lexicon & maskable
        strongest = np.where(usable, np.abs(score), -1.0).argmax(axis=1)
        beyond = np.flatnonzero(usable.any(axis=1) & ~present[np.arange(n), strongest])
        if len(beyond):
            starts = _window_starts(tokenizer, [words_per[i] for i in beyond], strongest[beyond], max_length)
            moved = mask_sentiment_words(
                [" ".join(words_per[i][s:]) for i, s in zip(beyond, starts)],
                tokenizer,
                max_length,
                lex,
                [ids[i] for i in beyond],
                seed,
                where,
                fallback,
                epoch,
                recenter=False,
            )
            for name, value in moved.arrays().items():
                getattr(masked, name)[beyond] = value
    return masked


def _window_starts(tokenizer, words: list[list[str]], target: np.ndarray, max_length: int) -> list[int]:
    """The first word of a window of ``max_length - 2`` pieces with word ``target`` in its middle."""
    enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    budget, starts = max_length - 2, []
    for row, (ws, t) in enumerate(zip(words, target)):  # only the few rows whose word lies beyond the window
        pieces = np.bincount(
            np.array([w for w in enc.word_ids(row) if w is not None], dtype=np.int64), minlength=len(ws)
        )
        before = np.concatenate([[0], np.cumsum(pieces)])  # pieces before each word
        room = max((budget - int(pieces[t])) // 2, 0)
        starts.append(int(np.searchsorted(before, before[t] - room, side="left")))
    return starts


def masked_text_cached(
    texts: Sequence[str],
    tokenizer: str,
    max_length: int,
    lexicon: str = "vader",
    ids: Sequence[str] | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    where: str = "texts",
    fallback: str = "per_epoch",
    recenter: bool = True,
) -> MaskedText:
    """:func:`mask_sentiment_words` (epoch 0) through the store (kind ``skesl_masked``), keyed by the texts, the
    clip ids, the tokenizer (and the files of a local one), the length, the lexicon's content
    fingerprint and the seed."""
    store = Store(cache_dir)
    texts = [str(t) for t in texts]
    ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
    lex = load_intensity_lexicon(lexicon)
    inputs = {
        "tokenizer": tokenizer,
        "max_length": int(max_length),
        "lexicon": lex.fingerprint,
        "seed": int(seed),
        "fallback": fallback,
        "recenter": bool(recenter),
        "texts": hashlib.sha256("\x00".join(texts).encode()).hexdigest(),
        "ids": hashlib.sha256("\x00".join(ids).encode()).hexdigest(),
        "count": len(texts),
    }
    if (files := local_fingerprint(tokenizer, store.root)) is not None:  # a local tokenizer: its files decide
        inputs["tokenizer_files"] = files

    def build():
        masked = mask_sentiment_words(texts, tokenizer, max_length, lex, ids, seed, where, fallback, 0, recenter)
        share = float(masked.from_lexicon.mean()) if len(texts) else 0.0
        return masked.arrays(), {"lexicon": lex.name, "share_from_lexicon": share}

    return MaskedText.from_arrays(store.get_or_build(STORE_KIND, inputs, build).arrays())


def check_fallback(value: str) -> str:
    """``data.init_args.random_fallback`` checked: one of :data:`FALLBACKS`."""
    if value not in FALLBACKS:
        raise ConfigError(f"data.init_args.random_fallback: expected one of {list(FALLBACKS)}, found {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------- data module
