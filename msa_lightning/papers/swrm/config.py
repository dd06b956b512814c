"""The hyper-parameters of :class:`~msa_lightning.papers.swrm.net.SelfMMNet` (Yu et al., AAAI 2021) and of
:class:`~msa_lightning.papers.swrm.net.SWRMNet` (Wu et al., Findings of ACL 2022), which extends it."""

from __future__ import annotations

from dataclasses import dataclass

from msa_lightning.training.config import NetConfig


@dataclass(frozen=True)
class SelfMMConfig(NetConfig):
    """Self-MM's network (SWRM's backbone): BERT ``v_l``, LSTM summaries ``v_a``/``v_v``, the fusion layer
    (SWRM Eq. 5) and the heads (Eq. 6).

    Args:
        text_model: BERT name/path (``tiny-bert`` for tests).
        finetune_text: train BERT's weights.
        audio_dim: acoustic feature size (MOSI: 5 COVAREP); ``None`` = from the data.
        vision_dim: visual feature size (MOSI: 20 Facet); ``None`` = from the data.
        audio_hidden: LSTM size of the unaligned acoustic encoder.
        vision_hidden: LSTM size of the unaligned visual encoder.
        audio_out: size of ``v_a`` (a linear layer after the acoustic LSTM; SWRM Table 4 ``d_av``).
        vision_out: size of ``v_v`` (likewise; ``d_vv``).
        text_head_dim: size of the text head feature ``F_t`` (``d_lv``).
        audio_head_dim: size of ``F_a`` (``d_av``).
        vision_head_dim: size of ``F_v`` (``d_vv``).
        fusion_dim: size of ``v_f`` (Eq. 5; ``d_fv``).
        audio_lstm_dropout: dropout before the acoustic LSTM's output layer.
        vision_lstm_dropout: dropout before the visual LSTM's output layer.
        text_dropout: dropout on the text head's input.
        audio_dropout: dropout on the acoustic head's input.
        vision_dropout: dropout on the visual head's input.
        fusion_dropout: dropout on the fusion layer's input.
        head_layers: 1 = one linear output layer per head (Eq. 6 read literally), 2 = Self-MM's code (a
            hidden layer first).
        use_ulgm: build the text/audio/visual heads and train them with ULGM's generated labels (False: the
            multimodal head only, with the L1 loss on ``M``).
    """

    text_model: str = "bert-base-uncased"
    finetune_text: bool = True
    audio_dim: int | None = None
    vision_dim: int | None = None
    audio_hidden: int = 16
    vision_hidden: int = 32
    audio_out: int = 16
    vision_out: int = 32
    text_head_dim: int = 32
    audio_head_dim: int = 16
    vision_head_dim: int = 32
    fusion_dim: int = 128
    audio_lstm_dropout: float = 0.0
    vision_lstm_dropout: float = 0.0
    text_dropout: float = 0.0
    audio_dropout: float = 0.1
    vision_dropout: float = 0.1
    fusion_dropout: float = 0.1
    head_layers: int = 1
    use_ulgm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_layers not in (1, 2):
            self.fail("head_layers", "1 (the papers' equations) or 2 (Self-MM's code)")


@dataclass(frozen=True)
class SWRMConfig(SelfMMConfig):
    """SWRM's network: Self-MM's, plus the sentiment word refinement of Eqs. 1-4 (Section 3.2).

    Args:
        context_vision_hidden: size of ``LSTM_v`` over the pseudo-aligned visual sequence (Eq. 1; ``d_vh``).
        context_audio_hidden: size of ``LSTM_a`` (``d_ah``).
        context_av_hidden: size of ``LSTM_va`` (``d_vah``).
        use_position: refine at the detected sentiment position (False: Table 2's w/o Position, every word
            position refined with the ``[MASK]`` embedding).
        use_attention: the candidate attention of Eq. 3 (False: w/o Attention, ``r_add = x_mask``).
        multimodal: the gate and the attention read the audio/visual context (False: w/o Multi-modal,
            text context only).
        mask_token_id: id of ``[MASK]`` (``None``: from ``text_model``'s tokenizer when the module builds
            the network; it is then recorded, so checkpoints need no tokenizer).
        detach_context: compute ``h_l = BERT(x_l)`` without gradients (cheaper; the gate and the attention
            still train, BERT learns only through the fusion pass).
    """

    context_vision_hidden: int = 16
    context_audio_hidden: int = 32
    context_av_hidden: int = 48
    use_position: bool = True
    use_attention: bool = True
    multimodal: bool = True
    mask_token_id: int | None = None
    detach_context: bool = False
