"""SKESL (Qian et al., Findings of ACL 2023): sentiment word masking, the non-verbal injection blocks,
pretraining and fine-tuning from the pretrained weights.

Tiny sizes throughout: the in-process ``tiny-bert`` (and its small word-piece vocabulary), synthetic
MOSI files at 5 % of the real size, 1-4 epochs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ClipError, ConfigError, DataError
from msa_lightning.media.acoustic import audio_features
from msa_lightning.media.openface import openface_columns, read_openface_csv, write_openface_csv
from msa_lightning.media.synthetic import make_synthetic_corpus
from msa_lightning.nn.pretrained import load_tokenizer
from msa_lightning.papers.skesl.data import SKESLCorpusDataModule, SKESLMaskedDataModule
from msa_lightning.papers.skesl.masking import (
    load_intensity_lexicon,
    mask_sentiment_words,
    masked_text_cached,
    split_words,
)


@pytest.fixture(scope="module")
def hand_lexicon(tmp_path_factory):
    """A VADER-format file: known valences, including both ends of VADER's [-4, 4]."""
    path = tmp_path_factory.mktemp("lex") / "lexicon.txt"
    path.write_text(
        "good\t1.9\t0.9\t[1, 2]\nhorrible\t-4.0\t0.5\t[]\nperfect\t4.0\t0.1\t[]\n"
        "hilarious\t2.4\t1\t[]\nbad\t-2.5\t1\t[]\ndon't\t-0.5\t1\t[]\n"
    )
    return load_intensity_lexicon(str(path))


def _tokens(tok, masked, row):
    return tok.convert_ids_to_tokens(masked.ids[row, 0][masked.ids[row, 1] == 1])


# ------------------------------------------------------------------------------------- lexicon
def test_vader_scores_are_scaled_to_the_label_range():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    raw = SentimentIntensityAnalyzer().lexicon
    lex = load_intensity_lexicon("vader")
    for word in ("good", "awesome", "sad", "worst", "hate"):
        assert lex.scores[word] == pytest.approx(raw[word] * 3 / 4)
    assert max(abs(v) for v in lex.scores.values()) <= 3.0


def test_hand_lexicon_file_scaling_and_errors(hand_lexicon, tmp_path):
    assert hand_lexicon.scores["horrible"] == -3.0 and hand_lexicon.scores["perfect"] == 3.0
    assert hand_lexicon.scores["good"] == pytest.approx(1.425)
    assert hand_lexicon.scores["dont"] == hand_lexicon.scores["don't"] == pytest.approx(-0.375)
    bad = tmp_path / "bad.txt"
    bad.write_text("good\tvery\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected word<TAB>valence"):
        load_intensity_lexicon(str(bad))
    bad.write_text("good\t7\n")
    with pytest.raises(DataError, match="outside"):
        load_intensity_lexicon(str(bad))
    with pytest.raises(ConfigError, match="not a file"):
        load_intensity_lexicon(str(tmp_path / "absent.txt"))


# ------------------------------------------------------------------------------------- masking
def test_the_highest_intensity_word_is_masked_with_its_scaled_score(tok, hand_lexicon):
    texts = [
        "the movie was good but the end was horrible",
        "BAD acting , GOOD story",
        "good good bad",
        "horrible or perfect",
    ]
    m = mask_sentiment_words(texts, tok, 20, hand_lexicon)
    assert _tokens(tok, m, 0) == [
        "[CLS]",
        "the",
        "movie",
        "was",
        "good",
        "but",
        "the",
        "end",
        "was",
        *["[MASK]"] * _pieces(tok, "horrible"),
        "[SEP]",
    ]
    assert m.label.tolist() == pytest.approx([-3.0, -1.875, -1.875, -3.0])
    assert m.word.tolist() == ["horrible", "bad", "bad", "horrible"] and m.from_lexicon.all()
    assert _tokens(tok, m, 1) == [
        "[CLS]",
        "[MASK]",
        "acting",
        "[UNK]" if "," not in tok.vocab else ",",
        "good",
        "story",
        "[SEP]",
    ]
    assert _tokens(tok, m, 2) == ["[CLS]", "good", "good", "[MASK]", "[SEP]"]  # |bad| > |good|, wherever it is
    assert _tokens(tok, m, 3) == [
        "[CLS]",
        *["[MASK]"] * _pieces(tok, "horrible"),
        "or",
        *tok.tokenize("perfect"),
        "[SEP]",
    ]  # |-3| == |3|: the first of the two


def _pieces(tok, word):
    return len(tok.tokenize(word))


def test_whole_word_masking_and_every_occurrence(tok, hand_lexicon):
    assert _pieces(tok, "hilarious") > 1  # not in the tiny vocabulary: split into letters
    texts = ["it was hilarious and so hilarious", "hilarious"]
    m = mask_sentiment_words(texts, tok, 32, hand_lexicon)
    plain = tok(texts[0])["input_ids"]
    n = _pieces(tok, "hilarious")
    assert int(m.target[0].sum()) == 2 * n  # every piece of both occurrences
    assert m.ids[0, 0][m.target[0]].tolist() == [tok.mask_token_id] * (2 * n)
    np.testing.assert_array_equal(
        m.ids[0, 0][~m.target[0]][: len(plain) - 2 * n], np.array(plain)[~m.target[0][: len(plain)]]
    )  # nothing else changed
    assert m.label.tolist() == pytest.approx([1.8, 1.8])
    assert not m.target[:, 0].any()  # [CLS] never masked


def test_random_fallback_label_zero_seeded_per_clip(tok, hand_lexicon):
    texts = [f"the actor and the story of part {w} is a movie" for w in ("one", "two", "three", "four", "five")]
    ids = [f"clip{i}" for i in range(len(texts))]
    m = mask_sentiment_words(texts, tok, 24, hand_lexicon, ids=ids, seed=3)
    assert m.label.tolist() == [0.0] * 5 and not m.from_lexicon.any()
    fixed = mask_sentiment_words(texts, tok, 24, hand_lexicon, ids=ids, seed=3, fallback="fixed")
    assert fixed.word.tolist() == m.word.tolist()  # the same draw at epoch 0
    for row, text in enumerate(texts):  # one word, never [CLS]/[SEP]/padding: one occurrence, or all (fixed)
        assert m.word[row] in text.split()
        assert int(m.target[row].sum()) == _pieces(tok, m.word[row])
        assert int(fixed.target[row].sum()) == text.split().count(m.word[row]) * _pieces(tok, m.word[row])
        assert (m.ids[row, 1][m.target[row]] == 1).all()
    again = mask_sentiment_words(texts[::-1], tok, 24, hand_lexicon, ids=ids[::-1], seed=3)
    assert again.word[::-1].tolist() == m.word.tolist()  # depends on (seed, id), not on the order
    others = [mask_sentiment_words(texts, tok, 24, hand_lexicon, ids=ids, seed=s).word.tolist() for s in range(4, 8)]
    assert any(o != m.word.tolist() for o in others)


def test_punctuation_is_never_chosen_and_truncated_words_are_not_either(tok, hand_lexicon):
    assert split_words("good, bad!") == (["good", ",", "bad", "!"], [True, False, True, False])
    m = mask_sentiment_words(["... ! story ?"], tok, 16, hand_lexicon, ids=["p"])
    assert m.word.tolist() == ["story"]
    # the lexicon word lies beyond max_length: without recenter a word that survived truncation is chosen
    text = "the story and the plot and the end was horrible"
    m = mask_sentiment_words([text], tok, 6, hand_lexicon, recenter=False)
    assert m.label.tolist() == [0.0] and m.word[0] in {"the", "story", "and"}
    with pytest.raises(DataError, match=r"1 transcript\(s\) without any word to mask \(ids b\)"):
        mask_sentiment_words(["good", "   "], tok, 8, hand_lexicon, ids=["a", "b"])


def test_a_sentiment_word_beyond_the_limit_recentres_the_window(tok, hand_lexicon):
    """Released code: the strongest word past max_length tokens moves the window so that it sits in the middle."""
    words = "the story and the plot and then the end of it all was so bad for me and my part".split()
    m = mask_sentiment_words([" ".join(words)], tok, 10, hand_lexicon, ids=["long"])
    assert m.from_lexicon.tolist() == [True] and m.word.tolist() == ["bad"] and m.label[0] < 0
    positions = np.flatnonzero(m.target[0])
    assert (m.ids[0, 0, positions] == tok.mask_token_id).all() and m.ids[0, 1].sum() == 10
    kept = tok.decode(m.ids[0, 0, 1:9][~m.target[0, 1:9]]).split()
    assert kept[0] != "the" and "me" in " ".join(kept)  # words before and after it, not the text's start
    before, after = positions.min() - 1, 8 - positions.max()  # pieces of the window left and right of the word
    assert abs(before - after) <= max(len(positions), 2), (before, after)


def test_the_random_fallback_is_redrawn_every_epoch(tok, hand_lexicon, synthetic_mosi, tmp_path):
    """One occurrence, drawn per (seed, epoch, clip): later epochs mask other words of fallback clips; lexicon
    words stay; the DataModule swaps them into training batches of that epoch only."""
    from types import SimpleNamespace

    texts = [f"the actor and the story of part {w} is a movie" for w in ("one", "two", "three", "four", "five")]
    texts.append("a good movie")
    ids = [f"clip{i}" for i in range(len(texts))]
    by_epoch = [mask_sentiment_words(texts, tok, 24, hand_lexicon, ids=ids, seed=3, epoch=e) for e in range(4)]
    words = np.array([m.word for m in by_epoch])
    assert (words[:, -1] == "good").all() and len({tuple(w) for w in words[:, :-1]}) > 1
    with pytest.raises(ConfigError, match="random_fallback: expected one of"):
        SKESLMaskedDataModule(str(synthetic_mosi), tokenizer="tiny-bert", random_fallback="sometimes")

    dm = SKESLMaskedDataModule(
        str(synthetic_mosi), tokenizer="tiny-bert", text_max_length=24, batch_size=8, cache_dir=str(tmp_path)
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    original = batch.text_ids.clone()
    dm.trainer = SimpleNamespace(training=False, current_epoch=2)  # validation: epoch 0's masks
    assert torch.equal(dm.on_before_batch_transfer(batch, 0).text_ids, original)
    dm.trainer = SimpleNamespace(training=True, current_epoch=2)
    moved = dm.on_before_batch_transfer(batch, 0)
    rows = batch.index.numpy()
    expected = mask_sentiment_words(
        dm.splits["train"].raw_text, "tiny-bert", 24, "vader", dm.splits["train"].ids, 0, epoch=2
    )
    assert torch.equal(moved.text_ids, torch.from_numpy(expected.ids[rows, 0, : original.shape[1]]))
    lexicon = torch.from_numpy(expected.from_lexicon[rows])
    assert torch.equal(moved.text_ids[lexicon], original[lexicon])  # lexicon words: the same every epoch


def _reference_choice(tok, text, lex, max_length):
    """Word by word, the slow way: the present lexicon word of highest |score| (first on ties)."""
    words, maskable = split_words(text)
    word_ids = tok(words, is_split_into_words=True, truncation=True, max_length=max_length).word_ids()
    present = {w for w in word_ids if w is not None}
    best, best_score = None, -1.0
    for i, (word, ok) in enumerate(zip(words, maskable)):
        score = lex.scores.get(word.lower())
        if ok and i in present and score is not None and abs(score) > best_score:
            best, best_score = word.lower(), abs(score)
    return best, (lex.scores[best] if best is not None else 0.0)


def test_real_mosi_transcripts_match_a_word_by_word_reference(shared_dir, tok):
    rows = [line.rstrip("\n").split("\t", 1) for line in (shared_dir / "data/mosi/asr/gold.tsv").open()]
    ids, texts = [r[0] for r in rows], [r[1] for r in rows]
    lex = load_intensity_lexicon("vader")
    m = mask_sentiment_words(texts, tok, 32, lex, ids=ids, recenter=False)
    assert 0.5 < m.from_lexicon.mean() < 0.95  # most MOSI utterances hold a VADER word, not all
    rng = np.random.default_rng(0)
    for i in rng.choice(len(texts), 300, replace=False):
        word, label = _reference_choice(tok, texts[i], lex, 32)
        assert m.from_lexicon[i] == (word is not None), texts[i]
        assert m.label[i] == pytest.approx(label), texts[i]
        if word is not None:
            assert m.word[i] == word, texts[i]
    assert (m.target.sum(1) >= 1).all()
    assert (m.ids[:, 0][m.target] == tok.mask_token_id).all()


def test_masking_is_cached_in_the_store(tmp_path):
    from msa_lightning.store import Store

    texts, ids = ["a really good movie", "the plot"], ["x", "y"]
    first = masked_text_cached(texts, "tiny-bert", 12, ids=ids, cache_dir=tmp_path)
    entries = list(Store(tmp_path).entries("skesl_masked"))
    assert len(entries) == 1 and entries[0].meta["share_from_lexicon"] == 0.5
    again = masked_text_cached(texts, "tiny-bert", 12, ids=ids, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.ids, again.ids)
    masked_text_cached(texts, "tiny-bert", 12, ids=ids, seed=1, cache_dir=tmp_path)
    assert len(list(Store(tmp_path).entries("skesl_masked"))) == 2  # the seed is part of the key


def test_masked_datamodule_serves_unlabeled_batches(synthetic_mosi, tmp_path):
    dm = SKESLMaskedDataModule(
        str(synthetic_mosi), tokenizer="tiny-bert", text_max_length=24, batch_size=8, cache_dir=str(tmp_path)
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.labels == {}
    target, label = batch.extras["skesl_target"], batch.extras["skesl_label"]
    assert target.shape == batch.text_ids.shape and target.dtype == torch.bool
    assert (batch.text_ids[target] == load_tokenizer("tiny-bert").mask_token_id).all()
    rows = batch.index.numpy()
    np.testing.assert_array_equal(label.numpy(), dm.masked["train"].label[rows])
    assert dm.masked["train"].from_lexicon.mean() > 0.5  # the synthetic transcripts plant sentiment words
    with pytest.raises(DataError, match="unlabeled"):
        dm.train_labels()


# ------------------------------------------------------------------------------------- the network
from msa_lightning.papers.skesl.module import SKESLModule, SKESLPretrain
from msa_lightning.papers.skesl.net import NonverbalInjectionBlock, SKESLEncoder  # noqa: E402

TINY = dict(text_model="tiny-bert", num_blocks=3, ffn_dim=16, head_hidden=8, dropout=0.0, head_dropout=0.0)


def _batch(n=4, audio_dim=3, vision_dim=4, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 300, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[1, 5:] = 0
    mask[3, 3:] = 0
    ids[1, 5:] = 0
    ids[3, 3:] = 0
    target = torch.zeros(n, length, dtype=torch.bool)
    target[torch.arange(n), torch.tensor([1, 2, 4, 1])] = True
    target[2, 5] = True  # a word of two pieces
    return MSABatch(
        index=torch.arange(n),
        text_ids=ids,
        text_mask=mask,
        text_segment=torch.zeros_like(ids),
        audio=torch.randn(n, 6, audio_dim, generator=g),
        audio_lengths=torch.tensor([6, 3, 1, 4]),
        vision=torch.randn(n, 5, vision_dim, generator=g),
        vision_lengths=torch.tensor([5, 5, 2, 1]),
        extras={"skesl_target": target, "skesl_label": torch.tensor([1.5, -2.25, 0.0, 0.75])},
    )


def test_block_follows_equations_2_to_7():
    torch.manual_seed(0)
    block = NonverbalInjectionBlock(8, 3, 4, ffn_dim=16, dropout=0.0).eval()
    x, a, v = torch.randn(2, 5, 8), torch.randn(2, 6, 3), torch.randn(2, 4, 4)
    a_len, v_len = torch.tensor([6, 2]), torch.tensor([4, 3])
    out = block(x, a, a_len, v, v_len)

    def cma(att, q_in, frames, lengths):  # Eqs. 2-5 by hand, one clip at a time
        ys = []
        for b in range(len(frames)):
            kv = att.norm(frames[b, : lengths[b]])
            q, k, val = q_in[b] @ att.query.weight.T, kv @ att.key.weight.T, kv @ att.value.weight.T
            ys.append(torch.softmax(q @ k.T / 8**0.5, dim=-1) @ val)
        return torch.stack(ys)

    ln_x = block.text_norm(x)
    y = cma(block.audio, ln_x, a, a_len) + ln_x + cma(block.vision, ln_x, v, v_len)  # Eq. 6
    expected = block.ffn(block.ffn_norm(y)) + y  # Eq. 7
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_padded_frames_change_nothing():
    torch.manual_seed(0)
    encoder = SKESLEncoder("tiny-bert", 3, 4, num_blocks=2, ffn_dim=16, dropout=0.0).eval()
    batch = _batch()
    with torch.no_grad():
        ref = encoder(batch)
        for key in ("audio", "vision"):  # fill the padding with large values and pad further
            x, lengths = getattr(batch, key), getattr(batch, f"{key}_lengths")
            noisy = torch.cat([x, torch.randn(len(x), 4, x.shape[2])], dim=1) * 100
            valid = torch.arange(noisy.shape[1])[None, :] < lengths[:, None]
            noisy[valid] = x[valid[:, : x.shape[1]]]
            setattr(batch, key, noisy)
        torch.testing.assert_close(encoder(batch), ref)
        batch.audio_lengths = torch.tensor([6, 3, 0, 4])  # a clip without audio frames: Y^A = 0, still finite
        assert torch.isfinite(encoder(batch)).all()


def test_blocks_independent_by_default_and_shared_with_the_switch():
    own = SKESLEncoder("tiny-bert", 3, 4, num_blocks=4, ffn_dim=16)
    shared = SKESLEncoder("tiny-bert", 3, 4, num_blocks=4, ffn_dim=16, share_blocks=True)
    per_block = sum(p.numel() for p in own.blocks[0].parameters())
    assert len({id(b) for b in own.blocks}) == 4 and len({id(b) for b in shared.blocks}) == 1
    assert not torch.equal(own.blocks[0].audio.query.weight, own.blocks[1].audio.query.weight)
    assert sum(p.numel() for p in own.blocks.parameters()) == 4 * per_block
    assert sum(p.numel() for p in shared.blocks.parameters()) == per_block  # one block's weights, applied 4 times
    batch = _batch()
    shared.eval()
    with torch.no_grad():
        x = shared.text_encoder(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state
        for _ in range(4):
            x = shared.blocks[0](x, batch.audio, batch.audio_lengths, batch.vision, batch.vision_lengths)
        torch.testing.assert_close(shared(batch), x)


def test_gradients_reach_every_block_and_bert():
    torch.manual_seed(0)
    module = SKESLPretrain(audio_dim=3, vision_dim=4, **TINY)
    batch = _batch()
    batch.extras["skesl_label"] = torch.full((4,), 3.0)  # every error of one sign: no gradient cancels exactly
    loss, _ = module.compute_loss(module(batch), batch)
    loss.backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert len(module.net.encoder.blocks) == 3


def test_prediction_reads_the_masked_pieces_and_pooling_ignores_padding():
    torch.manual_seed(0)
    pre = SKESLPretrain(audio_dim=3, vision_dim=4, **TINY).eval()
    batch = _batch()
    with torch.no_grad():
        out = pre(batch)
        x = pre.net.encoder(batch)
        expected = pre.net.head(torch.stack([x[0, 1], x[1, 2], x[2, [4, 5]].mean(0), x[3, 1]])).squeeze(-1)
        torch.testing.assert_close(out.M, expected)
        fine = SKESLModule(audio_dim=3, vision_dim=4, **TINY).eval()
        ref = fine(batch).M
        batch.text_ids[1, 5:] = 77  # ids under the padding mask
        torch.testing.assert_close(fine(batch).M, ref)
        batch.text_ids[1, 4] = 77  # a real token
        assert not torch.allclose(fine(batch).M, ref)


def test_required_inputs_param_groups_and_the_text_only_ablation():
    module = SKESLModule(audio_dim=3, vision_dim=4, encoder_lr=5e-6, lr=1e-4, **TINY)
    assert module.required_inputs == {
        "text_ids",
        "text_mask",
        "text_segment",
        "audio",
        "audio_lengths",
        "vision",
        "vision_lengths",
    }
    groups = {g["name"]: g for g in module.parameter_groups()}
    bert = {id(p) for p in module.net.encoder.text_encoder.parameters()}
    assert groups["encoder"]["lr"] == 5e-6 and {id(p) for p in groups["encoder"]["params"]} <= bert
    assert groups["default"]["lr"] == 1e-4 and not {id(p) for p in groups["default"]["params"]} & bert
    text_only = SKESLModule(use_nonverbal=False, **TINY)  # Table 8, w/o AV: no feature sizes needed
    assert text_only.required_inputs == {"text_ids", "text_mask", "text_segment"}
    assert len(text_only.net.encoder.blocks) == 0
    batch = _batch()
    batch.audio = batch.vision = batch.audio_lengths = batch.vision_lengths = None
    assert text_only(batch).M.shape == (4,)
    frozen = SKESLPretrain(audio_dim=3, vision_dim=4, finetune_text=False, **TINY)  # the authors' pretraining script
    assert "encoder" not in {g["name"] for g in frozen.parameter_groups()}


# ------------------------------------------------------------------------------------- pretraining and fine-tuning
def _trainer(root, epochs, **kwargs):
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        **kwargs,
    )


class _EpochLosses(L.Callback):
    """Mean training loss of each epoch (weighted by batch size)."""

    def __init__(self):
        self.losses, self._sum, self._count = [], 0.0, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._sum += float(outputs["loss"]) * len(batch)
        self._count += len(batch)

    def on_train_epoch_end(self, trainer, module):
        self.losses.append(self._sum / self._count)
        self._sum, self._count = 0.0, 0


@pytest.fixture(scope="module")
def pretrained_ckpt(tmp_path_factory, synthetic_mosi):
    """Pretrain on the synthetic MOSI file read as unlabeled clips; the loss must go down."""
    root = tmp_path_factory.mktemp("skesl_pretrain")
    L.seed_everything(0)
    dm = SKESLMaskedDataModule(
        str(synthetic_mosi),
        tokenizer="tiny-bert",
        text_max_length=24,
        batch_size=16,
        normalize=True,
        cache_dir=str(root / "cache"),
    )
    module = SKESLPretrain(lr=3e-3, encoder_lr=1e-3, **{**TINY, "num_blocks": 2})
    losses = _EpochLosses()
    trainer = _trainer(root, 4, enable_checkpointing=True, limit_val_batches=1, callbacks=[losses])
    trainer.fit(module, dm)
    assert module.hparams.audio_dim == 5 and module.hparams.vision_dim == 20  # from the data
    ckpt = root / "pretrain.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt, module, losses.losses, trainer


def test_pretraining_loss_goes_down_on_unlabeled_clips(pretrained_ckpt):
    _, module, losses, trainer = pretrained_ckpt
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])), losses  # every epoch lower
    assert losses[-1] < 0.95 * losses[0], losses
    assert torch.isfinite(trainer.callback_metrics["val/loss"])  # the masking loss on held-out clips


def test_finetuning_starts_from_the_pretrained_weights(pretrained_ckpt, tmp_path):
    ckpt, pre, _, _ = pretrained_ckpt
    args = {**TINY, "num_blocks": 2, "audio_dim": 5, "vision_dim": 20}
    fine = SKESLModule(pretrained=str(ckpt), **args)
    theirs = pre.net.encoder.state_dict()
    ours = fine.net.encoder.state_dict()
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value.cpu(), rtol=0, atol=0, msg=name)
    fresh = SKESLModule(**args)  # w/o SKESL: BERT as built, new blocks
    assert not torch.equal(fresh.net.encoder.blocks[0].audio.key.weight, ours["blocks.0.audio.key.weight"])

    other = r"model.init_args.pretrained: .* \(model.init_args.num_blocks: checkpoint 2, here 3\)"
    with pytest.raises(ConfigError, match=other):
        SKESLModule(pretrained=str(ckpt), **{**args, "num_blocks": 3})
    sizes = r"model.init_args.audio_dim: checkpoint 5, here 7\); the fine-tuning features must have the pretraining's"
    with pytest.raises(ConfigError, match=sizes):
        SKESLModule(pretrained=str(ckpt), **{**args, "audio_dim": 7})
    with pytest.raises(ConfigError, match="not found"):
        SKESLModule(pretrained=str(tmp_path / "absent.ckpt"), **args)
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        SKESLModule(pretrained=str(junk), **args)
    wrong = tmp_path / "wrong.ckpt"  # a checkpoint of another model
    torch.save({"state_dict": {"net.text.weight": torch.zeros(2)}, "hyper_parameters": {}}, wrong)
    with pytest.raises(ConfigError, match="holds no SKESL encoder"):
        SKESLModule(pretrained=str(wrong), **args)
    ours_sd = {f"net.encoder.{k}": v for k, v in ours.items()}  # names and shapes checked even without hparams
    ours_sd["net.encoder.blocks.1.ffn.0.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": ours_sd}, wrong)
    with pytest.raises(ConfigError, match=r"1 shape mismatch\(es\) \(blocks.1.ffn.0.weight: checkpoint \(3, 3\)"):
        SKESLModule(pretrained=str(wrong), **args)


def test_bert_from_a_saved_folder(tmp_path):
    """``text_model`` as a local folder (how bert-base/large are used offline): its weights are loaded."""
    from msa_lightning.nn.pretrained import load_model

    torch.manual_seed(3)
    bert = load_model("tiny-bert")
    bert.save_pretrained(tmp_path / "bert")
    module = SKESLModule(**{**TINY, "text_model": str(tmp_path / "bert")}, audio_dim=3, vision_dim=4)
    loaded = module.net.encoder.text_encoder.model.state_dict()
    for name, value in bert.state_dict().items():
        if not name.startswith("pooler."):  # the unused pooler is dropped
            torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
    assert module(_batch()).M.shape == (4,)


def test_shipped_configs_parse(monkeypatch):
    """Every SKESL config parses with the CLI and holds Table 9's settings; the pipelines name real files."""
    monkeypatch.setattr(sys, "argv", ["msa"])
    import yaml

    from msa_lightning.experiments.lightning_cli import MSACLI
    from msa_lightning.training.module import MSARegressionModule

    class ParseOnly(MSACLI):
        def instantiate_classes(self) -> None:  # the data files are not needed to check the configs
            pass

    def parse(*paths):
        args = [a for p in paths for a in ("--config", str(p))]
        return ParseOnly(
            MSARegressionModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            args=args,
            auto_configure_optimizers=False,
        ).config

    folder = REPO / "configs" / "skesl"
    for path in sorted(folder.glob("*_bert*.yaml")):
        if path.name.startswith("pipeline"):
            continue
        config = parse(path)
        hp = config.model.init_args
        table9 = (hp.encoder_lr, hp.lr, hp.num_blocks, hp.head_hidden, hp.share_blocks)
        assert table9 == (5e-6, 1e-4, 4, 256, False), path
        assert config.data.init_args.batch_size == 32 and hp.optimizer == "adam", path
        assert hp.text_model == ("bert-base-uncased" if "_base" in path.name else "bert-large-uncased"), path
        if not path.name.startswith("pretrain"):
            assert config.trainer.max_epochs == 200 and hp.pretrained, path
    wo_skesl = parse(folder / "mosi_bert.yaml", folder / "ablations/wo_skesl.yaml").model.init_args
    assert wo_skesl.pretrained is None and wo_skesl.use_nonverbal
    wo_av = parse(folder / "mosi_bert.yaml", folder / "ablations/wo_av.yaml").model.init_args
    assert wo_av.pretrained is None and not wo_av.use_nonverbal
    for path in folder.glob("pipeline_*.yaml"):
        stages = [s for s in yaml.safe_load(path.read_text())["stages"] if s.get("command", "fit") == "fit"]
        assert [s["name"] for s in stages] == ["pretrain", "mosi", "mosei"], path
        for stage in stages:
            assert (path.parent / stage["args"][1]).is_file(), (path, stage["args"][1])  # relative to the file
    for dataset in ("mosi", "mosei"):  # the extracted-features overlay keeps the fine-tuning config's data class
        data = parse(folder / f"{dataset}_bert_base.yaml", folder / f"{dataset}_extracted.yaml").data
        assert data.class_path.endswith(f"{dataset.upper()}DataModule") and data.init_args.path.endswith(
            f"{dataset}_extracted.pkl"
        )


def _msa(args, cwd):
    """``msa <args>`` as a real subprocess (the store in ``cwd/cache``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MSA_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def msa_here(monkeypatch, capsys):
    """``msa <args>`` in this process, through the command's entry point (``main``: its exit status and its
    one-line ``msa: error:`` boundary), in ``cwd`` with the store in ``cwd/cache`` as :func:`_msa` sets up:
    the same result as the subprocess without its seconds of imports. (This file's real subprocess:
    the ``msa predict`` of test_msa_fit_pretrains_on_a_corpus_on_disk.)"""
    from types import SimpleNamespace

    from msa_lightning import store
    from msa_lightning.cli import main
    from msa_lightning.data import cache

    def run(args, cwd):
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(store, "DEFAULT_ROOT", cwd / "cache")
        monkeypatch.setattr(cache, "DEFAULT_CACHE_DIR", cwd / "cache")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=exit_.value.code or 0, stdout=out, stderr=err)

    return run


def test_msa_fit_finetunes_from_a_pretraining_checkpoint(tmp_path, synthetic_mosi, pretrained_ckpt, msa_here):
    """The shipped MOSI config, tiny: fine-tunes from the pretraining checkpoint; a checkpoint whose blocks
    do not fit is one clear error."""
    ckpt = pretrained_ckpt[0]
    tiny = [
        f"--data.init_args.path={synthetic_mosi}",
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.batch_size=16",
        "--data.init_args.num_workers=0",
        "--model.init_args.text_model=tiny-bert",
        "--model.init_args.num_blocks=2",
        "--model.init_args.ffn_dim=16",
        "--model.init_args.head_hidden=8",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    config = str(REPO / "configs" / "skesl" / "mosi_bert_base.yaml")
    ok = msa_here(["fit", "--config", config, f"--model.init_args.pretrained={ckpt}", *tiny], tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    saved = list((tmp_path / "runs").rglob("*.ckpt"))
    assert saved, "no checkpoint written"
    state = torch.load(saved[0], map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["pretrained"] == str(ckpt) and state["hyper_parameters"]["audio_dim"] == 5
    bad = msa_here(
        ["fit", "--config", config, f"--model.init_args.pretrained={ckpt}", *tiny, "--model.init_args.num_blocks=3"],
        tmp_path,
    )
    assert bad.returncode == 2, bad.stderr[-3000:]
    message = bad.stderr.strip().splitlines()[-1]
    assert message.startswith("msa: error: model.init_args.pretrained:") and "num_blocks" in message, message
    assert "Traceback" not in bad.stderr


def test_msa_fit_pretraining_names_an_empty_transcript(tmp_path, synthetic_mosi, msa_here):
    """The shipped pretraining config on a feature file with an empty transcript: one error naming the clip
    (a successful `msa fit` pretraining run: test_msa_fit_pretrains_on_a_corpus_on_disk)."""
    import pickle

    tiny = [
        "--data.init_args.tokenizer=tiny-bert",
        "--model.init_args.text_model=tiny-bert",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    config = str(REPO / "configs" / "skesl" / "pretrain_bert_base_featurefile.yaml")
    data = pickle.loads(synthetic_mosi.read_bytes())
    data["valid"]["raw_text"][3] = "  "
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(pickle.dumps(data))
    bad = msa_here(["fit", "--config", config, f"--data.init_args.path={broken}", *tiny], tmp_path)
    assert bad.returncode == 2, bad.stderr[-3000:]
    message = bad.stderr.strip().splitlines()[-1]
    clip = str(data["valid"]["id"][3]).replace("$_$", "_")
    assert message.startswith("msa: error:") and "without any word to mask" in message and clip in message, message
    assert "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------- corpus readers
from msa_lightning.corpus import sources as corpus  # noqa: E402


def test_openface_columns_follow_the_2x_layout():
    cols = openface_columns()
    assert len(cols) == 714 and cols[:5] == ["frame", "face_id", "timestamp", "confidence", "success"]
    groups = {
        "gaze_": 8,
        "eye_lmk_x_": 56,
        "eye_lmk_y_": 56,
        "eye_lmk_X_": 56,
        "eye_lmk_Y_": 56,
        "eye_lmk_Z_": 56,
        "pose_": 6,
        "x_": 68,
        "y_": 68,
        "X_": 68,
        "Y_": 68,
        "Z_": 68,
        "p_": 40,
    }
    for prefix, count in groups.items():
        assert sum(c.startswith(prefix) for c in cols) == count, prefix
    assert sum(c.endswith("_r") for c in cols) == 17 and sum(c.endswith("_c") for c in cols) == 18


@pytest.mark.parametrize("spaced", [False, True])
def test_openface_csv_both_spellings_and_failed_frames_zeroed(tmp_path, spaced):
    rng = np.random.default_rng(0)
    feats = np.round(rng.normal(size=(6, 709)), 3)
    success = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    path = write_openface_csv(tmp_path / "clip.csv", feats, success, spaced=spaced)
    assert (", " in path.read_text().splitlines()[1]) == spaced
    got, ok = read_openface_csv(path)
    np.testing.assert_array_equal(ok, success)
    np.testing.assert_allclose(got[success], feats[success], rtol=0, atol=1e-6)
    assert got.shape == (6, 709) and not got[~success].any()  # kept in place (time stamps), zeroed
    np.testing.assert_array_equal(corpus.read_visual_features(path), got)


def test_openface_csv_bad_clips_say_why(tmp_path):
    feats = np.zeros((3, 709))
    good = write_openface_csv(tmp_path / "good.csv", feats)
    lines = good.read_text().splitlines()
    drop_last = "\n".join(",".join(line.split(",")[:-1]) for line in lines)
    cases = {
        "short.csv": (drop_last, "wrong_columns", "group 'AU presence' is incomplete: no column 'AU45_c'"),
        "renamed.csv": (
            "\n".join([lines[0].replace("AU45_c", "AU46_c")] + lines[1:]),
            "wrong_columns",
            "no column 'AU45_c'; unknown columns \\['AU46_c'\\]",
        ),
        "ragged.csv": ("\n".join(lines[:2] + [lines[2] + ",7"]), "unreadable_csv", "unreadable OpenFace CSV"),
        "header_only.csv": (lines[0] + "\n", "no_face", "no frames"),
    }
    for name, (text, reason, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ClipError, match=words) as err:
            read_openface_csv(tmp_path / name)
        assert err.value.reason == reason and isinstance(err.value, DataError), name
    write_openface_csv(tmp_path / "noface.csv", feats, success=np.zeros(3, dtype=bool))
    with pytest.raises(ClipError, match=r"success is 0 in all 3 frames") as err:
        read_openface_csv(tmp_path / "noface.csv")
    assert err.value.reason == "no_face"


def test_fix_length_pads_and_cuts():
    x = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    padded, n = corpus.fix_length(x, 6)
    assert n == 4 and padded.shape == (6, 3) and not padded[4:].any() and (padded[:4] == x).all()
    cut, n = corpus.fix_length(x, 2)
    assert n == 2 and (cut == x[:2]).all()


def test_audio_features_of_a_tone_of_known_pitch(tmp_path):
    import soundfile

    sr, pitch = 22050, 220.0
    tone = (0.5 * np.sin(2 * np.pi * pitch * np.arange(sr) / sr)).astype(np.float32)  # one second of A3
    paper = audio_features(tone, sr, hop_length=512, f0="pyin")
    released = audio_features(tone, sr, hop_length=512, f0="zcr")
    assert paper.shape == released.shape == (1 + sr // 512, 33)
    assert np.exp(np.median(paper[:, 0])) == pytest.approx(pitch, rel=0.02)  # log F0 of the voiced frames
    assert np.median(released[:, 0]) == pytest.approx(2 * pitch / sr, rel=0.05)  # two zero crossings a period
    np.testing.assert_array_equal(paper[:, 1:], released[:, 1:])  # MFCC (20) and chroma (12) do not depend on f0
    assert paper[:, 21:].mean(0).argmax() == 9  # chroma bin of A (C = 0)
    silence = audio_features(np.zeros(sr // 2, dtype=np.float32), sr)
    assert (silence[:, 0] == 0).all()  # unvoiced: log F0 set to 0
    soundfile.write(tmp_path / "tone.wav", tone, sr, subtype="FLOAT")  # lossless: the same samples come back
    np.testing.assert_allclose(corpus.read_audio_features(tmp_path / "tone.wav", f0="zcr"), released, atol=1e-4)
    np.save(tmp_path / "ready.npy", released)
    np.testing.assert_array_equal(corpus.read_audio_features(tmp_path / "ready.npy"), released)
    np.save(tmp_path / "wrong.npy", released[:, :20])
    with pytest.raises(ClipError, match=r"expected finite audio features \[T, 33\], found \(44, 20\)") as err:
        corpus.read_audio_features(tmp_path / "wrong.npy")
    assert err.value.reason == "bad_features"
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ClipError, match="unreadable audio") as err:
        corpus.read_audio_features(tmp_path / "broken.wav")
    assert err.value.reason == "unreadable_audio"


def test_corpus_build_reports_each_kind_of_bad_clip_by_id(tmp_path):
    root = make_synthetic_corpus(tmp_path / "corpus", clips=9, seed=1)
    tsv = root / "transcripts.tsv"
    lines = tsv.read_text().splitlines()
    ids = [line.split("\t")[0] for line in lines]
    assert all(len(i.split("/")) == 3 and i.startswith("id1") for i in ids)  # VoxCeleb-style idNNNNN/<video>/<clip>
    (root / "audio" / f"{ids[0]}.wav").unlink()
    (root / "openface" / f"{ids[1]}.csv").unlink()
    lines[2] = f"{ids[2]}\t   "
    tsv.write_text("\n".join(lines) + "\n")
    (root / "audio" / f"{ids[3]}.wav").write_bytes(b"RIFF broken")
    face = root / "openface" / f"{ids[4]}.csv"
    face.write_text("\n".join(",".join(r.split(",")[:-1]) for r in face.read_text().splitlines()))
    write_openface_csv(root / "openface" / f"{ids[5]}.csv", np.zeros((4, 709)), np.zeros(4, dtype=bool))
    extra = "id19999/ytXXXX/00001"  # audio and face, but no transcript
    write_openface_csv(root / "openface" / f"{extra}.csv", np.zeros((4, 709)))
    np.save((root / "audio" / ids[6]).with_suffix(".npy"), np.ones((30, 33), dtype=np.float32))  # ready features win
    clips, report = corpus.collect_clips(tsv, root / "audio", root / "openface", f0="zcr", max_bad_share=1.0)
    expected = {
        ids[0]: "missing_audio",
        ids[1]: "missing_visual",
        ids[2]: "empty_transcript",
        ids[3]: "unreadable_audio",
        ids[4]: "wrong_columns",
        ids[5]: "no_face",
        extra: "missing_transcript",
    }
    assert {k: r for k, (r, _) in report.bad.items()} == expected
    assert report.total == 10 and report.good == [c.id for c in clips] == sorted(ids[6:])
    assert report.summary() == (
        "3 of 10 clips used; left out: empty_transcript 1, missing_audio 1, missing_transcript "
        "1, missing_visual 1, no_face 1, unreadable_audio 1, wrong_columns 1"
    )
    for clip in clips:
        assert clip.audio.shape[1] == 33 and clip.vision.shape[1] == 709 and clip.text
    assert (clips[0].audio == 1).all() and clips[0].audio.shape == (30, 33)  # ids[6]: the .npy, not the wav
    with pytest.raises(DataError, match=r"70.0% of the clips are unusable, more than max_bad_share=0.5 \(3 of 10"):
        corpus.collect_clips(tsv, root / "audio", root / "openface", f0="zcr", max_bad_share=0.5)
    fresh = make_synthetic_corpus(tmp_path / "fresh", clips=9, seed=1)  # transcripts mix sentiment and neutral
    texts = [line.split("\t")[1] for line in (fresh / "transcripts.tsv").read_text().splitlines()]
    masked = mask_sentiment_words(texts, load_tokenizer("tiny-bert"), 16)
    assert masked.from_lexicon.any() and not masked.from_lexicon.all()


def test_pretraining_on_a_corpus_on_disk(tmp_path):
    """Synthetic corpus -> features in the store (bad clips in its meta) -> masked batches -> SKESLPretrain."""
    root = make_synthetic_corpus(tmp_path / "corpus", clips=24, seed=2)
    (root / "openface" / "id10000" / "yt0000" / "00001.csv").unlink()
    kwargs = dict(
        transcripts=str(root / "transcripts.tsv"),
        audio=str(root / "audio"),
        visual=str(root / "openface"),
        audio_frames=40,
        vision_frames=20,
        f0="zcr",
        max_bad_share=0.1,
        valid_share=0.25,
        tokenizer="tiny-bert",
        text_max_length=16,
        batch_size=8,
        cache_dir=str(tmp_path / "cache"),
    )
    dm = SKESLCorpusDataModule(**kwargs)
    dm.prepare_data()
    dm.setup()
    assert dm.report["bad"] == {"id10000/yt0000/00001": ["missing_visual", "no visual file for this id"]}
    assert len(dm.datasets["train"]) + len(dm.datasets["valid"]) == 23 and len(dm.datasets["valid"]) > 0
    assert dm.data_facts().audio_dim == 33 and dm.data_facts().vision_dim == 709
    batch = next(iter(dm.train_dataloader()))
    assert batch.labels == {} and batch.audio.shape[1:] == (40, 33) and batch.vision.shape[2] == 709
    assert (batch.text_ids[batch.extras["skesl_target"]] == load_tokenizer("tiny-bert").mask_token_id).all()
    from msa_lightning.store import Store

    assert len(list(Store(tmp_path / "cache").entries("skesl_corpus"))) == 1
    SKESLCorpusDataModule(**kwargs).prepare_data()  # unchanged inputs: the entry is reused
    assert len(list(Store(tmp_path / "cache").entries("skesl_corpus"))) == 1

    L.seed_everything(0)
    module = SKESLPretrain(lr=3e-3, encoder_lr=1e-3, **{**TINY, "num_blocks": 1})
    losses = _EpochLosses()
    trainer = _trainer(tmp_path, 3, callbacks=[losses])
    trainer.fit(module, SKESLCorpusDataModule(**kwargs))
    assert module.hparams.audio_dim == 33 and module.hparams.vision_dim == 709
    assert torch.isfinite(trainer.callback_metrics["val/loss"]) and losses.losses[-1] < losses.losses[0], losses.losses


def test_msa_fit_pretrains_on_a_corpus_on_disk(tmp_path, msa_here):
    """`msa fit` with the shipped pretraining config and the corpus DataModule on the command line; a corpus
    with too many unusable clips is one error with the counts."""
    root = make_synthetic_corpus(tmp_path / "corpus", clips=16, seed=4)
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "skesl" / "pretrain_bert_base.yaml"),
        "--data=msa_lightning.papers.skesl.data.SKESLCorpusDataModule",
        f"--data.init_args.transcripts={root / 'transcripts.tsv'}",
        f"--data.init_args.audio={root / 'audio'}",
        f"--data.init_args.visual={root / 'openface'}",
        "--data.init_args.f0=zcr",
        "--data.init_args.valid_share=0.25",
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.batch_size=8",
        "--model.init_args.text_model=tiny-bert",
        "--model.init_args.num_blocks=1",
        "--model.init_args.ffn_dim=16",
        "--model.init_args.head_hidden=8",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    for clip in sorted((root / "openface").rglob("*.csv"))[:2]:
        clip.unlink()
    bad = msa_here(args, tmp_path)
    assert bad.returncode == 2, bad.stderr[-3000:]
    message = bad.stderr.strip().splitlines()[-1]
    assert message.startswith("msa: error:") and "12.5% of the clips are unusable" in message, message
    assert "14 of 16 clips used; left out: missing_visual 2" in message and "Traceback" not in bad.stderr
    ok = msa_here([*args, "--data.init_args.max_bad_share=0.2"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    metrics = "\n".join(p.read_text() for p in (tmp_path / "runs").rglob("metrics.csv"))
    assert "train/loss" in metrics and "val/loss" in metrics, metrics[:500]  # the masked words' L1, both splits
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["audio_dim"] == 33 and state["hyper_parameters"]["vision_dim"] == 709
    # a corpus has no test split: `msa predict` serves the held-out clips by default (a real subprocess, which
    # finds the clips' features where the fit above stored them)
    predict = [a for a in args if not a.startswith("--trainer.max_epochs")]
    predict[0] = "predict"
    pred = _msa([*predict, "--data.init_args.max_bad_share=0.2", f"--ckpt_path={last}"], tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:]
    assert "predictions (valid split)" in pred.stdout, pred.stdout[-2000:]


def test_shipped_pipelines_pretrain_200_epochs_and_test_the_finetuned_models(tmp_path, synthetic_mosi, msa_here):
    """`msa pipeline --dry-run` of the shipped SKESL pipelines: pretraining for the paper's 200 epochs, then MOSI
    and MOSEI fine-tuning, each followed by `msa test` of its best checkpoint; a bad masking rule is one line."""
    import yaml

    for name in ("pipeline_bert.yaml", "pipeline_bert_base.yaml"):
        proc = _msa(["pipeline", str(REPO / "configs" / "skesl" / name), "--dry-run"], REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "[mosi] msa test of the best checkpoint" in proc.stdout
        assert "[mosei] msa test of the best checkpoint" in proc.stdout
    for config in ("pretrain_bert.yaml", "pretrain_bert_base.yaml", "pretrain_bert_base_featurefile.yaml"):
        assert yaml.safe_load((REPO / "configs" / "skesl" / config).read_text())["trainer"]["max_epochs"] == 200
    bad = msa_here(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "skesl" / "pretrain_bert_base_featurefile.yaml"),
            f"--data.init_args.path={synthetic_mosi}",
            "--data.init_args.random_fallback=sometimes",
        ],
        tmp_path,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    (line,) = [x for x in bad.stderr.splitlines() if x.startswith("msa: error:")]
    assert "random_fallback" in line and "sometimes" in line, line
