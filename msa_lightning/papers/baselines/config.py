"""The hyper-parameters of the baseline networks (:mod:`msa_lightning.papers.baselines.net`).

``audio_dim``/``vision_dim`` (``None``: from the data) are the dataset's feature sizes (MOSI 5/20,
MOSEI 74/35, CH-SIMS 33/709, CH-SIMS v2 25/177). ``text_encoder`` of LF-DNN and TFN: ``bag`` (a learned
embedding of the token ids, mean-pooled), ``features`` (the file's ``text`` array) or a Hugging Face name
or path (its ``[CLS]`` state: the "(B)" rows of the papers' tables).
"""

from __future__ import annotations

from dataclasses import dataclass

from msa_lightning.training.config import NetConfig


@dataclass(frozen=True)
class LFDNNConfig(NetConfig):
    """LF-DNN's hyper-parameters.

    Args:
        audio_dim: acoustic feature size; ``None`` = from the data.
        vision_dim: visual feature size; ``None`` = from the data.
        text_encoder: ``bag``, ``features`` or a Hugging Face name or path (module docstring).
        hidden: width of each modality's MLP (and of the ``bag`` embedding).
        post_fusion_dim: hidden width of the MLP head on the concatenation.
        dropout: dropout of every MLP.
    """

    audio_dim: int | None = None
    vision_dim: int | None = None
    text_encoder: str = "bag"
    hidden: int = 64
    post_fusion_dim: int = 64
    dropout: float = 0.2


@dataclass(frozen=True)
class TFNConfig(NetConfig):
    """TFN's hyper-parameters (Zadeh et al., EMNLP 2017).

    Args:
        audio_dim: acoustic feature size; ``None`` = from the data.
        vision_dim: visual feature size; ``None`` = from the data.
        text_encoder: ``bag``, ``features`` or a Hugging Face name or path (module docstring).
        text_hidden: width of ``h_t`` (and of the ``bag`` embedding).
        audio_hidden: width of ``h_a``.
        vision_hidden: width of ``h_v``.
        post_fusion_dim: hidden width of the post-fusion MLP on the outer product of Eq. 3.
        dropout: dropout of every MLP.
    """

    audio_dim: int | None = None
    vision_dim: int | None = None
    text_encoder: str = "bag"
    text_hidden: int = 32
    audio_hidden: int = 8
    vision_hidden: int = 8
    post_fusion_dim: int = 64
    dropout: float = 0.2


@dataclass(frozen=True)
class BertLSTMConfig(NetConfig):
    """BERT + LSTM late fusion's hyper-parameters.

    Args:
        audio_dim: acoustic feature size; ``None`` = from the data.
        vision_dim: visual feature size; ``None`` = from the data.
        text_model: BERT name or path (``tiny-bert`` for tests).
        finetune_text: train BERT's weights.
        audio_hidden: acoustic LSTM size.
        vision_hidden: visual LSTM size.
        fusion_dim: hidden width of the fusion MLP.
        dropout: its dropout.
    """

    audio_dim: int | None = None
    vision_dim: int | None = None
    text_model: str = "bert-base-uncased"
    finetune_text: bool = True
    audio_hidden: int = 16
    vision_hidden: int = 32
    fusion_dim: int = 128
    dropout: float = 0.1


@dataclass(frozen=True)
class MAGBERTConfig(NetConfig):
    """MAG-BERT's hyper-parameters (Rahman et al., ACL 2020; defaults: the authors' released driver).

    Args:
        audio_dim: acoustic feature size; ``None`` = from the data.
        vision_dim: visual feature size; ``None`` = from the data.
        text_model: BERT name or path (``tiny-bert`` for tests).
        injection_layer: BERT layers before the Multimodal Adaptation Gate: ``0`` = right after the embedding
            layer (the released code and the paper's best position), up to the number of layers.
        beta_shift: ``beta`` of Eq. 5, the largest displacement relative to ``||Z||``.
        dropout: dropout after the gate's LayerNorm (the released ``dropout_prob``).
        head_dropout: dropout on the pooled ``[CLS]`` before the regression layer (BERT's
            ``hidden_dropout_prob`` in ``BertForSequenceClassification``).
        modalities: the nonverbal streams the gate reads: ``av`` (the paper), ``a`` or ``v`` (ablations).
        finetune_text: train BERT's weights (the paper fine-tunes the whole model).
    """

    audio_dim: int | None = None
    vision_dim: int | None = None
    text_model: str = "bert-base-uncased"
    injection_layer: int = 0
    beta_shift: float = 1.0
    dropout: float = 0.5
    head_dropout: float = 0.1
    modalities: str = "av"
    finetune_text: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modalities not in ("av", "a", "v"):
            self.fail("modalities", "'av', 'a' or 'v'")
        if not self.beta_shift > 0:
            self.fail("beta_shift", "a positive number")
        if self.injection_layer < 0:
            self.fail("injection_layer", "0 (right after the embeddings) or more")
