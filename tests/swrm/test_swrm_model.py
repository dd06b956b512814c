"""SWRM (Eqs. 1-6) and the Self-MM baseline on tiny models, and fit/test on a synthetic MOSI-ASR dataset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from msa_lightning.batch import MSABatch
from msa_lightning.data.base import DataFacts, SuiteDataModule
from msa_lightning.data.reader import read_feature_file
from msa_lightning.data.transcripts import TranscriptError
from msa_lightning.errors import DataError
from msa_lightning.nn import pretrained
from msa_lightning.nn.pretrained import load_tokenizer
from msa_lightning.papers.swrm.data import MOSIASRDataModule
from msa_lightning.papers.swrm.module import SelfMMModule, SWRMModule
from msa_lightning.papers.swrm.net import pseudo_align

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(
    text_model="tiny-bert",
    audio_dim=5,
    vision_dim=20,
    audio_hidden=8,
    vision_hidden=8,
    audio_out=8,
    vision_out=8,
    text_head_dim=8,
    audio_head_dim=8,
    vision_head_dim=8,
    fusion_dim=16,
)
CONTEXT = dict(context_vision_hidden=4, context_audio_hidden=6, context_av_hidden=8)
TEXTS = ["i was really set about it", "the movie was great", "so bad", "it was okay fun i think"]


def _batch(gate: float = 1.0, k: int = 5, length: int = 10) -> MSABatch:
    tok = load_tokenizer("tiny-bert")
    enc = tok(TEXTS, max_length=length, padding="max_length", truncation=True, return_tensors="pt")
    g = torch.Generator().manual_seed(0)
    b = len(TEXTS)
    return MSABatch(
        text_ids=enc["input_ids"],
        text_mask=enc["attention_mask"],
        text_segment=enc["token_type_ids"],
        audio=torch.randn(b, 30, 5, generator=g),
        audio_lengths=torch.tensor([30, 20, 7, 3]),
        vision=torch.randn(b, 25, 20, generator=g),
        vision_lengths=torch.tensor([25, 25, 12, 1]),
        labels={"M": torch.tensor([-1.0, 2.0, -2.4, 0.6])},
        index=torch.arange(b),
        ids=[f"v_{i}" for i in range(b)],
        raw_text=TEXTS,
        extras={
            "swrm_position": torch.tensor([4, 4, 2, 1]),
            "swrm_gate": torch.full((b,), gate),
            "swrm_candidates": torch.randint(30, 150, (b, k), generator=g),
        },
    )


def _swrm(**kwargs) -> SWRMModule:
    torch.manual_seed(0)
    return SWRMModule(**SMALL, **CONTEXT, **kwargs)


def test_pseudo_alignment_by_hand():
    x = torch.arange(1.0, 8.0)[None, :, None].repeat(2, 1, 1)  # frames 1..7, two samples
    out = pseudo_align(x, lengths=torch.tensor([7, 2]), n_l=torch.tensor([3, 4]), width=5)
    # sample 0: floor(7 / 3) = 2 frames per token: (1,2) (3,4) (5,6); frame 7 dropped; padding 0
    assert out[0, :, 0].tolist() == [1.5, 3.5, 5.5, 0.0, 0.0]
    # sample 1: 2 frames for 4 tokens: 1 frame each while they last, then 0
    assert out[1, :, 0].tolist() == [1.0, 2.0, 0.0, 0.0, 0.0]


def test_gate_zero_leaves_embeddings_unchanged():
    model = _swrm().eval()
    batch = _batch(gate=0.0)
    x = model.net.text_encoder.embed(batch.text_ids)
    z, _ = model.net.refine(batch, x)
    assert torch.equal(z, x)
    v_l, _ = model.net.text_vector(batch)  # and the fusion pass equals plain BERT on the ids
    plain = model.net.text_encoder(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state[:, 0]
    assert torch.allclose(v_l, plain, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{}, {"use_attention": False}, {"multimodal": False}], ids=["full", "wo_attention", "wo_multimodal"]
)
def test_gate_one_changes_only_position_s(kwargs):
    model = _swrm(**kwargs).eval()
    batch = _batch(gate=1.0)
    x = model.net.text_encoder.embed(batch.text_ids)
    z, extra = model.net.refine(batch, x)
    s = batch.extras["swrm_position"]
    changed = (z != x).any(-1)  # [B, L]
    expected = torch.zeros_like(changed)
    expected[torch.arange(len(s)), s] = True
    assert torch.equal(changed, expected)
    assert extra["swrm_gate_value"].shape == (len(s),)
    assert ("swrm_attention" in extra) == kwargs.get("use_attention", True)


def test_gradients_reach_gate_attention_and_context():
    model = _swrm().train()
    out = model(_batch(gate=1.0))
    (out.M.sum() + out.unimodal["T"].sum()).backward()
    for name in (
        "gate.weight",
        "attention.weight",
        "mask_gate.weight",
        "context_v.rnn.weight_ih_l0",
        "context_a.rnn.weight_ih_l0",
        "context_va.rnn.weight_ih_l0",
        "heads.M.weight",
    ):
        grad = model.get_parameter(f"net.{name}").grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert out.extras["swrm_attention"].sum(-1).allclose(torch.ones(4))


def test_ablation_structure():
    wo_position = _swrm(use_position=False).eval()
    batch = _batch()
    batch.extras = {}  # w/o Position needs no precompute
    x = wo_position.net.text_encoder.embed(batch.text_ids)
    z, _ = wo_position.net.refine(batch, x)
    n = batch.text_mask.sum(1)
    changed = (z != x).any(-1)
    for b in range(len(n)):  # words change; [CLS], [SEP] and padding do not
        assert changed[b, 1 : n[b] - 1].all() and not changed[b, 0] and not changed[b, n[b] - 1 :].any()
    assert not hasattr(wo_position.net, "attention")
    assert not hasattr(_swrm(use_attention=False).net, "attention")
    text_only = _swrm(multimodal=False).net
    assert not hasattr(text_only, "context_v") and text_only.gate.in_features == text_only.text_encoder.hidden_size
    with pytest.raises(KeyError, match="MOSIASRDataModule"):
        _swrm()(batch)


def test_self_mm_baseline_outputs_and_parameters():
    torch.manual_seed(0)
    model = SelfMMModule(**SMALL)
    out = model(_batch())
    assert out.M.shape == (4,) and {k: tuple(v.shape) for k, v in out.unimodal.items()} == {k: (4,) for k in "TAV"}
    assert set(out.features) == set("MTAV") and out.features["M"].shape == (4, 16)
    assert set(out.flat()) == {"M", "T", "A", "V", "features.M", "features.T", "features.A", "features.V"}
    swrm_only = {n for n, _ in _swrm().named_parameters()} - {n for n, _ in model.named_parameters()}
    assert swrm_only and all(
        n.split(".")[1] in {"gate", "attention", "mask_gate", "context_v", "context_a", "context_va"} for n in swrm_only
    )
    assert SelfMMModule(**SMALL, head_layers=2).net.heads["M"][0].in_features == 16
    plain = SelfMMModule(**SMALL, use_ulgm=False)  # fusion head only: no parameter without a loss
    plain_out = plain(_batch())
    assert set(plain.net.heads) == {"M"} and plain_out.unimodal == {} and set(plain_out.features) == {"M"}


# ----------------------------------------------------------------------------- end to end
SENTIMENT = ["great", "awesome", "sad", "upset", "terrible"]


class ToyMLM(nn.Module):
    """After ``really`` or ``so`` the top-5 predictions are sentiment words, elsewhere neutral ones."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        vocab = len(tokenizer)
        table = torch.zeros(vocab, vocab)
        table[:, tokenizer.convert_tokens_to_ids(["the", "movie", "story", "actor", "plot", "film"])] = 10.0
        for row in ("really", "so"):
            table[tokenizer.convert_tokens_to_ids(row), tokenizer.convert_tokens_to_ids(SENTIMENT)] = 20.0
        self.register_buffer("table", table)

    def forward(self, input_ids, attention_mask=None):
        return self.table[torch.roll(input_ids, 1, dims=1)]


@pytest.fixture
def mosi_asr(synthetic_mosi, tmp_path, monkeypatch):
    """Synthetic MOSI + an ASR transcript file (sentiment words corrupted, one utterance missing),
    with the toy masked LM standing in for BERT in the precompute."""
    splits = read_feature_file(synthetic_mosi)
    swap = {"GREAT": "GRATE", "AWFUL": "OFFAL", "SAD": "SAID"}
    lines = [
        f"{i}\t{' '.join(swap.get(w, w) for w in t.split())}"
        for s in splits.values()
        for i, t in zip(s.ids, s.raw_text)
    ]
    (tmp_path / "asr.tsv").write_text("\n".join(lines[1:]) + "\n")  # the first train id is missing
    (tmp_path / "lexicon.txt").write_text("\n".join(SENTIMENT))
    toy = ToyMLM(load_tokenizer("tiny-bert"))
    real = pretrained.load_model
    monkeypatch.setattr(
        pretrained, "load_model", lambda name, masked_lm=False, **kw: toy if masked_lm else real(name, **kw)
    )
    return dict(
        path=str(synthetic_mosi),
        asr="toyasr",
        transcripts=str(tmp_path / "asr.tsv"),
        missing="gold",
        max_missing_share=0.05,  # 1 of 64 training ids lacks a transcript
        tokenizer="tiny-bert",
        k=5,
        lexicon=str(tmp_path / "lexicon.txt"),
        cache_dir=str(tmp_path / "cache"),
        batch_size=16,
        normalize=True,
        progress=False,
    )


def test_datamodule_swaps_text_reports_missing_and_attaches_positions(mosi_asr, synthetic_mosi):
    with pytest.raises(TranscriptError, match="synthtrain0000_0"):
        MOSIASRDataModule(**{**mosi_asr, "missing": "error"}).setup("fit")
    dm = MOSIASRDataModule(**mosi_asr)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.missing_ids == {"train": ["synthtrain0000_0"], "valid": [], "test": []}
    gold = read_feature_file(synthetic_mosi)["train"]
    asr = dm.splits["train"]
    assert asr.raw_text[0] == gold.raw_text[0]  # the missing one keeps gold ("gold" policy)
    assert any("GRATE" in t for t in asr.raw_text) and not any("GREAT" in t for t in asr.raw_text[1:])
    batch = next(iter(dm.train_dataloader()))
    assert set(batch.extras) == {"swrm_position", "swrm_gate", "swrm_candidates"}
    assert batch.extras["swrm_candidates"].shape == (16, 5)
    positions = dm.sentiment_positions()["train"]
    assert 0 < positions.gate.mean() < 1  # texts with "really"/"so" get p = 1
    # s points at the token after "really"/"so" when p = 1
    ids = dm.datasets["train"].text[:, 0]
    tok = load_tokenizer("tiny-bert")
    intensifiers = set(tok.convert_tokens_to_ids(["really", "so"]))
    for row in range(len(positions)):
        if positions.gate[row]:
            assert ids[row, positions.position[row] - 1] in intensifiers
    plain = MOSIASRDataModule(**{**mosi_asr, "positions": False})
    plain.setup("fit")
    assert next(iter(plain.train_dataloader())).extras == {}


class _LabelsAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.labels = pl_module.ulgm.label("T").detach().clone()


def test_fit_test_checkpoint_and_resume(mosi_asr, tmp_path):
    L.seed_everything(0)
    dm = MOSIASRDataModule(**mosi_asr)
    model = SWRMModule(**SMALL, **CONTEXT, lr=3e-3, encoder_lr=1e-3)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/mae", "test/corr", "test/acc2_has0", "test/acc2_non0", "test/acc7"} <= set(result)
    ulgm = model.ulgm
    assert ulgm.num_samples == 64 and torch.equal(ulgm.label("M"), torch.tensor(dm.splits["train"].labels["M"]))
    assert not torch.equal(ulgm.label("T"), ulgm.label("M"))  # epoch 2 generated unimodal labels
    ckpt = tmp_path / "swrm.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = SWRMModule.load_from_checkpoint(ckpt)
    for name, value in model.ulgm.state_dict().items():
        assert torch.equal(loaded.ulgm.state_dict()[name], value), name
    # resuming continues with the saved labels, not re-initialised ones
    callback = _LabelsAtStart()
    resumed = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        callbacks=[callback],
    )
    resumed.fit(SWRMModule(**SMALL, **CONTEXT), datamodule=MOSIASRDataModule(**mosi_asr), ckpt_path=ckpt)
    assert torch.equal(callback.labels, model.ulgm.label("T"))


def test_self_mm_fits_on_mosi_asr_without_positions(mosi_asr, tmp_path):
    dm = MOSIASRDataModule(**{**mosi_asr, "positions": False})
    model = SelfMMModule(**SMALL, lr=3e-3)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=dm)
    assert "test/mae" in trainer.test(model, datamodule=dm, verbose=False)[0]


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, lightning as L
    from msa_lightning.papers.swrm.data import MOSIASRDataModule
    from msa_lightning.papers.swrm.module import SWRMModule

    class Save(L.Callback):
        def on_train_end(self, trainer, pl_module):
            torch.save(pl_module.ulgm.state_dict(), f"{sys.argv[2]}/ulgm{trainer.global_rank}.pt")

    L.seed_everything(0)
    dm = MOSIASRDataModule(sys.argv[1], asr="file", tokenizer="tiny-bert", k=5, batch_size=8,
                           cache_dir=f"{sys.argv[2]}/cache", progress=False)
    model = SWRMModule(text_model="tiny-bert", audio_hidden=8, vision_hidden=8, audio_out=8, vision_out=8,
                       text_head_dim=8, audio_head_dim=8, vision_head_dim=8, fusion_dim=16,
                       context_vision_hidden=4, context_audio_hidden=4, context_av_hidden=4, lr=3e-3)
    # ddp_fork: both ranks are forked from this script (one interpreter start and one set of imports instead of
    # two); `msa fit --trainer.strategy=ddp`'s launcher is tested in tests/test_training.py
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_fork", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[Save()])
    trainer.fit(model, datamodule=dm)
""")


def test_ddp_keeps_ulgm_state_identical_across_ranks(synthetic_mosi, tmp_path):
    script = tmp_path / "ddp_swrm.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(script), str(synthetic_mosi), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s0, s1 = torch.load(tmp_path / "ulgm0.pt"), torch.load(tmp_path / "ulgm1.pt")
    for name in s0:
        assert torch.equal(s0[name], s1[name]), name
    assert not torch.equal(s0["labels_T"], s0["labels_M"])
    # every training sample's features were written (all ranks saw all updates)
    assert (s0["features_M"].abs().sum(1) > 0).all()
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


class _FakeASRData(SuiteDataModule):
    """The public API a datamodule offers the module: data_facts, train_labels, sentiment_positions."""

    text_max_length = 8

    def __init__(self, positions) -> None:
        super().__init__()
        self.positions = np.asarray(positions)

    def data_facts(self) -> DataFacts:
        return DataFacts(audio_dim=5, vision_dim=20, label_bound=3.0, metric_family="mosi", num_train_samples=4)

    def train_labels(self, key: str = "M") -> np.ndarray:
        return np.array([-1.0, 2.0, 0.5, -0.5], dtype=np.float32)

    def sentiment_positions(self) -> dict:
        return {"train": SimpleNamespace(position=self.positions)}


def test_setup_reads_public_datamodule_api_and_checks_positions_once():
    model = SWRMModule(**{k: v for k, v in SMALL.items() if k not in ("audio_dim", "vision_dim")}, **CONTEXT)
    model._trainer = SimpleNamespace(datamodule=_FakeASRData([1, 7, 2, 3]))
    model.setup("fit")
    assert model.net.audio_rnn.rnn.input_size == 5 and model.ulgm.bound == 3.0
    assert model.ulgm.ready and model.ulgm.label("M").tolist() == [-1.0, 2.0, 0.5, -0.5]
    bad = SWRMModule(**SMALL, **CONTEXT)
    bad._trainer = SimpleNamespace(datamodule=_FakeASRData([1, 8, 2, 3]))
    with pytest.raises(DataError, match=r"swrm_position of the train split lies outside \[0, 8\) for 1 utterances"):
        bad.setup("fit")
