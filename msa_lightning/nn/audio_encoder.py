"""The audio extractor of TwoStepMSA (paper 3.2): HuBERT on 16 kHz waveforms, last layer.

Pretrained models by hub name (``facebook/hubert-base-ls960``) or local folder through the suite's
offline-first loader (:func:`msa_lightning.nn.pretrained.load_model`); ``tiny-hubert`` builds a small
random HuBERT in-process for tests and benchmarks. Any speech model of the wav2vec 2.0 family with the
same interface (WavLM, wav2vec 2.0) loads as well.

Input handling, as the models' own feature extractor does it but on padded batches in torch:
each utterance is normalised to zero mean and unit variance over its *valid* samples, and padded
samples are set to 0, so the content of padding never reaches the model. Output frames of padded
samples are excluded from the global vector (mean over valid frames only).

Whether the attention mask is passed follows the checkpoint's family (``pass_attention_mask=None``):
models whose first convolution uses group normalisation (HuBERT base, ``feat_extract_norm="group"``)
were trained on zero-padded batches without one (Hugging Face's advice for them), models with layer
normalisation (HuBERT large) get it. Either way padding content is zero, and pooling ignores padding.

SpecAugment-style masking and layer drop are regularisers of fine-tuning: they are switched off
whenever the extractor is frozen (and in eval mode, as always).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import HubertConfig, HubertModel

from msa_lightning.errors import ConfigError
from msa_lightning.nn.masking import lengths_to_mask, masked_mean
from msa_lightning.nn.pretrained import freeze, load_model

SAMPLE_RATE = 16_000
TINY_AUDIO_MODELS = ("tiny-hubert",)


def tiny_hubert_config(hidden_size: int = 32, num_layers: int = 2) -> HubertConfig:
    """A small HuBERT: three convolutions with a total stride of 20 samples, 2 transformer layers."""
    return HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="group",
        mask_time_prob=0.05,
        mask_time_length=2,
        layerdrop=0.1,
    )


def normalize_waveform(waveform: torch.Tensor, mask: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Zero mean, unit variance per utterance over valid samples; padded samples become 0.
    ``waveform [B, S] float``, ``mask [B, S] bool`` (True = valid)."""
    m = mask.to(waveform.dtype)
    count = m.sum(1, keepdim=True).clamp(min=1.0)
    mean = (waveform * m).sum(1, keepdim=True) / count
    var = (((waveform - mean) * m) ** 2).sum(1, keepdim=True) / count
    return (waveform - mean) / torch.sqrt(var + eps) * m


class AudioEncoder(nn.Module):
    """HuBERT (or a sibling speech model) as the audio extractor.

    Args:
        pretrained: hub name, local folder, or ``tiny-hubert``.
        finetune: train the weights; when False the model is frozen (no weight gradients, eval mode)
            and SpecAugment masking and layer drop are off.
        freeze_feature_encoder: keep the convolutional waveform encoder fixed while fine-tuning the rest.
        pass_attention_mask: None = by the checkpoint's ``feat_extract_norm`` (see module docstring).
        tiny_kwargs: ``hidden_size``/``num_layers`` of ``tiny-hubert``.

    ``forward(waveform [B, S], waveform_mask [B, S] | None)`` returns ``(sequence [B, F, D],
    frame_mask [B, F] bool, pooled [B, D])`` from the last layer; ``pooled`` averages valid frames.
    """

    def __init__(
        self,
        pretrained: str = "facebook/hubert-base-ls960",
        finetune: bool = True,
        freeze_feature_encoder: bool = False,
        pass_attention_mask: bool | None = None,
        **tiny_kwargs,
    ) -> None:
        super().__init__()
        if pretrained in TINY_AUDIO_MODELS:
            self.model = HubertModel(tiny_hubert_config(**tiny_kwargs))
        else:
            self.model = load_model(pretrained)
        if not all(hasattr(self.model.config, key) for key in ("conv_kernel", "conv_stride")):
            raise ConfigError(
                f"pretrained audio model {pretrained!r} is a {type(self.model).__name__}, not a speech model of "
                f"the HuBERT / wav2vec 2.0 family (model.init_args.audio_model)"
            )
        config = self.model.config
        self.pass_attention_mask = (
            getattr(config, "feat_extract_norm", "group") == "layer"
            if pass_attention_mask is None
            else pass_attention_mask
        )
        if not finetune:
            # the model reads these at every forward: off for good, even if someone calls .train()
            config.apply_spec_augment = False
            config.layerdrop = 0.0
            freeze(self.model)
        elif freeze_feature_encoder:
            self.model.feature_extractor.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Number of output frames that valid samples produce: each unpadded convolution of the waveform
        encoder (``config.conv_kernel``/``conv_stride``) maps ``n`` samples to ``(n - k) // s + 1``; a
        wav2vec 2.0 adapter (``add_adapter``) adds convolutions with padding 1."""
        config = self.model.config
        lengths = sample_lengths.long()
        for kernel, stride in zip(config.conv_kernel, config.conv_stride):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        if getattr(config, "add_adapter", False):
            for _ in range(config.num_adapter_layers):
                lengths = (
                    torch.div(lengths + 2 - config.adapter_kernel_size, config.adapter_stride, rounding_mode="floor")
                    + 1
                )
        return lengths

    def forward(
        self, waveform: torch.Tensor, waveform_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if waveform_mask is None:
            waveform_mask = torch.ones_like(waveform, dtype=torch.bool)
        waveform_mask = waveform_mask.bool()
        values = normalize_waveform(waveform.float(), waveform_mask)
        attention_mask = waveform_mask.long() if self.pass_attention_mask else None
        sequence = self.model(values, attention_mask=attention_mask, return_dict=True).last_hidden_state
        frames = self.frame_lengths(waveform_mask.sum(1)).clamp(max=sequence.shape[1])
        frame_mask = lengths_to_mask(frames, sequence.shape[1])
        return sequence, frame_mask, masked_mean(sequence, frame_mask)
