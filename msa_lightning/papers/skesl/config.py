"""The hyper-parameters of SKESL's networks (Qian et al., Findings of ACL 2023)."""

from __future__ import annotations

from dataclasses import dataclass

from msa_lightning.training.config import NetConfig


@dataclass(frozen=True)
class SKESLConfig(NetConfig):
    """The encoder (BERT, Eq. 1, then the non-verbal injection blocks, Eqs. 2-7) and the two-layer head
    on it: the pretraining network (:class:`~msa_lightning.papers.skesl.net.SKESLPretrainNet`, Eq. 8) and
    the fine-tuning one (:class:`~msa_lightning.papers.skesl.net.SKESLNet`) have the same
    hyper-parameters, so one config serves both.

    Args:
        text_model: BERT name or path (``bert-base-uncased``/``bert-large-uncased`` in Tables 6-7;
            ``tiny-bert`` for tests).
        audio_dim: ``d_A`` (33 with the paper's features); ``None`` = from the data.
        vision_dim: ``d_V`` (709 with the paper's features); ``None`` = from the data.
        num_blocks: ``L``, the number of injection blocks (4).
        share_blocks: one block applied ``L`` times (the authors' released code) instead of ``L`` blocks
            with their own weights (the paper).
        ffn_dim: hidden size of the FFN of Eq. 7 (``None``: ``4 d_T``).
        dropout: attention and FFN dropout inside the blocks.
        use_nonverbal: False = no blocks and no audio/visual input (Table 8, w/o AV).
        finetune_text: train BERT (the paper: "pre-trained in an end-to-end way"); False freezes it (the
            authors' released pretraining script does).
        head_hidden: hidden size of the head (the intensity predictor of Eq. 8: 256, Table 9).
        head_dropout: its dropout.
    """

    text_model: str = "bert-base-uncased"
    audio_dim: int | None = None
    vision_dim: int | None = None
    num_blocks: int = 4
    share_blocks: bool = False
    ffn_dim: int | None = None
    dropout: float = 0.1
    use_nonverbal: bool = True
    finetune_text: bool = True
    head_hidden: int = 256
    head_dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.use_nonverbal and self.num_blocks < 1:
            self.fail("num_blocks", "a number of blocks >= 1 (or use_nonverbal: false)")
