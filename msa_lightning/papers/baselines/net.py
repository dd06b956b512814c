"""The baselines' networks (LF-DNN, TFN, BERT-LSTM): plain nn.Modules returning MSAOutput; their LightningModules are
in module.py."""

from __future__ import annotations

import torch
from torch import nn

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.nn.fusion import tensor_fusion
from msa_lightning.nn.masking import lengths_to_mask, masked_mean
from msa_lightning.nn.pretrained import BERT_VOCAB_SIZE, freeze, load_model
from msa_lightning.nn.rnn import SequenceEncoder
from msa_lightning.nn.split_transformer import SplitTransformer
from msa_lightning.nn.text_encoder import TextEncoder
from msa_lightning.output import MSAOutput
from msa_lightning.papers.baselines.config import BertLSTMConfig, LFDNNConfig, MAGBERTConfig, TFNConfig


class TextFeaturizer(nn.Module):
    """One text vector per utterance: ``bag``, ``features`` or a pretrained encoder (see module doc)."""

    def __init__(self, text_encoder: str = "bag", dim: int = 128, finetune: bool = True) -> None:
        super().__init__()
        self.kind = text_encoder if text_encoder in ("bag", "features") else "pretrained"
        if self.kind == "bag":
            self.embedding = nn.Embedding(BERT_VOCAB_SIZE, dim, padding_idx=0)
            self.out_dim = dim
        elif self.kind == "features":
            self.out_dim = 768
        else:
            self.encoder = TextEncoder(text_encoder, finetune=finetune)
            self.out_dim = self.encoder.hidden_size

    def forward(self, batch: MSABatch) -> torch.Tensor:
        if self.kind == "bag":
            return masked_mean(self.embedding(batch.text_ids), batch.text_mask.bool())
        if self.kind == "features":
            if batch.text_feats is None:
                raise DataError("text_encoder='features' needs the feature file's 'text' array, which is absent")
            return masked_mean(batch.text_feats, batch.text_mask.bool())
        out = self.encoder(batch.text_ids, batch.text_mask, batch.text_segment)
        return out.last_hidden_state[:, 0]


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float, layers: int = 2) -> nn.Sequential:
    dims = [in_dim] + [hidden] * (layers - 1)
    blocks: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    blocks.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*blocks)


class _FrameMean(nn.Module):
    """Mean of the valid frames of a modality, batch-normalised (LF-DNN/TFN's audio/video input)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.norm(masked_mean(x, lengths_to_mask(lengths, x.shape[1])))


class LFDNN(nn.Module):
    """Late-fusion DNN: one MLP per modality over pooled features, concatenated, then an MLP head
    (hyper-parameters: :class:`~msa_lightning.papers.baselines.config.LFDNNConfig`)."""

    def __init__(self, config: LFDNNConfig) -> None:
        super().__init__()
        c = self.config = config
        self.text = TextFeaturizer(c.text_encoder, c.hidden)
        self.audio_pool, self.vision_pool = _FrameMean(c.audio_dim), _FrameMean(c.vision_dim)
        self.text_net = mlp(self.text.out_dim, c.hidden, c.hidden, c.dropout)
        self.audio_net = mlp(c.audio_dim, c.hidden, c.hidden, c.dropout)
        self.vision_net = mlp(c.vision_dim, c.hidden, c.hidden, c.dropout)
        self.head = mlp(3 * c.hidden, c.post_fusion_dim, 1, c.dropout)

    def forward(self, batch: MSABatch) -> MSAOutput:
        h = torch.cat(
            [
                self.text_net(self.text(batch)),
                self.audio_net(self.audio_pool(batch.audio, batch.audio_lengths)),
                self.vision_net(self.vision_pool(batch.vision, batch.vision_lengths)),
            ],
            dim=-1,
        )
        return MSAOutput(M=self.head(h).squeeze(-1), features={"fusion": h})


class TFN(nn.Module):
    """Tensor Fusion Network (Zadeh et al., EMNLP 2017): unimodal subnetworks, the outer product of
    ``[h_t; 1] x [h_a; 1] x [h_v; 1]`` (Eq. 3), then a post-fusion MLP (hyper-parameters:
    :class:`~msa_lightning.papers.baselines.config.TFNConfig`)."""

    def __init__(self, config: TFNConfig) -> None:
        super().__init__()
        c = self.config = config
        self.text = TextFeaturizer(c.text_encoder, c.text_hidden)
        self.text_net = mlp(self.text.out_dim, c.text_hidden, c.text_hidden, c.dropout)
        self.audio_pool, self.vision_pool = _FrameMean(c.audio_dim), _FrameMean(c.vision_dim)
        self.audio_net = mlp(c.audio_dim, c.audio_hidden, c.audio_hidden, c.dropout)
        self.vision_net = mlp(c.vision_dim, c.vision_hidden, c.vision_hidden, c.dropout)
        fused = (c.text_hidden + 1) * (c.audio_hidden + 1) * (c.vision_hidden + 1)
        self.head = nn.Sequential(nn.Dropout(c.dropout), mlp(fused, c.post_fusion_dim, 1, c.dropout, layers=3))

    def forward(self, batch: MSABatch) -> MSAOutput:
        z = tensor_fusion(
            self.text_net(self.text(batch)),
            self.audio_net(self.audio_pool(batch.audio, batch.audio_lengths)),
            self.vision_net(self.vision_pool(batch.vision, batch.vision_lengths)),
        )
        return MSAOutput(M=self.head(z).squeeze(-1), features={"fusion": z})


class BertLSTM(nn.Module):
    """BERT ``[CLS]`` for text, LSTMs (packed by length) for audio and vision, late fusion by MLP
    (hyper-parameters: :class:`~msa_lightning.papers.baselines.config.BertLSTMConfig`)."""

    def __init__(self, config: BertLSTMConfig) -> None:
        super().__init__()
        c = self.config = config
        self.text_encoder = TextEncoder(c.text_model, finetune=c.finetune_text)
        self.audio_rnn = SequenceEncoder(c.audio_dim, c.audio_hidden, "sLSTM")
        self.vision_rnn = SequenceEncoder(c.vision_dim, c.vision_hidden, "sLSTM")
        width = self.text_encoder.hidden_size + c.audio_hidden + c.vision_hidden
        self.head = mlp(width, c.fusion_dim, 1, c.dropout)

    def forward(self, batch: MSABatch) -> MSAOutput:
        text = self.text_encoder(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state[:, 0]
        _, audio = self.audio_rnn(batch.audio, batch.audio_lengths)
        _, vision = self.vision_rnn(batch.vision, batch.vision_lengths)
        h = torch.cat([text, audio, vision], dim=-1)
        return MSAOutput(M=self.head(h).squeeze(-1), features={"fusion": h})


class MultimodalAdaptationGate(nn.Module):
    """The Multimodal Adaptation Gate of MAG-BERT (Rahman et al., ACL 2020, Section 3), per token ``i``:

    * gates ``g_a = ReLU(W_ga [Z; A] + b_a)``, ``g_v = ReLU(W_gv [Z; V] + b_v)`` (Eqs. 1-2);
    * displacement ``H = g_a * (W_a A) + g_v * (W_v V) + b_H`` (Eq. 3; ``b_H`` is the sum of the projections'
      biases, as in the released code);
    * ``Z' = Z + alpha H`` with ``alpha = min(||Z|| / ||H|| * beta, 1)`` (Eqs. 4-5): the shift is at most
      ``beta`` times the text state's norm; then LayerNorm and dropout, as the released code does.

    ``modalities`` (``"av"``, ``"a"``, ``"v"``) chooses the streams; a left-out one adds nothing to ``H``.
    """

    def __init__(
        self,
        hidden: int,
        dims: dict[str, int],
        beta_shift: float,
        dropout: float,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.gate = nn.ModuleDict({m: nn.Linear(dim + hidden, hidden) for m, dim in dims.items()})
        self.project = nn.ModuleDict({m: nn.Linear(dim, hidden) for m, dim in dims.items()})
        self.beta_shift, self.eps = beta_shift, eps
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def displacement(self, z: torch.Tensor, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        """``H`` of Eq. 3 from the gates of Eqs. 1-2: ``[B, L, hidden]``."""
        return sum(torch.relu(self.gate[m](torch.cat([z, x], dim=-1))) * self.project[m](x) for m, x in streams.items())

    def shift_scale(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``alpha`` of Eq. 5 per token, ``[B, L, 1]`` (``H = 0`` gives 1, and no shift)."""
        alpha = z.norm(dim=-1) / (h.norm(dim=-1) + self.eps) * self.beta_shift
        return alpha.clamp(max=1.0).unsqueeze(-1)

    def forward(self, z: torch.Tensor, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.displacement(z, streams)
        return self.dropout(self.norm(z + self.shift_scale(z, h) * h))


class MAGBERT(nn.Module):
    """MAG-BERT (hyper-parameters: :class:`~msa_lightning.papers.baselines.config.MAGBERTConfig`): BERT whose
    states after ``injection_layer`` layers are shifted by the :class:`MultimodalAdaptationGate`, then the rest
    of BERT, its pooler on ``[CLS]``, dropout and one linear layer to the score (``BertForSequenceClassification``
    with one label, as the released code).

    The gate reads word-aligned frames, one per token position (the field's ``aligned_50`` files, or
    ``msa features extract --align words``); frames at padded positions are zeroed.
    """

    def __init__(self, config: MAGBERTConfig) -> None:
        super().__init__()
        c = self.config = config
        model = load_model(c.text_model)
        if not c.finetune_text:
            freeze(model)
        self.text = SplitTransformer(model, c.injection_layer)
        dims = {m: d for m, d in (("a", c.audio_dim), ("v", c.vision_dim)) if m in c.modalities}
        self.mag = MultimodalAdaptationGate(self.text.hidden_size, dims, c.beta_shift, c.dropout)
        self.head_dropout = nn.Dropout(c.head_dropout)
        self.head = nn.Linear(self.text.hidden_size, 1)

    def forward(self, batch: MSABatch) -> MSAOutput:
        z, context = self.text.lower(batch.text_ids, batch.text_mask, batch.text_segment)
        keep = batch.text_mask[..., None].to(z.dtype)
        streams = {}
        for m, name, frames in (("a", "audio", batch.audio), ("v", "vision", batch.vision)):
            if m not in self.config.modalities:
                continue
            if frames.shape[1] != z.shape[1]:
                raise ConfigError(
                    f"MAG-BERT needs word-aligned features, one {name} frame per text position, but the data has "
                    f"{frames.shape[1]} {name} frames for {z.shape[1]} text positions: use the aligned file "
                    "(data.init_args.aligned: true, the field's aligned_50.pkl) or `msa features extract --align words`"
                )
            streams[m] = frames.to(z.dtype) * keep
        states = self.text.upper(self.mag(z, streams), context)
        pooler = getattr(self.text.model, "pooler", None)  # BERT's tanh layer on [CLS]; absent: [CLS] as is
        pooled = pooler(states) if pooler is not None else states[:, 0]
        return MSAOutput(M=self.head(self.head_dropout(pooled)).squeeze(-1), features={"fusion": pooled})
