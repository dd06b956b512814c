"""The hyper-parameters of :class:`~msa_lightning.papers.hybrid_shift.net.HybridShiftNet` (Lin & Hu, IEEE TMM 2024)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from msa_lightning.batch import MODALITIES
from msa_lightning.training.config import NetConfig


@dataclass(frozen=True)
class HybridShiftConfig(NetConfig):
    """HybridShiftNet's hyper-parameters (Sec. III; ablation switches of Tables III, IV and VI).

    The paper does not report ``mu_init``, ``mba_dim``, the kernel sizes or the RNN sizes (found by grid
    search); the defaults here are starting points.

    Args:
        audio_dim: acoustic feature size of the file (MOSI 5, MOSEI 74); ``None`` = from the data.
        vision_dim: visual feature size (MOSI 20, MOSEI 35); ``None`` = from the data.
        text_model: hub name or path (``bert-base-uncased``, ``xlnet-base-cased``), ``tiny-bert``/``tiny-xlnet``
            (random, in-process); from Python also a Hugging Face base model instance.
        finetune_text: train the Transformer's weights.
        tiny_hidden_size: hidden size of the tiny models (ignored otherwise).
        tiny_num_layers: layers of the tiny models (ignored otherwise).
        insert_layer: where MSG-T sits (Fig. 5): the Transformer is split after this many layers (0 = after
            the embeddings, N = after the last layer; the paper's best is 2).
        rnn_variant: the acoustic/visual RNNs of Eqs. 1-2, ``sLSTM``/``bLSTM``/``sGRU``/``bGRU`` (Table VI).
        audio_hidden: acoustic RNN size (``F_a`` is twice as wide for bidirectional RNNs).
        vision_hidden: visual RNN size (``F_v`` likewise).
        rnn_layers: layers of each RNN.
        modalities: the streams used, a non-empty subset of ``text``, ``audio``, ``vision`` (Table IV).
        use_msg_t: MSG-T, the text shifting gate (Eqs. 4-8; Table III ablation).
        use_msg_a: MSG-A, the acoustic shifting gate (Table III ablation).
        use_msg_v: MSG-V, the visual shifting gate (Table III ablation).
        use_mba: the masked bimodal adjustment (Eqs. 9-17; Table III ablation).
        mba_crossed: MSG-A reads the text adjusted with vision and MSG-V the text adjusted with audio (the
            paper's wording); False: each MSG reads the MBA output of its own modality.
        mu_init: initial ``mu`` of every MSG (Eq. 8).
        msg_layer_norm: MAG-style LayerNorm + dropout after each MSG (not in Eq. 7; off).
        mba_dim: the common size ``d`` of Eqs. 9-10.
        mba_max_len: the longest text (``W_p*`` of Eqs. 13-14 are ``max_len x max_len``).
        text_kernel: ``k_t`` of Eq. 9.
        nonverbal_kernel: ``k_v``/``k_a`` of Eq. 10.
        fusion_dim: size of the fully connected fusion layer.
        dropout: on the RNN states and the fused vector.
        nonverbal_alignment: how frames are laid on the text positions, ``tokens`` or ``words`` (net.py's
            module docstring).
        frame_offset: with ``words``, frames of the file to skip before the first word's frame.
        pool: which text position the head reads: ``first``/``last`` valid token, or ``auto`` (``last`` for
            XLNet, whose ``<cls>`` ends the sequence, ``first`` otherwise).
    """

    audio_dim: int | None = None
    vision_dim: int | None = None
    text_model: str = "bert-base-uncased"
    finetune_text: bool = True
    tiny_hidden_size: int = 32
    tiny_num_layers: int = 2
    insert_layer: int = 2
    rnn_variant: Literal["sLSTM", "bLSTM", "sGRU", "bGRU"] = "sLSTM"
    audio_hidden: int = 16
    vision_hidden: int = 32
    rnn_layers: int = 1
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    use_msg_t: bool = True
    use_msg_a: bool = True
    use_msg_v: bool = True
    use_mba: bool = True
    mba_crossed: bool = True
    mu_init: float = 0.5
    msg_layer_norm: bool = False
    mba_dim: int = 64
    mba_max_len: int = 50
    text_kernel: int = 3
    nonverbal_kernel: int = 3
    fusion_dim: int = 128
    dropout: float = 0.1
    nonverbal_alignment: Literal["tokens", "words"] = "tokens"
    frame_offset: int = 0
    pool: Literal["auto", "first", "last"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.modalities or set(self.modalities) - set(MODALITIES):
            self.fail("modalities", f"a non-empty subset of {list(MODALITIES)}")
        if self.nonverbal_alignment not in ("tokens", "words"):
            self.fail("nonverbal_alignment", "'tokens' or 'words'")
        if self.pool not in ("auto", "first", "last"):
            self.fail("pool", "'auto', 'first' or 'last'")
