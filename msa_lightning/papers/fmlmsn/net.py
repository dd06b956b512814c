"""FmlMSN's networks: the stage network (text/frame subnets, outer-product fusion, SI predictor) and the meta-learner
(equations in module.py's docstring)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from msa_lightning.batch import MSABatch
from msa_lightning.errors import DataError
from msa_lightning.nn.masking import lengths_to_mask, masked_mean
from msa_lightning.output import MSAOutput
from msa_lightning.papers.fmlmsn.config import PAIRS, FmlMSNMetaConfig, FmlMSNStageConfig


# ---------------------------------------------------------------------------------------- Eqs. 1-2
def text_length_rule(lengths: Sequence[int] | np.ndarray | torch.Tensor, lam: float = 3.0) -> int:
    """The fixed text length L of Eqs. 1-2: the mean training length plus ``lam`` population
    standard deviations (1/N, as Eq. 2 writes it), rounded up to a whole token.

    The paper does not say how the real-valued L is made an integer; rounding up keeps at
    least the stated share of sentences uncut.
    """
    x = np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths, dtype=np.float64)
    if x.size == 0:
        raise DataError("text_length_rule: no training lengths to compute L from (empty training split)")
    return max(1, int(math.ceil(x.mean() + lam * x.std() - 1e-9)))


def fix_length(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
    """Cut or zero-pad token features ``[B, T, D]`` *at the end* to ``length`` (Section 4.1).

    Positions past a sentence's real tokens (``mask`` 0) become zeros, as the paper pads with 0;
    sentences longer than ``length`` keep their first ``length`` vectors.
    """
    tokens = tokens * mask[..., None].to(tokens.dtype)
    if tokens.shape[1] >= length:
        return tokens[:, :length]
    return F.pad(tokens, (0, 0, 0, length - tokens.shape[1]))


def outer_fusion(r_alpha: torch.Tensor, r_beta: torch.Tensor) -> torch.Tensor:
    """R_gamma = R_alpha (x) R_beta (Eq. 3), flattened: ``[B, da] x [B, db] -> [B, da * db]``,
    element ``i * db + j`` is ``r_alpha[:, i] * r_beta[:, j]``."""
    return torch.einsum("bi,bj->bij", r_alpha, r_beta).flatten(1)


def masked_frame_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of ``x [B, T, D]`` (``lengths [B]``); 0 for a sample without frames."""
    return masked_mean(x, lengths_to_mask(lengths, x.shape[1]))


# ---------------------------------------------------------------------------------------- Section 4.1
class TextSubnet(nn.Module):
    """Token features -> fixed length L -> LSTM; the final hidden state, mapped to ``tout``.

    Section 4.1 calls the LSTM's final hidden state the text vector (size d_t1 = tout), while
    Table 3 sets the LSTM width (``thid``) and ``tout`` separately; a linear map thid -> tout
    reconciles the two (on CH-SIMS thid = tout = 128). The LSTM runs over all L steps, padding
    included, as the paper feeds the zero-padded matrix t_i to it.
    """

    def __init__(self, in_dim: int, thid: int, tout: int, dropout: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_dim, thid, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(thid, tout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.rnn(tokens)
        return self.out(self.drop(h[-1]))


class FrameSubnet(nn.Module):
    """Audio or vision: mean over valid frames, then three fully connected ReLU layers of ``hid``
    units (Section 4.1.2). Dropout (``adrp``/``vdrp``) acts on the pooled input."""

    def __init__(self, in_dim: int, hid: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hid), nn.ReLU(), nn.Linear(hid, hid), nn.ReLU(), nn.Linear(hid, hid), nn.ReLU()
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.layers(self.drop(masked_frame_mean(x, lengths)))


class SIPredictor(nn.Module):
    """A sentiment-intensity predictor: three layers (``hidden``, ``hidden``, 1), ReLU between.

    ``forward`` returns the prediction ``[B]`` and the activations of the second layer
    ``[B, hidden]`` (H_gamma of Section 4.3 for a bimodal predictor).
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(self.drop(x))
        return self.out(h).squeeze(-1), h


# ---------------------------------------------------------------------------------------- networks
class FmlMSNStageNet(nn.Module):
    """One stage learner (Fig. 4): the encoders of its two modalities, SI_alpha, SI_beta, SI_gamma.

    Text arrives as BERT token features (``batch.text_feats`` ``[B, L, text_dim]``): the feature
    file's ``text`` array, or one computed once by a frozen BERT and stored
    (:class:`~msa_lightning.papers.fmlmsn.data.TextFeaturesDataModule`). Hyper-parameters:
    :class:`~msa_lightning.papers.fmlmsn.config.FmlMSNStageConfig`.
    """

    def __init__(self, config: FmlMSNStageConfig) -> None:
        super().__init__()
        c = self.config = config
        self.pair, (self.alpha, self.beta) = c.pair, PAIRS[c.pair]
        # L (1 until the module computes it at setup); the module keeps it in its hparams, so checkpoints rebuild it
        self.text_len = int(c.text_len or 1)
        widths = {"T": c.tout, "A": c.ahid, "V": c.vhid}
        si_hidden = {"T": c.tdim, "A": c.adim, "V": c.vdim}
        if "T" in c.pair:
            self.text = TextSubnet(c.text_dim, c.thid, c.tout, c.tdrp)
        if "A" in c.pair:
            self.audio = FrameSubnet(c.audio_dim, c.ahid, c.adrp)
        if "V" in c.pair:
            self.vision = FrameSubnet(c.vision_dim, c.vhid, c.vdrp)
        self.si_alpha = SIPredictor(widths[self.alpha], si_hidden[self.alpha])
        self.si_beta = SIPredictor(widths[self.beta], si_hidden[self.beta])
        self.si_gamma = SIPredictor(widths[self.alpha] * widths[self.beta], c.fdim, c.fdrp)

    def token_features(self, batch: MSABatch) -> torch.Tensor:
        if batch.text_feats is None:
            raise DataError(
                "FmlMSN reads BERT token features (the feature file's 'text' array), which this file does not "
                "have; use data.class_path msa_lightning.papers.fmlmsn.data.TextFeaturesDataModule with "
                "data.init_args.text_model set to a BERT name or folder to compute them once"
            )
        return batch.text_feats

    def unimodal(self, batch: MSABatch, modality: str) -> torch.Tensor:
        if modality == "T":
            tokens = fix_length(self.token_features(batch), batch.text_mask, self.text_len)
            return self.text(tokens)
        if modality == "A":
            return self.audio(batch.audio, batch.audio_lengths)
        return self.vision(batch.vision, batch.vision_lengths)

    def forward(self, batch: MSABatch) -> MSAOutput:
        """Eqs. 3-5. ``M`` is the stage's main (bimodal) prediction y_gamma, ``unimodal`` holds
        y_alpha and y_beta, ``features["H"]`` is H_gamma (exported as ``features.H``)."""
        r_alpha, r_beta = self.unimodal(batch, self.alpha), self.unimodal(batch, self.beta)
        y_alpha, _ = self.si_alpha(r_alpha)
        y_beta, _ = self.si_beta(r_beta)
        y_gamma, h_gamma = self.si_gamma(outer_fusion(r_alpha, r_beta))
        return MSAOutput(M=y_gamma, unimodal={self.alpha: y_alpha, self.beta: y_beta}, features={"H": h_gamma})


class FmlMSNMetaNet(nn.Module):
    """SI_M over the concatenation F(H_AV, H_AT, H_VT) (Eq. 7): three layers of ``fdim`` units.
    Reads ``batch.extras["H_<stage>"]`` for each name in ``stages``, in that order (hyper-parameters:
    :class:`~msa_lightning.papers.fmlmsn.config.FmlMSNMetaConfig`)."""

    def __init__(self, config: FmlMSNMetaConfig) -> None:
        super().__init__()
        self.config = config
        self.stages = list(config.stages)
        self.si_m = SIPredictor(len(self.stages) * config.stage_fdim, config.fdim, config.fdrp)

    def forward(self, batch: MSABatch) -> MSAOutput:
        fused = torch.cat([batch.extras[f"H_{name}"].float() for name in self.stages], dim=-1)
        y, h = self.si_m(fused)
        return MSAOutput(M=y, features={"H": h})
