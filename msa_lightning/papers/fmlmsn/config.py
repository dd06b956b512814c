"""The hyper-parameters of FmlMSN's networks (Peng et al., ESWA 2023): a stage learner and the meta-learner.

The short names are Table 3's: ``*hid`` hidden sizes, ``*drp`` dropouts, ``*dim`` predictor widths of the
text (``t``), acoustic (``a``), visual (``v``) and fused (``f``) parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msa_lightning.training.config import NetConfig

PAIRS = {"AV": ("A", "V"), "AT": ("A", "T"), "VT": ("V", "T")}
#: the sentences Eq. 1's N counts: the training split's or every split's
TEXT_LEN_SCOPES = ("train", "all")


@dataclass(frozen=True)
class FmlMSNStageConfig(NetConfig):
    """One stage learner (Fig. 4; Sections 4.1-4.2, Eqs. 3-5).

    Args:
        pair: ``AV``, ``AT`` or ``VT`` (alpha, beta = A,V / A,T / V,T).
        audio_dim: acoustic frame feature size; ``None`` = from the data.
        vision_dim: visual frame feature size; ``None`` = from the data.
        text_dim: size of the BERT token features (768 for BERT-base; checked against the data).
        text_len: the fixed text length L (Section 4.1); ``None`` = computed from the training lengths by
            Eqs. 1-2 at setup (the module's ``text_len_lambda``).
        text_len_scope: the sentences of Eq. 1's N when ``text_len`` is computed: ``train`` (the training
            split; no test sentence shapes the model) or ``all`` (every split, the whole dataset as the paper's
            "all sentences" reads).
        thid: width of the text LSTM (Table 3).
        tout: size of the text vector (the LSTM's final state mapped to ``tout``).
        ahid: width of the acoustic subnet's three layers.
        vhid: width of the visual subnet's three layers.
        tdrp: dropout on the text LSTM's output.
        adrp: dropout on the pooled acoustic input.
        vdrp: dropout on the pooled visual input.
        tdim: hidden width of SI_T.
        adim: hidden width of SI_A.
        vdim: hidden width of SI_V.
        fdim: hidden width of SI_gamma (the width of H_gamma the meta-learner reads).
        fdrp: dropout on SI_gamma's input.
    """

    pair: str = "AV"
    audio_dim: int | None = None
    vision_dim: int | None = None
    text_dim: int = 768
    text_len: int | None = None
    text_len_scope: str = "train"
    thid: int = 128
    tout: int = 128
    ahid: int = 16
    vhid: int = 128
    tdrp: float = 0.0
    adrp: float = 0.0
    vdrp: float = 0.0
    tdim: int = 64
    adim: int = 16
    vdim: int = 64
    fdim: int = 64
    fdrp: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pair not in PAIRS:
            self.fail("pair", f"one of {sorted(PAIRS)}")
        if self.text_len_scope not in TEXT_LEN_SCOPES:
            self.fail("text_len_scope", f"one of {list(TEXT_LEN_SCOPES)}")


@dataclass(frozen=True)
class FmlMSNMetaConfig(NetConfig):
    """The meta-learner SI_M (Section 4.3, Eq. 7).

    Args:
        stages: the stage features H_<stage> to fuse, in order (leaving one out is an ablation).
        stage_fdim: the width of each H (the stages' ``fdim``).
        fdim: SI_M's hidden width (Table 3).
        fdrp: dropout on SI_M's input.
    """

    stages: list[str] = field(default_factory=lambda: ["AV", "AT", "VT"])
    stage_fdim: int = 64
    fdim: int = 64
    fdrp: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.stages:
            self.fail("stages", "at least one stage name")
