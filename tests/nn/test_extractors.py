"""Pretrained extractors of TwoStepMSA: HuBERT audio encoder (nn/audio_encoder.py)."""

from __future__ import annotations

import pytest
import torch

from msa_lightning.errors import ConfigError
from msa_lightning.nn.audio_encoder import AudioEncoder, normalize_waveform
from msa_lightning.nn.pretrained import PretrainedNotAvailable


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    waveform = torch.randn(3, 1600, generator=g) * 0.3
    lengths = torch.tensor([1600, 1100, 700])
    mask = torch.arange(1600)[None] < lengths[:, None]
    return waveform, mask, lengths


def test_normalisation_uses_valid_samples_only():
    waveform, mask, lengths = _batch()
    out = normalize_waveform(waveform * 5 + 2, mask)
    for i, n in enumerate(lengths.tolist()):
        alone = normalize_waveform((waveform[i : i + 1, :n] * 5 + 2), torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(out[i : i + 1, :n], alone, rtol=0, atol=1e-5)
        assert (out[i, n:] == 0).all()
        assert abs(out[i, :n].mean().item()) < 1e-5 and abs(out[i, :n].std(unbiased=False).item() - 1) < 1e-3


@pytest.mark.parametrize("pass_attention_mask", [None, True])
def test_padding_changes_nothing_and_pooling_counts_valid_frames_only(pass_attention_mask):
    torch.manual_seed(0)
    encoder = AudioEncoder("tiny-hubert", finetune=False, pass_attention_mask=pass_attention_mask)
    waveform, mask, lengths = _batch()
    with torch.no_grad():
        sequence, frame_mask, pooled = encoder(waveform, mask)
        noisy = waveform.clone()
        noisy[~mask] = torch.randn(int((~mask).sum())) * 100  # other padding content
        sequence2, frame_mask2, pooled2 = encoder(noisy, mask)
        louder = encoder(waveform * 7.5, mask)[2]  # per-utterance normalisation: the level does not matter
    frames = encoder.frame_lengths(lengths)
    assert frame_mask.sum(1).tolist() == frames.tolist() and frames[0] == sequence.shape[1] > frames[2]
    assert torch.equal(frame_mask, frame_mask2)
    torch.testing.assert_close(pooled2, pooled, rtol=0, atol=0)
    torch.testing.assert_close(sequence2[frame_mask], sequence[frame_mask], rtol=0, atol=0)
    torch.testing.assert_close(louder, pooled, rtol=0, atol=1e-4)
    # the global vector is the mean of the valid frames, not of all frames
    for i, n in enumerate(frames.tolist()):
        torch.testing.assert_close(pooled[i], sequence[i, :n].mean(0), rtol=0, atol=1e-6)
    assert not torch.allclose(pooled[2], sequence[2].mean(0), atol=1e-4)


def test_frozen_extractor_has_no_spec_augment_layer_drop_or_gradients():
    encoder = AudioEncoder("tiny-hubert", finetune=False)
    config = encoder.model.config
    assert config.apply_spec_augment is False and config.layerdrop == 0.0
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.parameters())
    waveform, mask, _ = _batch()
    assert torch.equal(encoder(waveform, mask)[2], encoder(waveform, mask)[2])

    tuned = AudioEncoder("tiny-hubert", finetune=True, freeze_feature_encoder=True)
    assert tuned.model.config.apply_spec_augment and tuned.model.config.layerdrop > 0
    tuned(waveform, mask)[2].pow(2).sum().backward()
    assert tuned.model.feature_projection.projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tuned.model.feature_extractor.parameters())


def test_tiny_hubert_saved_to_a_folder_loads_by_path(tmp_path):
    torch.manual_seed(0)
    original = AudioEncoder("tiny-hubert", finetune=False)
    original.model.save_pretrained(tmp_path / "hubert")
    loaded = AudioEncoder(str(tmp_path / "hubert"), finetune=False)
    assert type(loaded.model).__name__ == "HubertModel" and loaded.hidden_size == 32
    waveform, mask, _ = _batch(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(waveform, mask)[2], original(waveform, mask)[2], rtol=0, atol=1e-6)


def test_wrong_or_missing_models_are_reported():
    with pytest.raises(ConfigError, match="'tiny-bert' is a BertModel, not a speech model"):
        AudioEncoder("tiny-bert")
    with pytest.raises(PretrainedNotAvailable, match="no-such-org/no-such-hubert"):
        AudioEncoder("no-such-org/no-such-hubert")


def test_attention_mask_follows_the_checkpoint_family(tmp_path):
    """HuBERT-large-style models (layer-normalised convolutions) get the attention mask; base-style
    ones (group norm) are fed zero padding without one, as they were trained."""
    from transformers import HubertModel

    from msa_lightning.nn.audio_encoder import tiny_hubert_config

    config = tiny_hubert_config()
    config.feat_extract_norm, config.do_stable_layer_norm = "layer", True
    HubertModel(config).save_pretrained(tmp_path / "large_style")
    large = AudioEncoder(str(tmp_path / "large_style"), finetune=False)
    assert large.pass_attention_mask and not AudioEncoder("tiny-hubert").pass_attention_mask
    waveform, mask, _ = _batch()
    with torch.no_grad():
        pooled = large(waveform, mask)[2]
        noisy = waveform.clone()
        noisy[~mask] = 5.0
        torch.testing.assert_close(large(noisy, mask)[2], pooled, rtol=0, atol=0)
        # with the mask, a clip's features do not depend on how much padding its batch adds
        n = int(mask[2].sum())
        alone = large(waveform[2:3, :n], mask[2:3, :n])[2]
    torch.testing.assert_close(alone[0], pooled[2], rtol=0, atol=1e-5)
