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

from msa_lightning.batch import MODALITIES, MSABatch
from msa_lightning.output import MSAOutput
from msa_lightning.papers.hybrid_shift.net import (
    SYMBOL,
    HybridShiftNet,
    shifting_huber_loss,
)
from msa_lightning.training.module import MSARegressionModule, labels_of


class HybridShiftModule(MSARegressionModule):
    """HybridShift for MOSI/MOSEI (word-aligned features: ``data.aligned: true``).

    Network arguments are those of :class:`~msa_lightning.papers.hybrid_shift.net.HybridShiftNet` (see its
    docstring for how ablations and missing modalities are handled). Loss arguments:

    Args:
        use_shift_huber: add the Shifting HuberLoss terms (Table III, last row); when False their
            weights are zero (the terms are still logged).
        delta: Huber threshold of Eq. 19.
        alpha, beta, gamma: weights of the text, acoustic and visual shift losses (Eq. 20).

    Optimisation arguments are :class:`MSARegressionModule`'s, with the paper's values as defaults.
    The paper does not report ``mu_init``, ``delta``, ``alpha``/``beta``/``gamma``, ``mba_dim``, the
    kernel sizes or the RNN sizes (found by grid search); the defaults here are starting points.
    """

    encoder_prefix = "net.text.model"

    def __init__(
        self,
        audio_dim: int | None = None,
        vision_dim: int | None = None,
        text_model: str = "bert-base-uncased",
        finetune_text: bool = True,
        tiny_hidden_size: int = 32,
        tiny_num_layers: int = 2,
        insert_layer: int = 2,
        rnn_variant: Literal["sLSTM", "bLSTM", "sGRU", "bGRU"] = "sLSTM",
        audio_hidden: int = 16,
        vision_hidden: int = 32,
        rnn_layers: int = 1,
        modalities: list[str] = list(MODALITIES),
        use_msg_t: bool = True,
        use_msg_a: bool = True,
        use_msg_v: bool = True,
        use_mba: bool = True,
        use_shift_huber: bool = True,
        mba_crossed: bool = True,
        mu_init: float = 0.5,
        msg_layer_norm: bool = False,
        mba_dim: int = 64,
        mba_max_len: int = 50,
        text_kernel: int = 3,
        nonverbal_kernel: int = 3,
        fusion_dim: int = 128,
        dropout: float = 0.1,
        nonverbal_alignment: Literal["tokens", "words"] = "tokens",
        frame_offset: int = 0,
        pool: Literal["auto", "first", "last"] = "auto",
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
    ) -> None:
        super().__init__(
            lr=lr,
            weight_decay=weight_decay,
            encoder_lr=encoder_lr,
            encoder_weight_decay=encoder_weight_decay,
            param_groups=param_groups,
            optimizer=optimizer,
            scheduler=scheduler,
            warmup_ratio=warmup_ratio,
            metric_family=metric_family,
        )
        self.save_hyperparameters()
        self.use_shift_huber, self.delta = use_shift_huber, delta
        weights = {"text": alpha, "audio": beta, "vision": gamma}
        #: effective weights of Eq. 20 (zero with the Shifting HuberLoss switched off)
        self.shift_weights = {m: (w if use_shift_huber else 0.0) for m, w in weights.items()}
        self.init_net()

    @property
    def net_requires(self) -> tuple[str, ...]:
        return tuple(f"{m}_dim" for m in ("audio", "vision") if m in self.hparams.modalities)

    @property
    def required_inputs(self) -> set[str]:
        fields = {
            "text": {"text_ids", "text_mask", "text_segment"},
            "audio": {"audio", "audio_lengths"},
            "vision": {"vision", "vision_lengths"},
        }
        return set().union(*(fields[m] for m in self.hparams.modalities))

    def build_net(self) -> HybridShiftNet:
        hp = self.hparams
        return HybridShiftNet(
            audio_dim=hp.audio_dim or 0,
            vision_dim=hp.vision_dim or 0,
            text_model=hp.text_model,
            finetune_text=hp.finetune_text,
            tiny_hidden_size=hp.tiny_hidden_size,
            tiny_num_layers=hp.tiny_num_layers,
            insert_layer=hp.insert_layer,
            rnn_variant=hp.rnn_variant,
            audio_hidden=hp.audio_hidden,
            vision_hidden=hp.vision_hidden,
            rnn_layers=hp.rnn_layers,
            modalities=hp.modalities,
            use_msg_t=hp.use_msg_t,
            use_msg_a=hp.use_msg_a,
            use_msg_v=hp.use_msg_v,
            use_mba=hp.use_mba,
            mba_crossed=hp.mba_crossed,
            mu_init=hp.mu_init,
            msg_layer_norm=hp.msg_layer_norm,
            mba_dim=hp.mba_dim,
            mba_max_len=hp.mba_max_len,
            text_kernel=hp.text_kernel,
            nonverbal_kernel=hp.nonverbal_kernel,
            fusion_dim=hp.fusion_dim,
            dropout=hp.dropout,
            nonverbal_alignment=hp.nonverbal_alignment,
            frame_offset=hp.frame_offset,
            pool=hp.pool,
        )

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
