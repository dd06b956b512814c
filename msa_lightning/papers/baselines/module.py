"""First baselines: LF-DNN, TFN and a BERT + LSTM late-fusion model.

They prove the pipeline end to end and are the comparison rows of the papers' tables. Each is a
pure ``nn.Module`` (buildable and testable alone) wrapped by a thin LightningModule.

Text for LF-DNN and TFN is chosen with ``text_encoder``:

* ``"bag"``: a learned embedding of the token ids, mean-pooled over real tokens (fast, no download);
* ``"features"``: the file's precomputed ``text`` features ``[N, L, 768]``;
* any Hugging Face name or path (``bert-base-uncased``, ``tiny-bert``): the encoder's ``[CLS]``
  state, which is how the "(B)" rows of the papers' tables are built.
"""

from __future__ import annotations

from msa_lightning.papers.baselines.net import LFDNN, TFN, BertLSTM
from msa_lightning.training.module import MSARegressionModule


class LFDNNModule(MSARegressionModule):
    """LF-DNN baseline (see :class:`LFDNN`). ``audio_dim``/``vision_dim`` (``None``: from the data) are
    the dataset's feature sizes (MOSI 5/20, MOSEI 74/35, CH-SIMS 33/709, CH-SIMS v2 25/177); remaining
    args as :class:`MSARegressionModule`."""

    encoder_prefix = "net.text.encoder"

    def __init__(
        self,
        audio_dim: int | None = None,
        vision_dim: int | None = None,
        text_encoder: str = "bag",
        hidden: int = 64,
        post_fusion_dim: int = 64,
        dropout: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.init_net()

    def build_net(self) -> LFDNN:
        hp = self.hparams
        return LFDNN(hp.audio_dim, hp.vision_dim, hp.text_encoder, hp.hidden, hp.post_fusion_dim, hp.dropout)

    @property
    def required_inputs(self) -> set[str]:
        return _text_inputs(self.hparams.text_encoder) | NONVERBAL_INPUTS


class TFNModule(MSARegressionModule):
    """TFN baseline (see :class:`TFN`)."""

    encoder_prefix = "net.text.encoder"

    def __init__(
        self,
        audio_dim: int | None = None,
        vision_dim: int | None = None,
        text_encoder: str = "bag",
        text_hidden: int = 32,
        audio_hidden: int = 8,
        vision_hidden: int = 8,
        post_fusion_dim: int = 64,
        dropout: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.init_net()

    def build_net(self) -> TFN:
        hp = self.hparams
        return TFN(
            hp.audio_dim,
            hp.vision_dim,
            hp.text_encoder,
            hp.text_hidden,
            hp.audio_hidden,
            hp.vision_hidden,
            hp.post_fusion_dim,
            hp.dropout,
        )

    @property
    def required_inputs(self) -> set[str]:
        return _text_inputs(self.hparams.text_encoder) | NONVERBAL_INPUTS


class BertLSTMModule(MSARegressionModule):
    """BERT + LSTM late-fusion baseline (see :class:`BertLSTM`); the BERT parameters get ``encoder_lr``."""

    encoder_prefix = "net.text_encoder"

    def __init__(
        self,
        audio_dim: int | None = None,
        vision_dim: int | None = None,
        text_model: str = "bert-base-uncased",
        finetune_text: bool = True,
        audio_hidden: int = 16,
        vision_hidden: int = 32,
        fusion_dim: int = 128,
        dropout: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.init_net()

    def build_net(self) -> BertLSTM:
        hp = self.hparams
        return BertLSTM(
            hp.audio_dim,
            hp.vision_dim,
            hp.text_model,
            hp.finetune_text,
            hp.audio_hidden,
            hp.vision_hidden,
            hp.fusion_dim,
            hp.dropout,
        )


NONVERBAL_INPUTS = frozenset({"audio", "audio_lengths", "vision", "vision_lengths"})


def _text_inputs(text_encoder: str) -> set[str]:
    """Batch fields :class:`TextFeaturizer` reads for ``text_encoder`` (``text_feats`` only for ``features``)."""
    if text_encoder == "bag":
        return {"text_ids", "text_mask"}
    if text_encoder == "features":
        return {"text_feats", "text_mask"}
    return {"text_ids", "text_mask", "text_segment"}
