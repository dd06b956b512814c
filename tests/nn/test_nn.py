"""Shared nn components: padding never leaks, fusion keeps its lower-order terms, encoders wire up."""

from __future__ import annotations

import pytest
import torch

from msa_lightning.nn.fusion import tensor_fusion
from msa_lightning.nn.rnn import SequenceEncoder
from msa_lightning.nn.text_encoder import TextEncoder


@pytest.mark.parametrize("variant", ["sLSTM", "bLSTM", "sGRU", "bGRU"])
def test_sequence_encoder_ignores_padding(variant):
    torch.manual_seed(0)
    enc = SequenceEncoder(6, 8, variant, out_dim=5).eval()
    x = torch.randn(3, 10, 6)
    lengths = torch.tensor([10, 4, 7])
    states, summary = enc(x, lengths)
    garbage = x.clone()
    garbage[1, 4:] = 100.0  # values behind the length must not matter
    garbage[2, 7:] = -50.0
    states2, summary2 = enc(garbage, lengths)
    torch.testing.assert_close(summary, summary2)
    torch.testing.assert_close(states[1, :4], states2[1, :4])
    assert states.shape == (3, 10, 8 * (2 if variant.startswith("b") else 1)) and summary.shape == (3, 5)
    assert torch.all(states[1, 4:] == 0)
    # the summary of a sample equals running it alone at its true length
    _, alone = enc(x[1:2, :4], torch.tensor([4]))
    torch.testing.assert_close(summary[1:2], alone)


def test_sequence_encoder_rejects_unknown_variant():
    with pytest.raises(ValueError, match="unknown RNN variant 'LSTM'"):
        SequenceEncoder(4, 4, "LSTM")


def test_tensor_fusion_contains_unimodal_and_bimodal_terms():
    t, a, v = torch.randn(2, 3), torch.randn(2, 2), torch.randn(2, 4)
    z = tensor_fusion(t, a, v).view(2, 4, 3, 5)  # [t;1] x [a;1] x [v;1]
    assert tensor_fusion(t, a, v).shape == (2, 4 * 3 * 5)
    torch.testing.assert_close(z[:, :3, -1, -1], t)  # the 1s of a and v keep t alone
    torch.testing.assert_close(z[:, -1, :2, -1], a)
    torch.testing.assert_close(z[:, :3, :2, -1], t[:, :, None] * a[:, None, :])  # bimodal
    torch.testing.assert_close(z[:, 1, 0, 2], t[:, 1] * a[:, 0] * v[:, 2])  # trimodal
    assert torch.all(z[:, -1, -1, -1] == 1)


def test_text_encoder_embeds_path_and_frozen_gradients():
    torch.manual_seed(0)
    enc = TextEncoder("tiny-bert", finetune=False).eval()
    ids = torch.tensor([[101, 2204, 3185, 102, 0], [101, 2919, 102, 0, 0]])
    mask = (ids != 0).long()
    by_ids = enc(ids, mask).last_hidden_state
    embeds = enc.embed(ids).detach().requires_grad_(True)
    by_embeds = enc(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(by_ids, by_embeds)
    (by_embeds[:, 0] * torch.randn(32)).sum().backward()  # (a plain sum is constant after LayerNorm)
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0  # gradients reach the inputs
    assert all(not p.requires_grad for p in enc.parameters())  # while the encoder stays frozen
    assert enc.hidden_size == 32
