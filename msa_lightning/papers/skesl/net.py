"""SKESL's networks: the sentiment-knowledge encoder with nonverbal injection blocks, and its pretraining and fine-
tuning heads (equations in module.py's docstring)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msa_lightning.batch import MSABatch
from msa_lightning.errors import DataError
from msa_lightning.nn.masking import lengths_to_mask, masked_mean
from msa_lightning.nn.text_encoder import TextEncoder
from msa_lightning.output import MSAOutput
from msa_lightning.papers.skesl.config import SKESLConfig

#: batch extras written by :class:`~msa_lightning.papers.skesl.data.SKESLMaskedDataModule`
TARGET_KEY, LABEL_KEY = "skesl_target", "skesl_label"


class CrossModalAttention(nn.Module):
    """Eqs. 2-5 for one non-verbal modality m: ``Q = LN(X_{l-1}) W_Q``, ``K = LN(X_0^m) W_K``,
    ``V = LN(X_0^m) W_V``, ``Y^m = softmax(Q K^T / sqrt(d_T)) V``, padded frames masked out.

    The text's layer norm is applied by the caller (one ``LN(X_{l-1})`` per block, shared with Eq. 6).
    A clip without any valid frame of m gets ``Y^m = 0``.
    """

    def __init__(self, text_dim: int, modality_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(modality_dim)  # LN(X_0^m)
        self.query = nn.Linear(text_dim, text_dim, bias=False)  # W_Q^m in R^{d_T x d_T}
        self.key = nn.Linear(modality_dim, text_dim, bias=False)  # W_K^m in R^{d_m x d_T}
        self.value = nn.Linear(modality_dim, text_dim, bias=False)  # W_V^m in R^{d_m x d_T}
        self.dropout = dropout

    def forward(self, text_normed: torch.Tensor, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = lengths_to_mask(lengths, frames.shape[1])  # [B, T_m]
        has_frames = valid.any(dim=1)
        allowed = (valid | ~has_frames[:, None])[:, None, :]  # a frameless clip attends to its zeros, then is zeroed
        x = self.norm(frames)
        y = F.scaled_dot_product_attention(
            self.query(text_normed),
            self.key(x),
            self.value(x),
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(text_normed.shape[-1]),
        )
        return y * has_frames[:, None, None].to(y.dtype)


class NonverbalInjectionBlock(nn.Module):
    """One block of Section 3.4: ``Y_l = Y^A + LN(X_{l-1}) + Y^V`` (Eq. 6) and
    ``X_l = FFN(LN(Y_l)) + Y_l`` (Eq. 7), with ``Y^m`` from :class:`CrossModalAttention`."""

    def __init__(
        self, text_dim: int, audio_dim: int, vision_dim: int, ffn_dim: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        ffn_dim = ffn_dim or 4 * text_dim
        self.text_norm = nn.LayerNorm(text_dim)  # LN(X_{l-1}) of Eqs. 2 and 6
        self.audio = CrossModalAttention(text_dim, audio_dim, dropout)
        self.vision = CrossModalAttention(text_dim, vision_dim, dropout)
        self.ffn_norm = nn.LayerNorm(text_dim)  # LN(Y_l) of Eq. 7
        self.ffn = nn.Sequential(
            nn.Linear(text_dim, ffn_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, text_dim),
            nn.Dropout(dropout),
        )

    def forward(
        self,
        text: torch.Tensor,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        vision: torch.Tensor,
        vision_lengths: torch.Tensor,
    ) -> torch.Tensor:
        normed = self.text_norm(text)
        y = self.audio(normed, audio, audio_lengths) + normed + self.vision(normed, vision, vision_lengths)
        return self.ffn(self.ffn_norm(y)) + y


def intensity_head(in_dim: int, hidden: int = 256, dropout: float = 0.1) -> nn.Sequential:
    """The two-layer fully connected network of Eq. 8 (hidden size 256 in Table 9)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class SKESLEncoder(nn.Module):
    """BERT (Eq. 1) followed by ``num_blocks`` non-verbal injection blocks: ``X_L [B, N, d_T]``.

    Arguments: the encoder's fields of :class:`~msa_lightning.papers.skesl.config.SKESLConfig`
    (documented there; :func:`encoder_of` builds one from a config).
    """

    def __init__(
        self,
        text_model: str,
        audio_dim: int | None,
        vision_dim: int | None,
        num_blocks: int = 4,
        share_blocks: bool = False,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        use_nonverbal: bool = True,
        finetune_text: bool = True,
    ) -> None:
        super().__init__()
        self.text_encoder = TextEncoder(text_model, finetune=finetune_text)
        if getattr(self.text_encoder.model, "pooler", None) is not None:
            self.text_encoder.model.pooler = None  # unused (token states are read): DDP needs every weight used
        self.use_nonverbal = use_nonverbal
        d = self.text_encoder.hidden_size
        self.out_dim = d
        if not use_nonverbal:
            self.blocks = nn.ModuleList()
        elif share_blocks:
            block = NonverbalInjectionBlock(d, audio_dim, vision_dim, ffn_dim, dropout)
            self.blocks = nn.ModuleList([block] * num_blocks)  # the same module (and weights) L times
        else:
            self.blocks = nn.ModuleList(
                NonverbalInjectionBlock(d, audio_dim, vision_dim, ffn_dim, dropout) for _ in range(num_blocks)
            )

    def forward(self, batch: MSABatch) -> torch.Tensor:
        x = self.text_encoder(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state
        for block in self.blocks:  # keys and values always from the original frames X_0^m
            x = block(x, batch.audio, batch.audio_lengths, batch.vision, batch.vision_lengths)
        return x


def encoder_of(config: SKESLConfig) -> SKESLEncoder:
    """The encoder a :class:`~msa_lightning.papers.skesl.config.SKESLConfig` describes."""
    c = config
    return SKESLEncoder(
        c.text_model,
        c.audio_dim,
        c.vision_dim,
        c.num_blocks,
        c.share_blocks,
        c.ffn_dim,
        c.dropout,
        c.use_nonverbal,
        c.finetune_text,
    )


class _EncoderAndHead(nn.Module):
    """The encoder and a two-layer head on it (hyper-parameters:
    :class:`~msa_lightning.papers.skesl.config.SKESLConfig`)."""

    def __init__(self, config: SKESLConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder_of(config)
        self.head = intensity_head(self.encoder.out_dim, config.head_hidden, config.head_dropout)


class SKESLPretrainNet(_EncoderAndHead):
    """Encoder + the sentiment intensity predictor of Eq. 8 at the masked pieces.

    ``M`` is the predicted intensity of the masked word ``[B]``; ``features["masked"]`` the pooled
    output at the masked pieces ``[B, d_T]``."""

    def forward(self, batch: MSABatch) -> MSAOutput:
        target = batch.extras.get(TARGET_KEY)
        if target is None:
            raise DataError(
                f"SKESLPretrain needs batch.extras[{TARGET_KEY!r}] (the masked pieces) from sentiment "
                f"word masking: use msa_lightning.papers.skesl.data.SKESLMaskedDataModule"
            )
        x = self.encoder(batch)
        pooled = masked_mean(x, target.bool())
        return MSAOutput(M=self.head(pooled).squeeze(-1), features={"masked": pooled})


class SKESLNet(_EncoderAndHead):
    """Encoder + the fine-tuning output layer on ``X_L`` mean-pooled over the real tokens."""

    def forward(self, batch: MSABatch) -> MSAOutput:
        x = self.encoder(batch)
        pooled = masked_mean(x, batch.text_mask.bool())
        return MSAOutput(M=self.head(pooled).squeeze(-1), features={"pooled": pooled})
