"""HybridShift (Lin & Hu, TMM 2024): split Transformer, MSG, MBA, Shifting HuberLoss, ablation switches,
end-to-end training on synthetic word-aligned MOSI, the CLI configs and the analysis plots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from msa_lightning.batch import MSABatch
from msa_lightning.cli.commands import run_command
from msa_lightning.data import MOSIDataModule
from msa_lightning.data.reader import read_feature_file
from msa_lightning.experiments.lightning_cli import make_cli
from msa_lightning.metrics import compute_msa_metrics
from msa_lightning.nn.pretrained import load_model
from msa_lightning.nn.split_transformer import SplitTransformer
from msa_lightning.papers.hybrid_shift.config import HybridShiftConfig
from msa_lightning.papers.hybrid_shift.module import HybridShiftModule
from msa_lightning.papers.hybrid_shift.net import (
    AlignedRNN,
    HybridShiftNet,
    MaskedBimodalAdjustment,
    MultimodalShiftingGate,
    align_frames,
    shifting_huber_loss,
)
from msa_lightning.papers.hybrid_shift.plots import tsne

REPO = Path(__file__).resolve().parents[2]
TEXT_MODELS = ["tiny-bert", "tiny-xlnet"]
LENGTHS = (10, 7, 4, 9)


def _mask(lengths=LENGTHS, length: int = 10, left: bool = False) -> torch.Tensor:
    pos = torch.arange(length)[None, :]
    lens = torch.tensor(lengths)[:, None]
    return (pos >= length - lens) if left else (pos < lens)


def make_batch(
    lengths=LENGTHS, length: int = 10, left: bool = False, audio_dim: int = 5, vision_dim: int = 7, seed: int = 0
) -> MSABatch:
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = _mask(lengths, length, left)
    ids = torch.randint(1000, 5000, (b, length), generator=g) * mask
    return MSABatch(
        text_ids=ids,
        text_mask=mask.long(),
        text_segment=torch.zeros_like(ids),
        audio=torch.randn(b, length, audio_dim, generator=g),
        audio_lengths=torch.tensor(lengths),
        vision=torch.randn(b, length, vision_dim, generator=g),
        vision_lengths=torch.tensor(lengths),
        labels={"M": torch.randn(b, generator=g)},
        index=torch.arange(b),
        ids=[f"u{i}" for i in range(b)],
        raw_text=["w"] * b,
    )


def make_net(**kwargs) -> HybridShiftNet:
    torch.manual_seed(0)
    args = dict(
        audio_dim=5,
        vision_dim=7,
        text_model="tiny-bert",
        tiny_num_layers=3,
        insert_layer=2,
        audio_hidden=6,
        vision_hidden=8,
        mba_dim=12,
        mba_max_len=10,
        fusion_dim=16,
        dropout=0.0,
    )
    args.update(kwargs)
    return HybridShiftNet(HybridShiftConfig(**args)).eval()


# ---------------------------------------------------------------------------------------------- split Transformer
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("left", [False, True], ids=["right_pad", "left_pad"])
@pytest.mark.parametrize("name", TEXT_MODELS)
def test_split_at_every_layer_reproduces_unsplit_encoder(name, left, attention):
    """On whatever transformers is installed: the split encoder builds its masks through public API only,
    in the format of each attention implementation."""
    torch.manual_seed(0)
    model = load_model(name, num_layers=3).eval()
    if name != "tiny-xlnet":  # XLNet has one attention implementation of its own
        model.set_attn_implementation(attention)
    batch = make_batch(left=left)
    ids, mask, seg = batch.text_ids, batch.text_mask, batch.text_segment
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, token_type_ids=seg, output_hidden_states=True)
        for i in range(4):  # 0 = after the embeddings ... 3 = after the last layer
            split = SplitTransformer(model, i)
            lower, ctx = split.lower(ids, mask, seg)
            # the split point is exactly after layer i (HF's hidden_states[i])
            assert torch.equal(lower, ref.hidden_states[i]), f"{name}: lower part differs at split {i}"
            # zero shift -> the unsplit output, bit for bit, padding positions included
            assert torch.equal(split.upper(lower + 0.0 * lower, ctx), ref.last_hidden_state), f"{name} split {i}"
            assert torch.equal(split(ids, mask, seg), ref.last_hidden_state)
        # a real shift at the split point does change the output (the check above can fail)
        shifted = SplitTransformer(model, 1)(ids, mask, seg, shift=lambda h: h + 0.5)
        assert not torch.allclose(shifted, ref.last_hidden_state)


def test_split_rejects_out_of_range_layer():
    with pytest.raises(ValueError, match="split_layer=3 is out of range .* 2 layers"):
        SplitTransformer(load_model("tiny-bert"), 3)


@pytest.mark.parametrize("name", TEXT_MODELS)
@pytest.mark.parametrize("insert_layer", [0, 1, 2, 3])
def test_net_with_zero_msg_t_gives_the_pretrained_encoder_output(name, insert_layer):
    net = make_net(text_model=name, insert_layer=insert_layer, pool="first")
    batch = make_batch(left=name == "tiny-xlnet")
    with torch.no_grad():
        for p in net.msg["text"].parameters():
            if p is not net.msg["text"].mu:
                p.zero_()
        out = net(batch)
        ref = net.text.model(
            input_ids=batch.text_ids,
            attention_mask=batch.text_mask,
            token_type_ids=batch.text_segment,
            output_hidden_states=True,
        )
    assert torch.equal(out.features["M_t"], ref.last_hidden_state)
    assert torch.equal(out.features["F_t"], ref.hidden_states[insert_layer])  # F_t taken after layer i
    assert torch.all(out.extras["shift.text"] == 0)


# ---------------------------------------------------------------------------------------------- MSG
def test_msg_eta_is_capped_at_one_and_follows_eq8():
    torch.manual_seed(0)
    msg = MultimodalShiftingGate(8, {"audio": 3, "vision": 5}, mu_init=0.5)
    with torch.no_grad():
        for p in msg.parameters():
            p.normal_(0, 2.0)
        msg.mu.fill_(0.5)
    x, a, v = torch.randn(2, 6, 8), torch.randn(2, 6, 3), torch.randn(2, 6, 5)
    out, h_s, eta = msg(x, {"audio": a, "vision": v})
    # Eqs. 4-6 written out from the parameters
    g_a = torch.relu(torch.cat([x, a], -1) @ msg.gate["audio"].weight.T + msg.gate_bias["audio"])
    g_v = torch.relu(torch.cat([x, v], -1) @ msg.gate["vision"].weight.T + msg.gate_bias["vision"])
    h_ref = g_a * (a @ msg.proj["audio"].weight.T) + g_v * (v @ msg.proj["vision"].weight.T) + msg.shift_bias
    torch.testing.assert_close(h_s, h_ref)
    ratio = x.norm(dim=-1, keepdim=True) / (h_ref.norm(dim=-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(eta, torch.minimum(ratio * 0.5, torch.ones_like(ratio)))  # Eq. 8, per token
    torch.testing.assert_close(out, x + eta * h_s)  # Eq. 7
    assert eta.shape == (2, 6, 1) and eta.max() <= 1.0
    assert len(torch.unique(eta)) > 1  # one eta per token, not per batch
    # the shift never outgrows mu * ||x||
    assert torch.all((eta * h_s).norm(dim=-1) <= 0.5 * x.norm(dim=-1) * (1 + 1e-5))
    # small mu: never clamped, eta is linear in mu; huge mu: eta == 1 exactly
    with torch.no_grad():
        msg.mu.fill_(1e-3)
        _, _, eta_small = msg(x, {"audio": a, "vision": v})
        msg.mu.fill_(2e-3)
        _, _, eta_double = msg(x, {"audio": a, "vision": v})
        msg.mu.fill_(1e9)
        _, _, eta_big = msg(x, {"audio": a, "vision": v})
    torch.testing.assert_close(eta_double, 2 * eta_small)
    assert torch.all(eta_big == 1.0)
    # mu is learnable
    msg.mu.data.fill_(1e-3)
    msg(x, {"audio": a, "vision": v})[0].sum().backward()
    assert msg.mu.grad is not None and msg.mu.grad != 0


def test_msg_with_zero_shift_returns_its_input_exactly():
    msg = MultimodalShiftingGate(8, {"audio": 3})
    with torch.no_grad():
        for p in (*msg.gate.parameters(), *msg.proj.parameters(), msg.shift_bias):
            p.zero_()
    x = torch.randn(2, 4, 8)
    out, h_s, eta = msg(x, {"audio": torch.randn(2, 4, 3)})
    assert torch.equal(out, x) and torch.all(h_s == 0) and torch.all(eta == 1)


# ---------------------------------------------------------------------------------------------- MBA
@pytest.mark.parametrize("left", [False, True], ids=["right_pad", "left_pad"])
def test_mba_gives_padding_zero_attention_and_ignores_its_content(left):
    torch.manual_seed(0)
    mba = MaskedBimodalAdjustment(16, 6, dim=8, max_len=12)
    mask = _mask(LENGTHS, 10, left)
    text, other = torch.randn(4, 10, 16), torch.randn(4, 10, 6)
    adjusted, p_att, x_att = mba(text, other, mask)
    assert torch.all(x_att.masked_select(~mask[:, None, :].expand_as(x_att)) == 0)  # exactly zero
    torch.testing.assert_close(x_att.sum(-1), torch.ones(4, 10))
    garbage_t, garbage_o = text.clone(), other.clone()
    garbage_t[~mask], garbage_o[~mask] = 1e3, -1e3
    adjusted2, p_att2, _ = mba(garbage_t, garbage_o, mask)
    valid2d = mask[:, :, None] & mask[:, None, :]
    torch.testing.assert_close(adjusted2[mask], adjusted[mask])
    torch.testing.assert_close(p_att2[valid2d], p_att[valid2d])


def test_mba_follows_eqs_9_to_17():
    torch.manual_seed(0)
    mba = MaskedBimodalAdjustment(16, 6, dim=8, max_len=10, text_kernel=3, other_kernel=1)
    with torch.no_grad():
        mba.b_text.fill_(0.1), mba.b_other.fill_(-0.2)
    text, other = torch.randn(2, 10, 16), torch.randn(2, 10, 6)
    mask = torch.ones(2, 10, dtype=torch.bool)
    adjusted, p_att, x_att = mba(text, other, mask)
    for b in range(2):  # one sample at a time, straight from the equations
        m = F.conv1d(text[b].T[None], mba.conv_text.weight, mba.conv_text.bias, padding=1)[0].T  # Eq. 9
        f = F.conv1d(other[b].T[None], mba.conv_other.weight, mba.conv_other.bias)[0].T  # Eq. 10
        m = m / m.norm(dim=-1, keepdim=True).sqrt()  # Eq. 11
        f = f / f.norm(dim=-1, keepdim=True).sqrt()  # Eq. 12
        p_t = torch.tanh(mba.w_text.weight @ (m @ m.T) + 0.1)  # Eq. 13
        p_v = torch.tanh(mba.w_other.weight @ (f @ f.T) - 0.2)  # Eq. 14
        torch.testing.assert_close(p_att[b], p_t * p_v)  # Eq. 15
        x = torch.softmax(p_t + p_t * p_v, dim=-1)  # Eq. 16
        torch.testing.assert_close(x_att[b], x)
        torch.testing.assert_close(adjusted[b], text[b] + x @ text[b])  # Eq. 17


def test_mba_rejects_text_longer_than_its_matrices():
    mba = MaskedBimodalAdjustment(4, 4, dim=4, max_len=5)
    with pytest.raises(ValueError, match="mba_max_len"):
        mba(torch.randn(1, 6, 4), torch.randn(1, 6, 4), torch.ones(1, 6, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- loss
def test_shifting_huber_loss_is_eq19_over_valid_positions():
    h = torch.tensor([[[0.5, -2.0], [3.0, 0.1]], [[-0.2, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    delta = 1.0

    def huber(x):
        return 0.5 * x**2 if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)

    values = [0.5, -2.0, 3.0, 0.1, -0.2, 0.0]  # the masked position (9, 9) is left out
    expected = sum(huber(v) for v in values) / len(values)
    assert shifting_huber_loss(h, mask, delta).item() == pytest.approx(expected)
    assert shifting_huber_loss(h, None, 10.0).item() == pytest.approx(float((0.5 * h**2).mean()))


# ---------------------------------------------------------------------------------------------- ablation switches
def variant_of(full: HybridShiftNet, **kwargs) -> HybridShiftNet:
    """The same network with switches changed, sharing every parameter the two have in common."""
    net = make_net(**kwargs)
    own = net.state_dict()
    shared = {k: v for k, v in full.state_dict().items() if k in own and own[k].shape == v.shape}
    result = net.load_state_dict(shared, strict=False)
    # a variant only ever removes components (and, without a modality, narrows the fusion layer)
    assert set(result.missing_keys) <= {"fusion.weight"}, result.missing_keys
    return net


@pytest.fixture(scope="module")
def full_run():
    net = make_net()
    batch = make_batch()
    with torch.no_grad():
        out = net(batch, unshifted_text=True)
    return net, batch, out


def _run(net, batch):
    with torch.no_grad():
        return net(batch, unshifted_text=True)


def _same(a, b, *keys):
    for k in keys:
        assert torch.equal(a.features[k], b.features[k]), k


def test_switch_msg_t_only_removes_the_text_shift(full_run):
    full, batch, ref = full_run
    net = variant_of(full, use_msg_t=False)
    out = _run(net, batch)
    assert set(net.msg) == {"audio", "vision"} and set(net.mba) == {"audio", "vision"}
    _same(out, ref, "F_t", "F_a", "F_v")
    assert torch.equal(out.features["M_t"], ref.features["M_t_unshifted"])
    assert not torch.allclose(out.features["M_t"], ref.features["M_t"])
    assert "text" not in out.group("shift")


@pytest.mark.parametrize("off, on", [("audio", "vision"), ("vision", "audio")])
def test_switch_msg_a_or_v_only_removes_that_shift(full_run, off, on):
    full, batch, ref = full_run
    net = variant_of(full, **{f"use_msg_{off[0]}": False})
    out = _run(net, batch)
    s_off, s_on = off[0], on[0]
    _same(out, ref, "F_t", "M_t", "F_a", "F_v", f"M_{s_on}")  # the other MSG reads F_off, not M_off
    assert torch.equal(out.features[f"M_{s_off}"], out.features[f"F_{s_off}"])
    assert off not in out.group("shift") and on in out.group("shift") and "text" in out.group("shift")
    assert not torch.allclose(out.M, ref.M)


def test_switch_mba_only_changes_the_text_input_of_msg_a_and_msg_v(full_run):
    full, batch, ref = full_run
    net = variant_of(full, use_mba=False)
    out = _run(net, batch)
    assert len(net.mba) == 0 and out.group("p_att") == {}
    _same(out, ref, "F_t", "M_t", "F_a", "F_v")
    f, mask = ref.features, ref.extras["mask"]
    with torch.no_grad():
        m_a = full.msg["audio"](f["F_a"], {"text": f["M_t"], "vision": f["F_v"]})[0]
        m_v = full.msg["vision"](f["F_v"], {"text": f["M_t"], "audio": f["F_a"]})[0]
        # with MBA (crossed, as the paper states): M_tv* feeds MSG-A, M_ta* feeds MSG-V
        m_tv = full.mba["vision"](f["M_t"], f["F_v"], mask)[0]
        m_ta = full.mba["audio"](f["M_t"], f["F_a"], mask)[0]
        m_a_mba = full.msg["audio"](f["F_a"], {"text": m_tv, "vision": f["F_v"]})[0]
        m_v_mba = full.msg["vision"](f["F_v"], {"text": m_ta, "audio": f["F_a"]})[0]
    torch.testing.assert_close(out.features["M_a"], m_a)
    torch.testing.assert_close(out.features["M_v"], m_v)
    torch.testing.assert_close(ref.features["M_a"], m_a_mba)
    torch.testing.assert_close(ref.features["M_v"], m_v_mba)
    assert not torch.allclose(m_a, m_a_mba)


def test_switch_mba_crossed_swaps_which_adjusted_text_each_msg_reads(full_run):
    full, batch, ref = full_run
    net = variant_of(full, mba_crossed=False)
    out = _run(net, batch)
    assert net.mba_source == {"audio": "audio", "vision": "vision"} and full.mba_source == {
        "audio": "vision",
        "vision": "audio",
    }
    f, mask = out.features, out.extras["mask"]
    with torch.no_grad():
        m_ta = net.mba["audio"](f["M_t"], f["F_a"], mask)[0]
        expected = net.msg["audio"](f["F_a"], {"text": m_ta, "vision": f["F_v"]})[0]
    torch.testing.assert_close(f["M_a"], expected)
    _same(out, ref, "F_t", "M_t", "F_a", "F_v")


def test_switch_shift_huber_only_changes_the_loss():
    batch = make_batch()
    torch.manual_seed(0)
    kwargs = dict(
        audio_dim=5,
        vision_dim=7,
        text_model="tiny-bert",
        audio_hidden=6,
        vision_hidden=8,
        mba_dim=12,
        mba_max_len=10,
        fusion_dim=16,
        dropout=0.0,
        alpha=0.3,
        beta=0.2,
        gamma=0.1,
        delta=0.5,
        metric_family="mosi",
    )
    on = HybridShiftModule(use_shift_huber=True, **kwargs).eval()
    off = HybridShiftModule(use_shift_huber=False, **kwargs).eval()
    off.load_state_dict(on.state_dict())
    with torch.no_grad():
        out_on, out_off = on(batch), off(batch)
        loss_on, parts_on = on.compute_loss(out_on, batch)
        loss_off, parts_off = off.compute_loss(out_off, batch)
    assert torch.equal(out_on.M, out_off.M)
    assert set(parts_on) == {"mse", "shift_t", "shift_a", "shift_v"}
    for k in parts_on:
        assert torch.equal(parts_on[k], parts_off[k])
    mse = F.mse_loss(out_on.M, batch.labels["M"])
    assert torch.equal(loss_off, mse)
    expected = mse + 0.3 * parts_on["shift_t"] + 0.2 * parts_on["shift_a"] + 0.1 * parts_on["shift_v"]
    torch.testing.assert_close(loss_on, expected)
    h = out_on.extras["shift.audio"]
    torch.testing.assert_close(parts_on["shift_a"], shifting_huber_loss(h, out_on.extras["mask"], 0.5))


@pytest.mark.parametrize("variant", ["sLSTM", "bLSTM", "sGRU", "bGRU"])
def test_switch_rnn_variant(variant):
    net = make_net(rnn_variant=variant)
    rnn = net.rnn["audio"].rnn.rnn
    assert isinstance(rnn, torch.nn.LSTM if variant.endswith("LSTM") else torch.nn.GRU)
    assert rnn.bidirectional == variant.startswith("b")
    out = _run(net, make_batch())
    assert out.features["F_a"].shape[-1] == 6 * (2 if variant.startswith("b") else 1)
    assert torch.isfinite(out.M).all()


def test_modalities_text_audio_removes_the_vision_stream_and_gates(full_run):
    full, batch, ref = full_run
    net = variant_of(full, modalities=["text", "audio"])
    out = _run(net, batch)
    assert "vision" not in net.rnn and set(net.msg) == {"text", "audio"}
    assert net.msg["text"].partners == ("audio",) and net.msg["audio"].partners == ("text",)
    assert set(net.mba) == {"audio"} and net.mba_source == {"audio": "audio"}
    _same(out, ref, "F_t", "F_a")
    assert "F_v" not in out.features and net.fusion.in_features == 32 + 6


def test_modalities_without_text_build_no_transformer_and_read_the_last_frame(full_run):
    full, _, _ = full_run
    batch = make_batch()
    net = variant_of(full, modalities=["audio", "vision"])
    out = _run(net, batch)
    assert net.text is None and len(net.mba) == 0
    assert net.msg["audio"].partners == ("vision",) and net.msg["vision"].partners == ("audio",)
    assert torch.equal(out.extras["pool_index"], torch.tensor(LENGTHS) - 1)
    only_a = variant_of(full, modalities=["audio"])
    assert len(only_a.msg) == 0 and only_a.fusion.in_features == 6
    assert torch.isfinite(_run(only_a, batch).M).all()
    only_t = variant_of(full, modalities=["text"])
    assert len(only_t.msg) == 0 and len(only_t.rnn) == 0
    _same(_run(only_t, batch), full_run[2], "F_t")


def test_unaligned_frames_give_a_clear_error():
    net = make_net()
    batch = make_batch()
    batch.audio = torch.randn(4, 1, 5)  # a modality the datamodule left out arrives as one zero frame
    with pytest.raises(ValueError, match="audio has 1 frames .* text has 10 positions"):
        net(batch)


# ---------------------------------------------------------------------------------------------- alignment, RNN, pooling
def test_align_frames_words_mode_follows_mag_layouts():
    frames = torch.arange(1, 9, dtype=torch.float32).view(1, 8, 1).repeat(2, 1, 1)  # frame k has value k + 1
    bert = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]]).bool()  # [CLS] w.. [SEP] pad
    out = align_frames(frames, bert, "words", leading=1, trailing=1)[..., 0]
    assert out.tolist() == [[0, 1, 2, 3, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6, 0]]
    xlnet = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]]).bool()  # pad w1 w2 w3 <sep> <cls>
    out = align_frames(frames[:1], xlnet, "words", leading=0, trailing=2, frame_offset=1)[..., 0]
    assert out.tolist() == [[0, 0, 0, 2, 3, 4, 0, 0]]
    tokens = align_frames(frames, bert, "tokens")[..., 0]
    assert tokens[0].tolist() == [1, 2, 3, 4, 5, 0, 0, 0]


@pytest.mark.parametrize("variant", ["sLSTM", "bGRU"])
def test_aligned_rnn_runs_over_the_valid_steps_on_either_padding_side(variant):
    torch.manual_seed(0)
    rnn = AlignedRNN(3, 4, variant, 1, 0.0).eval()
    x = torch.randn(4, 10, 3)
    mask = _mask(LENGTHS, 10, left=True)
    states = rnn(x, mask)
    for b, n in enumerate(LENGTHS):
        alone, _ = rnn.rnn(x[b : b + 1, 10 - n :], torch.tensor([n]))
        torch.testing.assert_close(states[b, 10 - n :], alone[0])
        assert torch.all(states[b, : 10 - n] == 0)


def test_pool_reads_cls_first_for_bert_last_for_xlnet():
    mask = _mask(LENGTHS, 10, left=True)
    assert make_net(text_model="tiny-xlnet").pool_index(mask).tolist() == [9, 9, 9, 9]
    assert make_net(text_model="tiny-xlnet", pool="first").pool_index(mask).tolist() == [0, 3, 6, 1]
    assert make_net().pool_index(_mask()).tolist() == [0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------- end to end
def _trainer(tmp_path, epochs, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_fit_and_test_on_synthetic_aligned_mosi(synthetic_mosi_aligned, cache_dir, tmp_path):
    L.seed_everything(0)
    dm = MOSIDataModule(str(synthetic_mosi_aligned), aligned=True, batch_size=16, cache_dir=str(cache_dir))
    model = HybridShiftModule(text_model="tiny-bert", lr=3e-3)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", mode="min")
    trainer = _trainer(tmp_path, 8, callbacks=[ckpt])
    trainer.fit(model, datamodule=dm)
    assert ckpt.best_model_path and {"val/shift_t", "val/shift_a", "val/shift_v", "val/mse"} <= set(
        trainer.logged_metrics
    )
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/acc2_non0", "test/f1_non0", "test/acc7", "test/mae", "test/corr", "test/shift_t"} <= set(result)
    splits = read_feature_file(synthetic_mosi_aligned)
    labels = torch.from_numpy(splits["test"].labels["M"])
    mean_mae = float(
        compute_msa_metrics(torch.full_like(labels, float(splits["train"].labels["M"].mean())), labels, "mosi")["mae"]
    )
    assert result["test/mae"] < 0.85 * mean_mae
    assert result["test/corr"] > 0.3


def test_fit_with_tiny_xlnet_and_modality_ablation(synthetic_mosi_aligned, cache_dir, tmp_path):
    L.seed_everything(0)
    dm = MOSIDataModule(str(synthetic_mosi_aligned), aligned=True, batch_size=16, cache_dir=str(cache_dir))
    model = HybridShiftModule(
        text_model="tiny-xlnet", pool="first", modalities=["text", "vision"], lr=3e-3, metric_family="mosi"
    )
    trainer = _trainer(tmp_path, 2, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert "test/shift_a" not in result and result["test/shift_t"] >= 0
    assert torch.isfinite(torch.tensor(result["test/mae"]))


def test_cli_config_with_ablation_fragment_trains(synthetic_mosi_aligned, cache_dir, tmp_path):
    cli = make_cli(
        [
            "fit",
            "--config",
            str(REPO / "configs/hybrid_shift/mosi_bert.yaml"),
            "--config",
            str(REPO / "configs/hybrid_shift/ablations/msg_ta.yaml"),
            "--model.init_args.text_model=tiny-bert",
            "--model.init_args.insert_layer=1",
            f"--data.path={synthetic_mosi_aligned}",
            f"--data.cache_dir={cache_dir}",
            "--data.num_workers=0",
            "--data.batch_size=16",
            "--trainer.max_epochs=1",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--checkpoint.dirpath={tmp_path / 'ckpt'}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    net = cli.model.net
    assert set(net.msg) == {"text", "audio"} and len(net.mba) == 0 and not cli.model.use_shift_huber
    assert net.text.split_layer == 1 and cli.model.lr == 2e-5 and cli.model.optimizer_name == "adamw"
    assert cli.trainer.checkpoint_callback.monitor == "val/loss" and cli.trainer.checkpoint_callback.mode == "min"
    assert cli.trainer.checkpoint_callback.best_model_path


# ---------------------------------------------------------------------------------------------- plots
def test_tsne_separates_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 10, generator=g), torch.randn(20, 10, generator=g) + 8.0])
    y = tsne(x, perplexity=8, iters=300)
    a, b = y[:20], y[20:]
    spread = max(np.linalg.norm(a.std(0)), np.linalg.norm(b.std(0)))
    assert y.shape == (40, 2) and np.linalg.norm(a.mean(0) - b.mean(0)) > 3 * spread


def test_plot_command_writes_tsne_and_p_att_figures(synthetic_mosi_aligned, cache_dir, tmp_path):
    L.seed_everything(0)
    dm = MOSIDataModule(str(synthetic_mosi_aligned), aligned=True, batch_size=16, cache_dir=str(cache_dir))
    model = HybridShiftModule(text_model="tiny-bert", metric_family="mosi")
    trainer = _trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    ckpt = trainer.checkpoint_callback.best_model_path
    ids = read_feature_file(synthetic_mosi_aligned)["test"].ids[:2]
    out = tmp_path / "plots"
    assert (
        run_command(
            [
                "plot",
                "hybrid-shift",
                "--ckpt",
                ckpt,
                "--data-path",
                str(synthetic_mosi_aligned),
                "--cache-dir",
                str(cache_dir),
                "--out",
                str(out),
                "--iters",
                "50",
                "--utterances",
                *ids,
            ]
        )
        == 0
    )
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == sorted(["representations.png", *[f"p_att_{i}.png" for i in ids]])
    assert all((out / f).stat().st_size > 5000 for f in files)
    assert (
        run_command(
            [
                "plot",
                "hybrid-shift",
                "--ckpt",
                ckpt,
                "--data-path",
                str(synthetic_mosi_aligned),
                "--cache-dir",
                str(cache_dir),
                "--out",
                str(tmp_path / "pca"),
                "--method",
                "pca",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "pca").glob("p_att_*.png"))) == 3  # positive, neutral, negative picks
    # as a person runs it: the real command, the data section read from a config through the CLI's parser
    command = [
        sys.executable,
        "-m",
        "msa_lightning.cli",
        "plot",
        "hybrid-shift",
        "--ckpt",
        ckpt,
        "--config",
        str(REPO / "configs/hybrid_shift/mosi_bert.yaml"),
        "--model.init_args.text_model=tiny-bert",
        f"--data.init_args.path={synthetic_mosi_aligned}",
        f"--data.init_args.cache_dir={cache_dir}",
        "--method",
        "pca",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MSA_DEBUG": ""}
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "cfg")], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        sorted(done.stdout.split()) == sorted(str(p) for p in (tmp_path / "cfg").glob("*.png"))
        and len(done.stdout.split()) == 4
    )
    bad = subprocess.run(
        [*command, "--out", str(tmp_path / "bad"), "--utterances", "no_such_id"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        "msa: error: --utterances: 1 id(s) not found in split 'test': ['no_such_id']"
    )
