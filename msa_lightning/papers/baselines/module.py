"""Baselines: LF-DNN, TFN, a BERT + LSTM late-fusion model and MAG-BERT.

They prove the pipeline end to end and are the comparison rows of the papers' tables. Each is a
pure ``nn.Module`` (buildable and testable alone) wrapped by a thin LightningModule.

Text for LF-DNN and TFN is chosen with ``text_encoder``:

* ``"bag"``: a learned embedding of the token ids, mean-pooled over real tokens (fast, no download);
* ``"features"``: the file's precomputed ``text`` features ``[N, L, 768]``;
* any Hugging Face name or path (``bert-base-uncased``, ``tiny-bert``): the encoder's ``[CLS]``
  state, which is how the "(B)" rows of the papers' tables are built.
"""

from __future__ import annotations

from typing import Literal

from msa_lightning.papers.baselines.config import BertLSTMConfig, LFDNNConfig, MAGBERTConfig, TFNConfig
from msa_lightning.papers.baselines.net import LFDNN, MAGBERT, TFN, BertLSTM
from msa_lightning.training.module import FRAME_INPUTS, MSARegressionModule, base_args


class _BaselineModule(MSARegressionModule):
    """A baseline: :class:`MSARegressionModule`'s arguments with its defaults, then the network's config
    (``**net``: the fields of the dataclass :meth:`make_config` builds, given flat)."""

    encoder_prefix = "net.text.encoder"

    def __init__(
        self,
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
        # each subclass's make_config names its dataclass (jsonargparse reads the fields through it)
        self.use_config(self.make_config(**net))
        self.init_net()

    def make_config(self, **net):
        raise NotImplementedError(f"{type(self).__name__} must implement make_config(**net)")

    @property
    def required_inputs(self) -> set[str]:
        return _text_inputs(self.config.text_encoder) | NONVERBAL_INPUTS


class LFDNNModule(_BaselineModule):
    """LF-DNN baseline (:class:`LFDNN`; network arguments: :class:`LFDNNConfig`)."""

    def make_config(self, **net) -> LFDNNConfig:
        return LFDNNConfig(**net)

    def build_net(self) -> LFDNN:
        return LFDNN(self.config)


class TFNModule(_BaselineModule):
    """TFN baseline (:class:`TFN`; network arguments: :class:`TFNConfig`)."""

    def make_config(self, **net) -> TFNConfig:
        return TFNConfig(**net)

    def build_net(self) -> TFN:
        return TFN(self.config)


class BertLSTMModule(_BaselineModule):
    """BERT + LSTM late-fusion baseline (:class:`BertLSTM`; network arguments: :class:`BertLSTMConfig`);
    the BERT parameters get ``encoder_lr``."""

    encoder_prefix = "net.text_encoder"

    def make_config(self, **net) -> BertLSTMConfig:
        return BertLSTMConfig(**net)

    def build_net(self) -> BertLSTM:
        return BertLSTM(self.config)

    @property
    def required_inputs(self) -> set[str]:
        return set(FRAME_INPUTS)


class MAGBERTModule(_BaselineModule):
    """MAG-BERT baseline (:class:`MAGBERT`; network arguments: :class:`MAGBERTConfig`), a row of TwoStepMSA's,
    HybridShift's and SKESL's tables; the BERT parameters get ``encoder_lr``. Optimiser of the released code:
    ``configs/baselines/mag_bert_*.yaml``."""

    encoder_prefix = "net.text.model"

    def make_config(self, **net) -> MAGBERTConfig:
        return MAGBERTConfig(**net)

    def build_net(self) -> MAGBERT:
        return MAGBERT(self.config)

    @property
    def required_inputs(self) -> set[str]:
        streams = {"a": "audio", "v": "vision"}
        return {"text_ids", "text_mask", "text_segment"} | {streams[m] for m in self.config.modalities}


NONVERBAL_INPUTS = frozenset({"audio", "audio_lengths", "vision", "vision_lengths"})


def _text_inputs(text_encoder: str) -> set[str]:
    """Batch fields :class:`TextFeaturizer` reads for ``text_encoder`` (``text_feats`` only for ``features``)."""
    if text_encoder == "bag":
        return {"text_ids", "text_mask"}
    if text_encoder == "features":
        return {"text_feats", "text_mask"}
    return {"text_ids", "text_mask", "text_segment"}
