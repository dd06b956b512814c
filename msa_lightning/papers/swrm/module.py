"""SWRM (Wu et al., Findings of ACL 2022) and its main baseline Self-MM (Yu et al., AAAI 2021).

Both share one backbone (:class:`SelfMMNet`, the network of :class:`SelfMMModule`): a BERT text vector ``v_l`` (the
``[CLS]`` state),
LSTM summaries of the unaligned acoustic and visual sequences (``v_a``, ``v_v``), a fusion layer
``v_f = ReLU(W4 [v_l; v_v; v_a] + b4)`` (SWRM Eq. 5) and a prediction ``W5 v_f + b5`` (Eq. 6), plus
one unimodal head per modality trained with the labels of Self-MM's ULGM
(:class:`~msa_lightning.nn.ulgm.ULGM`, training state that lives on the LightningModule, not in the network). The ULGM
features are each head's hidden layer:
``F_s = ReLU(W_s v_s + b_s)`` for the text/audio/visual heads and ``v_f`` for fusion.

:class:`SWRMNet` (the network of :class:`SWRMModule`) adds the sentiment word refinement (Section 3.2): at the position
``s`` found
by the precompute (:mod:`msa_lightning.papers.swrm.positions`, gate ``p`` and ``k`` candidate
ids arrive in ``batch.extras``) it rebuilds the input word embedding from the ``[MASK]`` embedding,
the candidates' embeddings and the audio/visual context, then runs BERT on the refined
embeddings (Eqs. 1-4). Nothing in ``forward`` loops over samples.

Ablations of the paper's Table 2 are switches of :class:`~msa_lightning.papers.swrm.config.SWRMConfig`
(flat ``model.init_args`` keys of :class:`SWRMModule`):

* ``use_position=False`` (w/o Position): no detected position; every word position ``t`` is
  refined with the ``[MASK]`` embedding only, ``z_t = (1 - g_t) x_t + g_t x_mask`` with the
  multimodal gate ``g_t`` of Eq. 2 computed at ``t`` (``[CLS]``, ``[SEP]`` and padding untouched);
* ``use_attention=False`` (w/o Attention): at ``s``, ``r_add = x_mask`` (no candidate attention);
* ``multimodal=False`` (w/o Multi-modal): the gate reads ``h_l_s`` only and the candidate
  attention scores ``[x_c; h_l_s]`` (text context instead of the audio/visual states).

Reading the equations: Eq. 6 and Self-MM's paper use one linear layer per head; the released
Self-MM code adds a hidden layer (``head_layers=2``). Table 4's ``d_lv``, ``d_av``, ``d_vv`` are
taken as the sizes of the text/audio/visual head features and, for audio and vision, of the LSTM
outputs (``audio_out``/``vision_out``); ``v_l`` is BERT's 768-d ``[CLS]`` state as in Self-MM.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.nn.ulgm import ULGM
from msa_lightning.output import MSAOutput
from msa_lightning.papers.swrm.config import SelfMMConfig, SWRMConfig
from msa_lightning.papers.swrm.net import UNIMODAL, SelfMMNet, SWRMNet, head_dims
from msa_lightning.training.module import MSARegressionModule, base_args, labels_of


class SelfMMModule(MSARegressionModule):
    """Self-MM (Yu et al., 2021): BERT + LSTM fusion with ULGM unimodal labels; SWRM's baseline.

    The network is :class:`SelfMMNet` (``self.net``), its arguments the fields of
    :class:`~msa_lightning.papers.swrm.config.SelfMMConfig` (given flat); ULGM's state (``self.ulgm``) is
    training state and stays on this module.

    Args:
        label_bound: ULGM's clamp ``H`` (3 on MOSI, 1 on CH-SIMS); ``None`` = from the data.
        num_train_samples: size of the ULGM state; ``None`` = from the data (ULGM is sized by the
            training labels at fit anyway).
        Optimisation: :class:`~msa_lightning.training.module.MSARegressionModule`'s (``lr`` for the new
        layers, ``encoder_lr`` for BERT, ``param_groups`` for Self-MM's separate audio/visual learning
        rates), with its defaults.
    """

    encoder_prefix = "net.text_encoder"

    def __init__(
        self,
        label_bound: float | None = None,
        num_train_samples: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        encoder_lr: float | None = None,
        encoder_weight_decay: float = 0.0,
        param_groups: list[dict] | None = None,
        optimizer: Literal["adam", "adamw"] = "adam",
        scheduler: Literal["none", "linear", "cosine", "constant", "cosine_annealing"] = "none",
        warmup_ratio: float = 0.0,
        annealing_epochs: int = 20,
        metric_family: Literal["auto", "mosi", "sims", "simsv2"] = "auto",
        **net,
    ) -> None:
        super().__init__(**base_args(locals()))
        self.save_hyperparameters()
        # SWRMModule's make_config names its own dataclass (jsonargparse reads the fields through it)
        self.use_config(self.make_config(**net))
        self.ulgm = ULGM(head_dims(self.config), num_train_samples or 0, bound=label_bound)
        self.init_net()

    def make_config(self, **net) -> SelfMMConfig:
        return SelfMMConfig(**net)

    def build_net(self) -> SelfMMNet:
        return SelfMMNet(self.config)

    # ------------------------------------------------------------------ ULGM and losses
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if not self.config.use_ulgm:
            return
        if self.hparams.label_bound is None:
            raise ConfigError(
                "model.init_args.label_bound (ULGM's H) is not set and the datamodule does not give it "
                "(it is not a suite DataModule): set it (3 on MOSI/MOSEI, 1 on CH-SIMS)"
            )
        self.ulgm.bound = float(self.hparams.label_bound)
        if stage == "fit" and not self.ulgm.ready:
            self.ulgm.init_labels(torch.tensor(_train_labels(self._datamodule())))

    def compute_loss(self, outputs: MSAOutput, batch: MSABatch) -> tuple[torch.Tensor, dict]:
        """Plain L1 on ``M``; in training, plus the unimodal L1 losses against ULGM's generated labels,
        weighted by ``tanh(|y_s - y_m|)`` (generated labels exist for training rows only)."""
        loss = F.l1_loss(outputs.M, labels_of(batch))
        if not self.training:
            return loss, {}
        parts = {"loss_M": loss}
        if not self.config.use_ulgm:
            return loss, parts
        labels, weights = self.ulgm.labels(batch.index), self.ulgm.weights(batch.index)
        for key in UNIMODAL:
            parts[f"loss_{key}"] = (weights[key] * (outputs.unimodal[key] - labels[key]).abs()).mean()
            loss = loss + parts[f"loss_{key}"]
        return loss, parts

    def after_training_forward(self, outputs: MSAOutput, batch: MSABatch) -> None:
        if self.config.use_ulgm:  # after the loss has read this step's labels, as in the reference code
            self.ulgm.update(batch.index, outputs.features, epoch=self.current_epoch + 1)


def _train_labels(datamodule) -> np.ndarray:
    """The multimodal labels of the training split, in the row order of ``batch.index``."""
    get = getattr(datamodule, "train_labels", None)
    if not callable(get):
        raise ConfigError(
            "ULGM needs the training labels before fit: use an msa_lightning DataModule (it has "
            "train_labels()), or call model.ulgm.init_labels(train_labels) yourself "
            "(rows in the order of batch.index)"
        )
    return np.asarray(get("M"), dtype=np.float32)


class SWRMModule(SelfMMModule):
    """SWRM: sentiment-word-aware multimodal refinement on top of the Self-MM backbone (:class:`SWRMNet`).

    Needs ``batch.extras`` ``swrm_position`` ``[B]``, ``swrm_gate`` ``[B]`` and ``swrm_candidates``
    ``[B, k]`` (from :class:`~msa_lightning.papers.swrm.data.MOSIASRDataModule`). Arguments: as
    :class:`SelfMMModule`, with the network's from :class:`~msa_lightning.papers.swrm.config.SWRMConfig`
    (Self-MM's and the refinement's: the ablations of the module docstring).
    """

    def make_config(self, **net) -> SWRMConfig:
        return SWRMConfig(**net)

    def build_net(self) -> SWRMNet:
        if self.config.mask_token_id is None:
            from msa_lightning.nn.pretrained import load_tokenizer

            # recorded in hparams: checkpoints need no tokenizer
            self.set_hparams(mask_token_id=int(load_tokenizer(self.config.text_model).mask_token_id))
        return SWRMNet(self.config)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        positions = getattr(self._datamodule(), "sentiment_positions", None)
        width = getattr(self._datamodule(), "text_max_length", None)
        if self.config.use_position and callable(positions) and width:
            for split, found in positions().items():  # once, here: no device sync in the training step
                bad = (found.position < 0) | (found.position >= width)
                if bad.any():
                    raise DataError(
                        f"swrm_position of the {split} split lies outside [0, {width}) for "
                        f"{int(bad.sum())} utterances: the sentiment-position precompute used a "
                        f"different text_max_length or tokenizer than data.text_max_length={width}"
                    )
