"""The hyper-parameters of :class:`~msa_lightning.papers.twostep.net.TwoStepNet` (Hai, Liu and Elhilali,
ICASSP 2024), and what a regime makes of them (which modalities, extractors, heads and fusion it builds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from msa_lightning.errors import ConfigError
from msa_lightning.training.config import NetConfig, config_key

#: the paper's letters of the modalities (its tables' T, A, V; also the unimodal label keys), in canonical order
LETTERS = ("T", "A", "V")
FUSIONS = ("sf", "tfn", "mult")
REGIMES = ("single", "joint", "step1", "step2")
#: the largest parameter-free TFN product (entries per sample) accepted; beyond it the M head alone would
#: need ``head_hidden`` times as many weights
MAX_TFN_ENTRIES = 1 << 22


def parse_modalities(modalities: str) -> tuple[str, ...]:
    """``"TAV"``, ``"T+A"``, ``"av"`` ... -> the modalities in T, A, V order (a ConfigError otherwise)."""
    letters = [c for c in str(modalities).upper() if c not in "+ ,"]
    if not letters or set(letters) - set(LETTERS) or len(set(letters)) != len(letters):
        raise ConfigError(
            f"{config_key('modalities')}: expected a non-empty subset of T, A, V such as 'TAV' or 'AV', "
            f"found {modalities!r}"
        )
    return tuple(m for m in LETTERS if m in letters)


@dataclass(frozen=True)
class TwoStepConfig(NetConfig):
    """TwoStepNet's hyper-parameters (Sections 3.1-3.4; the regimes are the rows of Table 1).

    Args:
        regime: ``single``, ``joint``, ``step1`` or ``step2`` (module.py's docstring).
        fusion: ``sf``, ``tfn`` or ``mult`` (Section 3.3; unused in step 1).
        modalities: the modalities fused, e.g. ``TAV``, ``AV``, ``T`` (Table 4).
        step1_modality: the extractor step 1 fine-tunes on its unimodal label (``T``, ``A`` or ``V``).
        step2_inputs: ``features`` (stored extractor outputs of ExtractedFeaturesDataModule: no extractor in
            the network) or ``raw`` (frozen extractors in the network).
        text_model: BERT name or folder (``tiny-bert`` in tests).
        audio_model: HuBERT name or folder (``tiny-hubert`` in tests).
        video_arch: Video Swin architecture (``swin3d_t``; ``tiny-swin3d``).
        video_checkpoint: Video Swin weights: a folder written by ``msa weights convert-swin3d`` (torchvision's
            Kinetics-400 ``swin3d_t``, the paper's Section 3.2 extractor), or a ``.pth``.
        video_random_init: allow a pretrained Video Swin architecture without ``video_checkpoint`` (random
            weights, logged as a warning); off, that is an error: nothing pretrained is silently random.
        video_gradient_checkpointing: recompute Swin activations in the backward pass (less memory).
        freeze_extractors: keep the pretrained extractors frozen in every regime (Table 3's snowflake rows:
            ``step1`` with a frozen extractor trains only its head); step 2 always freezes them.
        head_hidden: hidden width of the fully connected heads (Section 3.4; not stated in the paper).
        head_dropout: their dropout.
        tfn_dim: ``None`` (default): the paper's parameter-free TFN (Section 3.3), the outer product of the raw
            ``[g; 1]`` global vectors (refused above :data:`MAX_TFN_ENTRIES` entries per sample); a number: a
            learned projection (ReLU) of each global vector to that width first (the shipped Table 1 configs
            with the proposed extractors: 32; the paper does not say how its TFN rows fit in memory).
        mult_dim: MulT's width.
        mult_heads: MulT's attention heads.
        mult_layers: MulT's depth.
        mult_positional_embedding: MulT's positional embeddings (on: the original MulT; off: the field's
            toolkit).
        mult_reference_dropouts: MulT's dropouts as the reference implementation of MulT (Tsai et al., 2019) sets
            them (default): every memory transformer uses the text attention dropout and the text sequence gets
            the embedding dropout before its projection; off: each memory transformer uses its target
            modality's attention dropout and the text none.
        file_features: modalities read as the feature file's precomputed (hand-crafted) features instead of
            an extractor: ``"AV"`` gives Table 1's baseline rows (None: none).
        text_dim: width of stored text features (step 2 on features); ``None`` = from the data.
        audio_dim: width of stored or file acoustic features; ``None`` = from the data.
        vision_dim: width of stored or file visual features; ``None`` = from the data.
    """

    regime: Literal["single", "joint", "step1", "step2"] = "joint"
    fusion: Literal["sf", "tfn", "mult"] = "sf"
    modalities: str = "TAV"
    step1_modality: Literal["T", "A", "V"] | None = None
    step2_inputs: Literal["features", "raw"] = "features"
    text_model: str = "bert-base-chinese"
    audio_model: str = "facebook/hubert-base-ls960"
    video_arch: str = "swin3d_t"
    video_checkpoint: str | None = None
    video_random_init: bool = False
    video_gradient_checkpointing: bool = False
    freeze_extractors: bool = False
    head_hidden: int = 128
    head_dropout: float = 0.1
    tfn_dim: int | None = None
    mult_dim: int = 30
    mult_heads: int = 5
    mult_layers: int = 5
    mult_positional_embedding: bool = True
    mult_reference_dropouts: bool = True
    file_features: str | None = None
    text_dim: int | None = None
    audio_dim: int | None = None
    vision_dim: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        key = config_key
        if self.regime not in REGIMES:
            self.fail("regime", f"one of {list(REGIMES)}")
        if self.fusion not in FUSIONS:
            self.fail("fusion", f"one of {list(FUSIONS)}")
        if self.step2_inputs not in ("features", "raw"):
            self.fail("step2_inputs", "'features' or 'raw'")
        parse_modalities(self.modalities)
        if set(self.file_modalities) - {"A", "V"}:
            raise ConfigError(
                f"{key('file_features')}: expected a subset of A, V (the hand-crafted acoustic and "
                f"visual features of a feature file; text always runs BERT), found {self.file_features!r}"
            )
        if self.file_modalities and self.regime == "step2" and self.step2_inputs == "features":
            raise ConfigError(
                f"{key('file_features')}={self.file_features!r} with {key('regime')}=step2 needs "
                f"{key('step2_inputs')}=raw (the frozen step-1 BERT in the model, acoustic and "
                f"visual features from the file); step2_inputs=features reads extractor outputs only"
            )
        if self.regime == "step1" and self.step1_modality not in LETTERS:
            raise ConfigError(
                f"{key('step1_modality')}: regime 'step1' fine-tunes one extractor on its "
                f"unimodal label; expected T, A or V, found {self.step1_modality!r}"
            )
        if self.fusion == "mult" and self.regime != "step1" and len(self.used_modalities) < 2:
            raise ConfigError(
                f"{key('fusion')}=mult needs at least two modalities (cross-modal attention), "
                f"{key('modalities')} is {self.modalities!r}; use sf for one modality"
            )

    # ------------------------------------------------------------------ what the regime builds
    @property
    def used_modalities(self) -> tuple[str, ...]:
        """The modalities the network reads: ``modalities``, or in step 1 the one it fine-tunes."""
        return (self.step1_modality,) if self.regime == "step1" else parse_modalities(self.modalities)

    @property
    def file_modalities(self) -> tuple[str, ...]:
        """The modalities read from the feature file (``file_features``)."""
        return parse_modalities(self.file_features) if self.file_features else ()

    @property
    def reads_features(self) -> bool:
        """Step 2 on stored extractor outputs (no extractor in the network)."""
        return self.regime == "step2" and self.step2_inputs == "features"

    def reads_as_features(self, modality: str) -> bool:
        """``modality`` comes as precomputed features (step-2 extractor outputs or the feature file's)."""
        return self.reads_features or modality in self.file_modalities

    @property
    def frozen(self) -> bool:
        """The extractors run frozen: always in step 2, in any regime with ``freeze_extractors``."""
        return self.regime == "step2" or bool(self.freeze_extractors)

    @property
    def unimodal_heads(self) -> tuple[str, ...]:
        """Modalities with their own head: joint, all; step 1, its one; single and step 2, none."""
        return self.used_modalities if self.regime in ("joint", "step1") else ()
