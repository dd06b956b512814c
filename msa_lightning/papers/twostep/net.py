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
from msa_lightning.papers.twostep.config import LETTERS, MAX_TFN_ENTRIES, TwoStepConfig
from msa_lightning.training.config import config_key as _key

#: each letter's modality: the network attribute of its extractor (also the prefix ``net.<name>`` of its parameters)
EXTRACTOR = dict(zip(LETTERS, MODALITIES))


#: raw batch fields each extractor reads, and the step-2 feature fields that replace them
RAW_FIELDS = {
    "T": {"text_ids", "text_mask", "text_segment"},
    "A": {"waveform", "waveform_mask"},
    "V": {"frames", "frame_mask"},
}


FEATURE_FIELDS = {"T": {"text_feats", "text_mask"}, "A": {"audio", "audio_lengths"}, "V": {"vision", "vision_lengths"}}


def mlp_head(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """A decision-level fully connected block: dropout, ``in_dim -> hidden`` (ReLU), ``hidden -> 1``."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def build_extractors(config: TwoStepConfig) -> dict[str, nn.Module]:
    """``{modality: encoder}`` of the pretrained extractors the network runs itself (3.2): BERT, HuBERT and
    Video Swin for the modalities not read as features, frozen when the regime says so."""
    from msa_lightning.nn.audio_encoder import AudioEncoder
    from msa_lightning.nn.text_encoder import TextEncoder
    from msa_lightning.nn.video_swin import VideoSwinEncoder

    c = config
    extractors: dict[str, nn.Module] = {}
    for m in c.used_modalities:
        if m in c.file_modalities:
            continue
        if m == "T":
            extractors[m] = TextEncoder(c.text_model, finetune=not c.frozen)
        elif m == "A":
            extractors[m] = AudioEncoder(c.audio_model, finetune=not c.frozen)
        else:
            extractors[m] = VideoSwinEncoder(
                c.video_arch,
                c.video_checkpoint,
                finetune=not c.frozen,
                gradient_checkpointing=c.video_gradient_checkpointing,
            )
    return extractors


class TwoStepNet(nn.Module):
    """The TwoStepMSA network for one regime (see the module docstring): the extractors it runs itself
    (none for step-2 feature batches; frozen, under ``torch.no_grad``, in step 2), the unimodal heads and
    the fusion with its head M (none in step 1). Hyper-parameters:
    :class:`~msa_lightning.papers.twostep.config.TwoStepConfig`; ``text_dim``/``audio_dim``/``vision_dim``
    must be set for the modalities read as features.
    """

    def __init__(self, config: TwoStepConfig) -> None:
        super().__init__()
        c = self.config = config
        modalities, fusion = c.used_modalities, (None if c.regime == "step1" else c.fusion)
        self.modalities, self.frozen, self.fusion_name = modalities, c.frozen, fusion
        extractors = {} if c.reads_features else build_extractors(c)
        for modality, encoder in extractors.items():
            setattr(self, EXTRACTOR[modality], encoder)
        self.extractor_modalities = tuple(extractors)
        feature_dims = {m: e.hidden_size for m, e in extractors.items()}
        feature_dims.update({m: int(getattr(c, f"{EXTRACTOR[m]}_dim")) for m in modalities if c.reads_as_features(m)})
        self.heads = nn.ModuleDict(
            {m: mlp_head(feature_dims[m], c.head_hidden, c.head_dropout) for m in c.unimodal_heads}
        )
        self.fusion = None
        if fusion == "sf":
            fused_dim = sum(feature_dims[m] for m in modalities)
        elif fusion == "tfn":
            if c.tfn_dim is not None:
                self.fusion = nn.ModuleDict(
                    {m: nn.Sequential(nn.Linear(feature_dims[m], c.tfn_dim), nn.ReLU()) for m in modalities}
                )
            fused_dim = 1
            for m in modalities:
                fused_dim *= (c.tfn_dim if c.tfn_dim is not None else feature_dims[m]) + 1
            if c.tfn_dim is None and fused_dim > MAX_TFN_ENTRIES:
                raise ConfigError(
                    f"{_key('tfn_dim')}=null (the paper's parameter-free TFN) makes {fused_dim:,} entries per "
                    f"sample from global vectors of widths {[feature_dims[m] for m in modalities]}, more than "
                    f"{MAX_TFN_ENTRIES:,}: set {_key('tfn_dim')} (e.g. 32, a learned projection per modality)"
                )
        elif fusion == "mult":
            from msa_lightning.nn.mult import MULT_KEY, MulT

            dims = [feature_dims.get(m, 0) for m in LETTERS]
            self.fusion = MulT(
                dims,
                modalities="".join(MULT_KEY[EXTRACTOR[m]] for m in modalities),
                dim=c.mult_dim,
                num_heads=c.mult_heads,
                layers=c.mult_layers,
                positional_embedding=c.mult_positional_embedding,
                # off: the suite's earlier rule (each memory block its target's dropout, the text none)
                **({} if c.mult_reference_dropouts else {"memory_attn_dropout": "target", "text_dropout": 0.0}),
            )
            fused_dim = self.fusion.out_dim
        self.head_m = mlp_head(fused_dim, c.head_hidden, c.head_dropout) if fusion is not None else None

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
