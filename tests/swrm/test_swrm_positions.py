"""SWRM's sentiment word position detection (Section 3.1) with a toy masked LM whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from msa_lightning.data.lexicon import load_lexicon
from msa_lightning.nn.pretrained import load_model
from msa_lightning.papers.swrm.positions import (
    candidate_tables,
    compute_sentiment_positions,
    masked_copies,
    topk_batched,
    topk_one_position_per_pass,
    word_spans,
)

SENTIMENT = ["great", "awesome", "sad", "upset", "terrible", "love", "hate"]
NEUTRAL = ["the", "movie", "story", "actor", "plot", "scene", "film"]


class ToyMLM(nn.Module):
    """Logits at a position depend only on the token before it: after ``really`` the top-7 are
    :data:`SENTIMENT` (in that order), after ``so`` only the top-2 are, elsewhere :data:`NEUTRAL`.
    Counts forward passes and rows so tests can check batching and caching."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        vocab = len(tokenizer)
        ids = lambda words: tokenizer.convert_tokens_to_ids(words)  # noqa: E731
        table = torch.zeros(vocab, vocab)
        for rank, i in enumerate(ids(NEUTRAL)):
            table[:, i] = 10.0 - 0.1 * rank
        really, so = ids(["really", "so"])
        for rank, i in enumerate(ids(SENTIMENT)):
            table[really, i] = 20.0 - 0.1 * rank
        for rank, i in enumerate(ids(SENTIMENT[:2])):
            table[so, i] = 30.0 - 0.1 * rank
        self.register_buffer("table", table)
        self.calls = self.rows = 0

    def forward(self, input_ids, attention_mask=None):
        self.calls += 1
        self.rows += input_ids.shape[0]
        return self.table[torch.roll(input_ids, 1, dims=1)]  # [B, L, V]


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory):
    f = tmp_path_factory.mktemp("lex") / "words.txt"
    f.write_text("\n".join(SENTIMENT))
    return load_lexicon(str(f))


TEXTS = [
    "I WAS REALLY SET ABOUT IT",  # s = 4 ("set", after "really"), 5 of 5 candidates are sentiment -> p = 1
    "THE MOVIE WAS SET",  # no sentiment anywhere: s = 1 (first word), p = 0
    "XYZZY REALLY QQQ IT",  # "xyzzy" = 5 pieces (1-5), "really" 6, "qqq" = 3 pieces starting at 7 -> s = 7
    "THE PLOT SO BORING",  # after "so" 2 of 5 are sentiment: s = 4 ("boring"), p = 0 at threshold 0.5
    "",  # no words: s = 0, p = 0, [MASK] candidates
]


def test_word_spans_mask_whole_words(tok):
    ids, spans = word_spans(TEXTS[2:3], tok, 50)
    assert tok.convert_ids_to_tokens(ids[0])[:8] == ["[CLS]", "x", "##y", "##z", "##z", "##y", "really", "q"]
    assert spans[0] == [(1, 6), (6, 7), (7, 10), (10, 11)]
    copies = masked_copies(ids[0], spans[0], tok.mask_token_id)
    seq, pos = copies[2]
    assert pos == 7 and seq[7] == tok.mask_token_id and len(seq) == len(ids[0]) - 2  # 3 pieces -> 1 [MASK]
    _, short = word_spans(["I WAS REALLY SET ABOUT IT"], tok, 5)  # truncation as the DataModule's
    assert short[0] == [(1, 2), (2, 3), (3, 4)]


def test_toy_mlm_positions_gates_and_candidates(tok, lexicon):
    k = 5
    toy = ToyMLM(tok)
    r = compute_sentiment_positions(
        TEXTS, tok, toy, k=k, threshold=0.5, lexicon=lexicon, max_length=50, progress=False, device="cpu"
    )
    assert r.position.tolist() == [4, 1, 7, 4, 0]
    assert r.gate.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert r.count.tolist() == [5, 0, 5, 2, 0]
    assert r.num_words.tolist() == [6, 4, 4, 4, 0]
    expected = tok.convert_tokens_to_ids(SENTIMENT[:k])
    assert r.candidates[0].tolist() == expected and r.candidates[2].tolist() == expected
    assert r.candidates[4].tolist() == [tok.mask_token_id] * k
    # lower threshold: 2 of 5 beats 5 * 0.3 = 1.5
    low = compute_sentiment_positions(
        TEXTS, tok, toy, k=k, threshold=0.3, lexicon=lexicon, progress=False, device="cpu"
    )
    assert low.gate.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    extras = r.extras()
    assert extras["swrm_position"].dtype == np.int64 and extras["swrm_candidates"].shape == (5, k)


def test_batched_equals_one_position_per_pass(tok, lexicon):
    torch.manual_seed(0)
    mlm = load_model("tiny-bert", masked_lm=True).eval()  # real HF masked LM: encoder + head path
    allowed, _ = candidate_tables(tok, lexicon)
    ids, spans = word_spans(TEXTS + ["I LOVE THIS MOVIE SO MUCH IT WAS GREAT"], tok, 50)
    copies = [c for seq, sp in zip(ids, spans) for c in masked_copies(seq, sp, tok.mask_token_id)]
    batched = topk_batched(mlm, copies, 6, allowed, batch_size=7, progress=False)
    naive = topk_one_position_per_pass(mlm, copies, 6, allowed)
    assert np.array_equal(batched, naive)
    assert allowed[batched].all()  # never special tokens or ## pieces
    toy = ToyMLM(tok)
    topk_batched(toy, copies, 5, allowed, batch_size=8, progress=False)
    assert toy.calls == math.ceil(len(copies) / 8) and toy.rows == len(copies)


def test_cache_recomputes_only_what_changed(tok, lexicon, tmp_path):
    toy = ToyMLM(tok)
    kw = dict(
        tokenizer=tok,
        mlm=toy,
        k=5,
        lexicon=lexicon,
        cache_dir=tmp_path,
        progress=False,
        device="cpu",
        mlm_name="toy",
        tokenizer_name="tiny-bert",
        source="toy",
    )
    first = compute_sentiment_positions(TEXTS, threshold=0.5, **kw)
    words = int(first.num_words.sum())
    assert toy.rows == words
    again = compute_sentiment_positions(TEXTS, threshold=0.5, **kw)  # final file: no masked LM at all
    assert toy.rows == words and np.array_equal(again.position, first.position)
    other = compute_sentiment_positions(TEXTS, threshold=0.3, **kw)  # new threshold: stored top-k reused
    assert toy.rows == words and other.gate[3] == 1.0
    compute_sentiment_positions(TEXTS, threshold=0.5, **{**kw, "lexicon": load_lexicon()})  # new lexicon: same
    assert toy.rows == words
    edited = TEXTS[:1] + ["THE MOVIE WAS REALLY SAD"] + TEXTS[2:]  # one transcript changed: only it runs
    changed = compute_sentiment_positions(edited, threshold=0.5, **kw)
    assert toy.rows == words + 5
    assert changed.position[1] == 5 and changed.gate[1] == 1.0
    compute_sentiment_positions(TEXTS, threshold=0.5, **{**kw, "k": 6})  # new k: a new top-k store
    assert toy.rows == 2 * words + 5
    with pytest.raises(ValueError, match="names"):
        compute_sentiment_positions(TEXTS, tok, toy, cache_dir=tmp_path, progress=False)
