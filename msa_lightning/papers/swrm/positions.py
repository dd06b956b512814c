"""SWRM's sentiment word position detection (Wu et al., 2022, Section 3.1), as a cached precompute.

For an utterance of words ``w_1 .. w_n`` each word is masked in turn, a masked language model
predicts the top-``k`` tokens for the masked slot, and ``k_i`` counts how many of them are sentiment
words (per a lexicon). The most likely sentiment position is ``s = argmax_i k_i`` (the first one on
ties) and the gate is ``p = 1`` if ``k_s > k * threshold`` (the paper: ``k_s > k / 2``), else 0.
Per utterance we keep ``s``, ``p`` and the ``k`` candidate token ids predicted at ``s``: the
refinement module attends over their embeddings (Eq. 3).

**Word pieces (whole-word masking).** ``s`` is a position of the model's input tokens (``[CLS]``
at 0), from the same tokenizer and ``max_length`` as the DataModule's re-tokenisation. A word
split into several pieces (``upset`` -> ``up ##set``) is masked as a whole: its pieces are
replaced by a *single* ``[MASK]``, so the masked LM predicts one whole word for the slot, and the
word's position is its first piece. Candidates are restricted to tokens that can stand for a
whole word: special tokens and continuation pieces (``##...``) are never candidates and never
count as sentiment words (for SentencePiece/BPE vocabularies: only word-start tokens, see
:func:`candidate_tables`). A candidate is a sentiment word when the token (lower-cased) is in the
lexicon. The refinement then replaces the embedding of the first piece only (Eq. 4 replaces one
embedding); the other pieces of the word stay in place.

**Batching.** All masked copies of all utterances are built first, sorted by length and run
through the masked LM in large batches; only the hidden state of each copy's ``[MASK]`` slot goes
through the LM head (``[B, V]`` logits instead of ``[B, L, V]``).
:func:`topk_one_position_per_pass` is the naive reference (one forward pass per masked position)
used by the tests and the benchmark.

**Cache.** Two levels in the :class:`~msa_lightning.store.Store` (``cache_dir``):

* kind ``swrm_topk``: shards holding, for every distinct text, the top-``k`` ids at each word
  position; every shard records the settings it was computed with (masked LM, tokenizer,
  ``max_length``, ``k``, masking policy). New transcripts (another ASR system, an edited file)
  only run the texts not seen before, written as a new shard; the lexicon and the threshold do
  not enter this level, so changing them reruns no masked LM at all;
* kind ``swrm_positions``: the final ``s``, ``p``, candidates of one list of texts, keyed by the
  top-k settings, the texts, threshold and lexicon fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from msa_lightning.data.lexicon import DEFAULT_LEXICON, SentimentLexicon, load_lexicon
from msa_lightning.store import Store, local_fingerprint

log = logging.getLogger(__name__)

#: bump when the masking policy or the stored layout changes (enters every cache key)
POLICY = "whole-word-single-mask-v1"


@dataclass
class SentimentPositions:
    """Per utterance: ``position`` s ``[N]`` (token index, ``[CLS]`` = 0), ``gate`` p ``[N]`` (0/1),
    ``candidates`` ``[N, k]`` token ids predicted at s, ``count`` k_s ``[N]``, ``num_words`` ``[N]``."""

    position: np.ndarray
    gate: np.ndarray
    candidates: np.ndarray
    count: np.ndarray
    num_words: np.ndarray

    def __len__(self) -> int:
        return len(self.position)

    def extras(self) -> dict[str, np.ndarray]:
        """The arrays as ``batch.extras`` carries them (``swrm_position``/``swrm_gate``/``swrm_candidates``)."""
        return {
            "swrm_position": self.position.astype(np.int64),
            "swrm_gate": self.gate.astype(np.float32),
            "swrm_candidates": self.candidates.astype(np.int64),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "position": self.position,
            "gate": self.gate,
            "candidates": self.candidates,
            "count": self.count,
            "num_words": self.num_words,
        }

    @classmethod
    def from_arrays(cls, arrays) -> "SentimentPositions":
        return cls(*(np.asarray(arrays[name]) for name in ("position", "gate", "candidates", "count", "num_words")))


# ----------------------------------------------------------------------------- tokens and words
def word_spans(texts: Sequence[str], tokenizer, max_length: int) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids (with ``[CLS]``/``[SEP]``, truncated like the DataModule) and each word's
    ``[start, end)`` token span. Needs a fast tokenizer (``word_ids``); with a slow one every
    non-special token is its own word (single-piece masking)."""
    enc = tokenizer(list(texts), max_length=max_length, truncation=True, padding=False)
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    ids_all, spans_all = [], []
    for i, ids in enumerate(enc["input_ids"]):
        try:
            word_ids = enc.word_ids(i)
        except (ValueError, AttributeError):  # slow tokenizer
            word_ids = [None if t in special else j for j, t in enumerate(ids)]
        spans: list[tuple[int, int]] = []
        previous = None
        for j, w in enumerate(word_ids):
            if w is None:
                previous = None
                continue
            if w == previous:
                spans[-1] = (spans[-1][0], j + 1)
            else:
                spans.append((j, j + 1))
            previous = w
        ids_all.append(list(ids))
        spans_all.append(spans)
    return ids_all, spans_all


def masked_copies(ids: Sequence[int], spans: Sequence[tuple[int, int]], mask_id: int) -> list[tuple[list[int], int]]:
    """One copy per word with the word's pieces replaced by a single ``[MASK]``: ``(ids, mask position)``."""
    return [(list(ids[:a]) + [mask_id] + list(ids[b:]), a) for a, b in spans]


def candidate_tables(tokenizer, lexicon: SentimentLexicon) -> tuple[np.ndarray, np.ndarray]:
    """``allowed [V]`` (tokens that may be candidates) and ``sentiment [V]`` (allowed tokens whose
    word is in the lexicon), over the tokenizer's vocabulary.

    Special tokens are never allowed. Word-start conventions: WordPiece vocabularies (BERT) mark
    continuation pieces with ``##``, which are excluded; SentencePiece/byte-level BPE vocabularies
    (XLNet ``▁``, RoBERTa ``Ġ``) mark word starts instead, so only marked tokens are allowed and the
    marker is stripped before the lexicon lookup.
    """
    tokens = [t if isinstance(t, str) else "" for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
    special = set(tokenizer.all_special_ids)
    marker = next((m for m in ("\u2581", "\u0120") if sum(t.startswith(m) for t in tokens) > len(tokens) // 10), None)
    allowed, words = np.zeros(len(tokens), dtype=bool), []
    for i, t in enumerate(tokens):
        if marker is None:
            ok, word = bool(t) and not t.startswith("##"), t
        else:
            ok, word = t.startswith(marker) and len(t) > len(marker), t[len(marker) :]
        allowed[i] = ok and i not in special
        words.append(word.lower())
    sentiment = np.array([a and w in lexicon.words for a, w in zip(allowed, words)], dtype=bool)
    return allowed, sentiment


# ----------------------------------------------------------------------------- masked LM
def masked_slot_logits(
    mlm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Logits ``[B, V]`` of the masked LM at ``positions [B]`` of each sequence.

    Uses, in order: a ``masked_slot_logits`` method of the model (toy models in tests); the encoder
    plus LM head of Hugging Face masked LMs (``base_model`` + ``cls``/``lm_head``/...), which runs the
    head on the selected states only; or the full ``[B, L, V]`` logits, then gathers.
    """
    rows = torch.arange(len(positions), device=input_ids.device)
    if hasattr(mlm, "masked_slot_logits"):
        return mlm.masked_slot_logits(input_ids, attention_mask, positions)
    base = getattr(mlm, "base_model", None)
    head = next(
        (getattr(mlm, n) for n in ("cls", "lm_head", "predictions") if isinstance(getattr(mlm, n, None), nn.Module)),
        None,
    )
    if base is not None and base is not mlm and head is not None:
        states = base(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        return head(states[rows, positions])
    out = mlm(input_ids=input_ids, attention_mask=attention_mask)
    logits = out.logits if hasattr(out, "logits") else out
    return logits[rows, positions]


def _allowed_on(allowed: np.ndarray, vocab: int, device) -> torch.Tensor:
    table = np.zeros(vocab, dtype=bool)
    n = min(vocab, len(allowed))
    table[:n] = allowed[:n]
    return torch.from_numpy(table).to(device)


@torch.inference_mode()
def topk_batched(
    mlm: nn.Module,
    copies: Sequence[tuple[list[int], int]],
    k: int,
    allowed: np.ndarray,
    pad_id: int = 0,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Top-``k`` allowed token ids ``[len(copies), k]`` (int32) at each copy's masked slot, in batches
    of ``batch_size`` copies of similar length."""
    device = torch.device(device) if device is not None else _model_device(mlm)
    out = np.zeros((len(copies), k), dtype=np.int32)
    if not copies:
        return out
    lengths = np.array([len(c[0]) for c in copies])
    order = np.argsort(-lengths, kind="stable")
    starts = range(0, len(order), batch_size)
    bar = _progress(len(starts), progress, "SWRM positions (masked LM batches)")
    table = None
    for start in starts:
        chunk = order[start : start + batch_size]
        width = int(lengths[chunk].max())
        ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
        for row, c in enumerate(chunk):  # building inputs, not a forward pass
            seq = copies[c][0]
            ids[row, : len(seq)] = seq
        ids_t = torch.from_numpy(ids).to(device)
        mask_t = (torch.arange(width)[None, :] < torch.from_numpy(lengths[chunk])[:, None]).long().to(device)
        pos_t = torch.tensor([copies[c][1] for c in chunk], device=device)
        logits = masked_slot_logits(mlm, ids_t, mask_t, pos_t).float()
        if table is None:
            table = _allowed_on(allowed, logits.shape[-1], logits.device)
        top = logits.masked_fill(~table, float("-inf")).topk(k, dim=-1).indices
        out[chunk] = top.cpu().numpy().astype(np.int32)
        bar.update(1)
    bar.close()
    return out


@torch.inference_mode()
def topk_one_position_per_pass(
    mlm: nn.Module,
    copies: Sequence[tuple[list[int], int]],
    k: int,
    allowed: np.ndarray,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """The naive reference: one forward pass per masked position (tests and benchmark only)."""
    device = torch.device(device) if device is not None else _model_device(mlm)
    out = np.zeros((len(copies), k), dtype=np.int32)
    for i, (seq, pos) in enumerate(copies):
        ids = torch.tensor([seq], device=device)
        logits = masked_slot_logits(mlm, ids, torch.ones_like(ids), torch.tensor([pos], device=device)).float()
        table = _allowed_on(allowed, logits.shape[-1], logits.device)
        out[i] = logits.masked_fill(~table, float("-inf")).topk(k, dim=-1).indices[0].cpu().numpy()
    return out


def _model_device(mlm: nn.Module) -> torch.device:
    try:
        return next(mlm.parameters()).device
    except StopIteration:
        return torch.device("cpu")


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="batch")


# ----------------------------------------------------------------------------- selection
def select_positions(
    starts: Sequence[np.ndarray],
    topk: Sequence[np.ndarray],
    sentiment: np.ndarray,
    k: int,
    threshold: float,
    mask_id: int,
) -> SentimentPositions:
    """``s``, ``p`` and candidates from each utterance's word starts ``[n_i]`` and top-k ids ``[n_i, k]``.

    ``k_i`` = number of sentiment tokens among the top-k of word i; ``s`` = first argmax; ``p`` =
    ``k_s > k * threshold``. An utterance without words gets ``s = 0``, ``p = 0`` and ``[MASK]``
    candidates (the refinement leaves it unchanged).
    """
    n = len(starts)
    num_words = np.array([len(s) for s in starts], dtype=np.int64)
    width = max(int(num_words.max(initial=0)), 1)
    counts = np.full((n, width), -1, dtype=np.int64)
    start_pad = np.zeros((n, width), dtype=np.int64)
    cand_pad = np.full((n, width, k), mask_id, dtype=np.int64)
    table = np.zeros(max(len(sentiment), 1 + max((int(t.max()) for t in topk if t.size), default=0)), dtype=bool)
    table[: len(sentiment)] = sentiment
    for i, (s, t) in enumerate(zip(starts, topk)):  # ragged -> padded (cheap numpy copies)
        if len(s):
            counts[i, : len(s)] = table[t[:, :k]].sum(-1)
            start_pad[i, : len(s)] = s
            cand_pad[i, : len(s)] = t[:, :k]
    best = counts.argmax(axis=1)  # first maximum
    rows = np.arange(n)
    k_s = np.maximum(counts[rows, best], 0)
    has_words = num_words > 0
    position = np.where(has_words, start_pad[rows, best], 0)
    gate = (has_words & (k_s > k * threshold)).astype(np.float32)
    candidates = np.where(has_words[:, None], cand_pad[rows, best], mask_id)
    return SentimentPositions(position.astype(np.int64), gate, candidates.astype(np.int64), k_s, num_words)


# ----------------------------------------------------------------------------- cache
def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def texts_hash(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()


class TopKStore:
    """Shards (store kind ``swrm_topk``) of ``{text key: (word starts [n], top-k ids [n, k])}`` computed
    with one set of ``settings``. Every call that computes new texts writes one new shard (an
    atomic store entry), so concurrent writers never corrupt each other."""

    KIND = "swrm_topk"

    def __init__(self, store: Store, settings: dict) -> None:
        self.store, self.settings = store, dict(settings)

    def load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for entry in self.store.entries(self.KIND):
            if entry.meta["inputs"].get("settings") != self.settings:
                continue
            z = entry.arrays(mmap=False)
            offsets = np.concatenate([[0], np.cumsum(z["num_words"])])
            for key, a, b in zip(entry.meta["keys"], offsets[:-1], offsets[1:]):
                out[key] = (z["starts"][a:b], z["topk"][a:b])
        return out

    def add(self, entries: dict[str, tuple[np.ndarray, np.ndarray]], k: int) -> None:
        if not entries:
            return
        keys = sorted(entries)
        starts = [entries[key][0] for key in keys]
        topk = [entries[key][1].reshape(-1, k) for key in keys]
        arrays = {
            "num_words": np.array([len(s) for s in starts], dtype=np.int64),
            "starts": np.concatenate(starts).astype(np.int16),
            "topk": np.concatenate(topk).astype(np.int32),
        }
        self.store.put(self.KIND, {"settings": self.settings, "texts": texts_hash(keys)}, arrays, {"keys": keys})


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_sentiment_positions(
    texts: Sequence[str],
    tokenizer: str | object,
    mlm: str | nn.Module | Callable[[], nn.Module] | None = None,
    k: int = 50,
    threshold: float = 0.5,
    lexicon: str | SentimentLexicon = DEFAULT_LEXICON,
    max_length: int = 50,
    cache_dir: str | Path | None = None,
    source: str = "texts",
    batch_size: int = 512,
    device: str | None = None,
    progress: bool = True,
    mlm_name: str | None = None,
    tokenizer_name: str | None = None,
) -> SentimentPositions:
    """Detect ``s``, ``p`` and candidates for every text (Section 3.1), through the cache.

    Args:
        texts: the transcripts, one per utterance.
        tokenizer: the model's tokenizer (name, path or object); positions index its tokens.
        mlm: the masked LM: a name for :func:`~msa_lightning.nn.pretrained.load_model` (default:
            the tokenizer's name), a module, or a function returning one; loaded only when some
            text is not cached yet.
        k, threshold: top-k size and the gate threshold (``p = k_s > k * threshold``).
        lexicon: ``"vader"``, word-list files (see :mod:`msa_lightning.data.lexicon`) or a lexicon.
        max_length: token length of the model input (as the DataModule's ``text_max_length``).
        cache_dir: cache root; ``None`` computes without caching.
        source: name of the transcript source, recorded in the cache entry's meta.
        batch_size: masked copies per forward pass; ``device``: where the masked LM runs
            (default: CUDA when available).
        mlm_name, tokenizer_name: cache-key names when objects are passed.
    """
    from msa_lightning.nn.pretrained import load_model, load_tokenizer

    if not 0 < k:
        raise ValueError(f"k must be positive, got {k}")
    tok_name = tokenizer_name or (tokenizer if isinstance(tokenizer, str) else getattr(tokenizer, "name_or_path", None))
    if isinstance(mlm, str) or mlm is None:
        lm_name = mlm_name or mlm or tok_name
    else:
        lm_name = mlm_name
    if cache_dir is not None and (lm_name is None or tok_name is None):
        raise ValueError("caching needs names: pass mlm_name/tokenizer_name when giving objects")
    lex = lexicon if isinstance(lexicon, SentimentLexicon) else load_lexicon(lexicon)
    texts = list(texts)
    store = Store(cache_dir) if cache_dir is not None else None
    settings = {"policy": POLICY, "mlm": lm_name, "tokenizer": tok_name, "max_length": int(max_length), "k": int(k)}
    if store is not None:  # local models: their files, not their paths, decide the predictions
        for key, name in (("mlm_files", lm_name), ("tokenizer_files", tok_name)):
            if (files := local_fingerprint(name, store.root)) is not None:
                settings[key] = files
    final = {
        "settings": settings,
        "texts": texts_hash(texts),
        "count": len(texts),
        "threshold": float(threshold),
        "lexicon": lex.fingerprint,
    }
    if store is not None and (hit := store.get("swrm_positions", final)) is not None:
        return SentimentPositions.from_arrays(hit)

    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    shards = TopKStore(store, settings) if store is not None else None
    known = shards.load() if shards is not None else {}
    keys = [text_key(t) for t in texts]
    todo = list(dict.fromkeys(t for t, key in zip(texts, keys) if key not in known))
    allowed, sentiment = candidate_tables(tok, lex)
    if todo:
        if mlm is None or isinstance(mlm, str):
            model = load_model(mlm or tok_name, masked_lm=True)
        elif isinstance(mlm, nn.Module):
            model = mlm
        else:
            model = mlm()
        device = device or default_device()
        was_training, old_device = model.training, _model_device(model)
        model.eval().to(device)
        ids, spans = word_spans(todo, tok, max_length)
        copies, owner = [], []
        for i, (seq, sp) in enumerate(zip(ids, spans)):
            copies.extend(masked_copies(seq, sp, tok.mask_token_id))
            owner.extend([i] * len(sp))
        t0 = time.perf_counter()
        top = topk_batched(model, copies, k, allowed, tok.pad_token_id or 0, batch_size, device, progress)
        log.info(
            "SWRM positions: %d new texts (%d masked copies) in %.1fs on %s (%s)",
            len(todo),
            len(copies),
            time.perf_counter() - t0,
            device,
            source,
        )
        model.train(was_training).to(old_device)
        bounds = np.concatenate([[0], np.cumsum([len(sp) for sp in spans])])
        new = {
            text_key(t): (np.array([a for a, _ in sp], dtype=np.int64), top[bounds[i] : bounds[i + 1]])
            for i, (t, sp) in enumerate(zip(todo, spans))
        }
        if shards is not None:
            shards.add(new, k)
        known.update(new)
    result = select_positions(
        [known[key][0] for key in keys], [known[key][1] for key in keys], sentiment, k, threshold, tok.mask_token_id
    )
    if store is not None:
        store.put("swrm_positions", final, result.arrays(), {"source": source})
    return result
