"""``HybridShiftModule``: Lin & Hu, "Dynamically Shifting Multimodal Representations via Hybrid-Modal
Attention for Multimodal Sentiment Analysis" (IEEE TMM 2024).

The network (MSG, MBA, split Transformer) is :class:`msa_lightning.papers.hybrid_shift.net.HybridShiftNet`;
this module adds the loss of Eq. 20,

    L = MSE(y_hat, y) + alpha * L_shift^t + beta * L_shift^a + gamma * L_shift^v,

with ``L_shift^m`` the Shifting HuberLoss (Eq. 19, threshold ``delta``) of MSG-m's shift vectors, and
the paper's training set-up as defaults (Sec. IV-E): AdamW, linear warm-up, peak learning rate 2e-5.
Checkpoints are chosen by the minimum validation loss (``val/loss``, the total loss), as the paper
picks its best epoch; the configs in ``configs/hybrid_shift/`` set that monitor.

Logged: ``{train,val,test}/loss`` (total), ``*/mse`` and ``*/shift_t``, ``*/shift_a``, ``*/shift_v``
(the Huber terms before weighting, logged even when ``use_shift_huber`` is off, for the comparison of
Fig. 9). Acc-2 in the paper's tables is negative vs positive with zero labels excluded: that is the
suite's ``acc2_non0``/``f1_non0``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from msa_lightning.batch import MSABatch
from msa_lightning.output import MSAOutput
from msa_lightning.papers.hybrid_shift.config import HybridShiftConfig
from msa_lightning.papers.hybrid_shift.net import (
    SYMBOL,
    HybridShiftNet,
    shifting_huber_loss,
)
from msa_lightning.training.module import MSARegressionModule, base_args, labels_of


class HybridShiftModule(MSARegressionModule):
    """HybridShift for MOSI/MOSEI (word-aligned features: ``data.aligned: true``).

    The network's arguments are the fields of
    :class:`~msa_lightning.papers.hybrid_shift.config.HybridShiftConfig` (given flat, as
    ``model.init_args.insert_layer``; see :class:`~msa_lightning.papers.hybrid_shift.net.HybridShiftNet`
    for how ablations and missing modalities are handled). Loss arguments:

    Args:
        use_shift_huber: add the Shifting HuberLoss terms (Table III, last row); when False their
            weights are zero (the terms are still logged).
        delta: Huber threshold of Eq. 19.
        alpha, beta, gamma: weights of the text, acoustic and visual shift losses (Eq. 20).

    Optimisation arguments are :class:`MSARegressionModule`'s, with the paper's values as defaults
    (no ``annealing_epochs``: the paper's schedule is linear warm-up). The paper does not report
    ``delta`` or ``alpha``/``beta``/``gamma`` (found by grid search); the defaults are starting points.
    """

    encoder_prefix = "net.text.model"

    def __init__(
        self,
        use_shift_huber: bool = True,
        delta: float = 1.0,
        alpha: float = 0.1,
        beta: float = 0.1,
        gamma: float = 0.1,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        encoder_lr: float | None = None,
        encoder_weight_decay: float = 0.01,
        param_groups: list[dict] | None = None,
        optimizer: Literal["adam", "adamw"] = "adamw",
        scheduler: Literal["none", "linear", "cosine", "constant"] = "linear",
        warmup_ratio: float = 0.1,
        metric_family: Literal["auto", "mosi", "sims", "simsv2"] = "auto",
        **net,
    ) -> None:
        super().__init__(**base_args(locals()))
        self.save_hyperparameters()
        self.use_config(HybridShiftConfig(**net))
        self.use_shift_huber, self.delta = use_shift_huber, delta
        weights = {"text": alpha, "audio": beta, "vision": gamma}
        #: effective weights of Eq. 20 (zero with the Shifting HuberLoss switched off)
        self.shift_weights = {m: (w if use_shift_huber else 0.0) for m, w in weights.items()}
        self.init_net()

    @property
    def net_requires(self) -> tuple[str, ...]:
        return tuple(f"{m}_dim" for m in ("audio", "vision") if m in self.config.modalities)

    @property
    def required_inputs(self) -> set[str]:
        fields = {
            "text": {"text_ids", "text_mask", "text_segment"},
            "audio": {"audio", "audio_lengths"},
            "vision": {"vision", "vision_lengths"},
        }
        return set().union(*(fields[m] for m in self.config.modalities))

    def build_net(self) -> HybridShiftNet:
        return HybridShiftNet(self.config)

    def compute_loss(self, outputs: MSAOutput, batch: MSABatch) -> tuple[torch.Tensor, dict]:
        """Eq. 20: MSE (Eq. 18) plus the weighted Shifting HuberLosses (Eq. 19) of the active MSGs."""
        loss = F.mse_loss(outputs.M, labels_of(batch))
        parts = {"mse": loss.detach()}
        mask = outputs.extras["mask"]
        for m, h_s in outputs.group("shift").items():
            term = shifting_huber_loss(h_s, mask, self.delta)
            parts[f"shift_{SYMBOL[m]}"] = term.detach()
            if self.shift_weights[m]:
                loss = loss + self.shift_weights[m] * term
        return loss, parts
