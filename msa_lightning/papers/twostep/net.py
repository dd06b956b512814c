"""TwoStepMSA's network: pretrained extractors (BERT, HuBERT, Video Swin) or stored features, unimodal heads and a
fusion (SF, TFN, MulT); the regimes are in module.py's docstring."""

from __future__ import annotations

import torch
from torch import nn

from msa_lightning.batch import MODALITIES, MSABatch
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.nn.fusion import tensor_fusion
from msa_lightning.nn.masking import lengths_to_mask, masked_mean
from msa_lightning.output import MSAOutput

FUSIONS = ("sf", "tfn", "mult")


#: the paper's letters of the modalities (its tables' T, A, V; also the unimodal label keys), in canonical order
LETTERS = ("T", "A", "V")


#: each letter's modality: the network attribute of its extractor (also the prefix ``net.<name>`` of its parameters)
EXTRACTOR = dict(zip(LETTERS, MODALITIES))


#: raw batch fields each extractor reads, and the step-2 feature fields that replace them
RAW_FIELDS = {
    "T": {"text_ids", "text_mask", "text_segment"},
    "A": {"waveform", "waveform_mask"},
    "V": {"frames", "frame_mask"},
}


FEATURE_FIELDS = {"T": {"text_feats", "text_mask"}, "A": {"audio", "audio_lengths"}, "V": {"vision", "vision_lengths"}}


def _key(name: str) -> str:
    return f"model.init_args.{name}"


def mlp_head(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """A decision-level fully connected block: dropout, ``in_dim -> hidden`` (ReLU), ``hidden -> 1``."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def parse_modalities(modalities: str) -> tuple[str, ...]:
    """``"TAV"``, ``"T+A"``, ``"av"`` ... -> the modalities in T, A, V order (a ConfigError otherwise)."""
    letters = [c for c in str(modalities).upper() if c not in "+ ,"]
    if not letters or set(letters) - set(LETTERS) or len(set(letters)) != len(letters):
        raise ConfigError(
            f"{_key('modalities')}: expected a non-empty subset of T, A, V such as 'TAV' or 'AV', found {modalities!r}"
        )
    return tuple(m for m in LETTERS if m in letters)


class TwoStepNet(nn.Module):
    """The TwoStepMSA network for one regime (see the module docstring).

    Args:
        modalities: the modalities it reads (T, A, V order).
        extractors: ``{modality: encoder}`` for those it runs itself (empty: step-2 feature batches).
        frozen: run the extractors under ``torch.no_grad`` (step 2 on raw batches).
        feature_dims: ``{modality: width}`` of the global vectors / sequences.
        unimodal_heads: modalities with their own head (joint: all; step1: one; single/step2: none).
        fusion: ``sf``, ``tfn``, ``mult`` or None (step 1: no multimodal part).
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        extractors: dict[str, nn.Module],
        frozen: bool,
        feature_dims: dict[str, int],
        unimodal_heads: tuple[str, ...],
        fusion: str | None,
        head_hidden: int = 128,
        head_dropout: float = 0.1,
        tfn_dim: int | None = 32,
        mult_args: dict | None = None,
    ) -> None:
        super().__init__()
        self.modalities, self.frozen, self.fusion_name = modalities, frozen, fusion
        for modality, encoder in extractors.items():
            setattr(self, EXTRACTOR[modality], encoder)
        self.extractor_modalities = tuple(extractors)
        self.heads = nn.ModuleDict({m: mlp_head(feature_dims[m], head_hidden, head_dropout) for m in unimodal_heads})
        self.fusion = None
        if fusion == "sf":
            fused_dim = sum(feature_dims[m] for m in modalities)
        elif fusion == "tfn":
            if tfn_dim is not None:
                self.fusion = nn.ModuleDict(
                    {m: nn.Sequential(nn.Linear(feature_dims[m], tfn_dim), nn.ReLU()) for m in modalities}
                )
            fused_dim = 1
            for m in modalities:
                fused_dim *= (tfn_dim if tfn_dim is not None else feature_dims[m]) + 1
        elif fusion == "mult":
            from msa_lightning.nn.mult import MULT_KEY, MulT

            dims = [feature_dims.get(m, 0) for m in LETTERS]
            keys = "".join(MULT_KEY[EXTRACTOR[m]] for m in modalities)
            self.fusion = MulT(dims, modalities=keys, **(mult_args or {}))
            fused_dim = self.fusion.out_dim
        self.head_m = mlp_head(fused_dim, head_hidden, head_dropout) if fusion is not None else None

    # ------------------------------------------------------------------ per-modality representations
    def _extract(self, modality: str, batch: MSABatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sequence [B, T, D], mask [B, T] bool, global [B, D])`` of one modality, from the extractor
        (raw batch) or from the stored step-2 features."""
        if modality in self.extractor_modalities:
            missing = sorted(f for f in RAW_FIELDS[modality] - {"text_segment"} if getattr(batch, f) is None)
            if missing:
                raise DataError(
                    f"TwoStepMSA's {EXTRACTOR[modality]} extractor reads the raw batch fields {missing}, "
                    f"which this batch lacks: use data.class_path "
                    f"msa_lightning.data.raw.RawMediaDataModule"
                )
            encoder = getattr(self, EXTRACTOR[modality])
            if modality == "T":
                sequence = encoder(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state
                return sequence, batch.text_mask.bool(), sequence[:, 0]  # [CLS]
            if modality == "A":
                return encoder(batch.waveform, batch.waveform_mask)
            return encoder(batch.frames, batch.frame_mask)
        missing = sorted(f for f in FEATURE_FIELDS[modality] if getattr(batch, f) is None)
        if missing:
            raise DataError(
                f"TwoStepMSA reads {EXTRACTOR[modality]} as precomputed features {missing}, which this "
                f"batch lacks: step 2 reads the stored extractor outputs of data.class_path "
                f"msa_lightning.papers.twostep.data.ExtractedFeaturesDataModule (or use "
                f"{_key('step2_inputs')}=raw with RawMediaDataModule); {_key('file_features')} reads "
                f"a standard feature file (MSADataModule)"
            )
        if modality == "T":
            sequence, mask = batch.text_feats.float(), batch.text_mask.bool()
        elif modality == "A":
            sequence, mask = batch.audio.float(), lengths_to_mask(batch.audio_lengths, batch.audio.shape[1])
        else:
            sequence, mask = batch.vision.float(), lengths_to_mask(batch.vision_lengths, batch.vision.shape[1])
        pooled = batch.extras.get(f"{EXTRACTOR[modality]}_pooled")
        if pooled is None:
            pooled = sequence[:, 0] if modality == "T" else masked_mean(sequence, mask)
        return sequence, mask, pooled.float()

    def represent(self, batch: MSABatch) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        needed = dict.fromkeys((*self.modalities, *self.heads))
        if self.frozen:
            with torch.no_grad():
                return {m: tuple(t.detach() for t in self._extract(m, batch)) for m in needed}
        return {m: self._extract(m, batch) for m in needed}

    def fuse(self, reps: dict) -> torch.Tensor:
        if self.fusion_name == "sf":
            return torch.cat([reps[m][2] for m in self.modalities], dim=-1)
        if self.fusion_name == "tfn":
            vectors = [reps[m][2] if self.fusion is None else self.fusion[m](reps[m][2]) for m in self.modalities]
            return tensor_fusion(*vectors)
        get = lambda m, i: reps[m][i] if m in reps else None  # noqa: E731
        out = self.fusion(get("T", 0), get("A", 0), get("V", 0), get("T", 1), get("A", 1), get("V", 1))
        return out["fused"]

    def forward(self, batch: MSABatch) -> MSAOutput:
        reps = self.represent(batch)
        unimodal = {m: head(reps[m][2]).squeeze(-1) for m, head in self.heads.items()}
        features = {m: reps[m][2] for m in reps}
        if self.head_m is None:  # step 1: the stage's prediction is its unimodal one
            ((modality, prediction),) = unimodal.items()
            return MSAOutput(M=prediction, unimodal=unimodal, features=features)
        fused = self.fuse(reps)
        features["M"] = fused
        return MSAOutput(M=self.head_m(fused).squeeze(-1), unimodal=unimodal, features=features)
