"""The one batch contract shared by every model in the suite.

Every DataModule yields :class:`MSABatch`; every LightningModule consumes it. Lightning moves
dataclasses to the right device field by field, so models never call ``.to(device)``.

Shapes (``B`` batch, ``L`` text tokens, ``Ta``/``Tv`` frames, ``Da``/``Dv`` feature sizes):

============== ==================== =====================================================
field          shape / type         meaning
============== ==================== =====================================================
text_ids       long ``[B, L]``      token ids (BERT ids from ``text_bert`` or re-tokenised)
text_mask      long ``[B, L]``      attention mask, 1 = real token
text_segment   long ``[B, L]``      segment / token-type ids
text_feats     float ``[B, L, 768]`` precomputed text features (only if the file has them)
audio          float ``[B, Ta, Da]`` acoustic frames (zero padded)
audio_lengths  long ``[B]``         valid frames per sample (``Ta`` for aligned files)
vision         float ``[B, Tv, Dv]`` visual frames (zero padded)
vision_lengths long ``[B]``         valid frames per sample
labels         dict of float ``[B]`` ``M`` (multimodal) and, where the file has them,
                                    ``T``, ``A``, ``V``, ``AV``, ``AT``, ``VT``
ids            list[str]            utterance ids, normalised to ``{video}_{clip}``
index          long ``[B]``         row of the sample in its split (for per-sample state
                                    such as Self-MM's generated labels)
raw_text       list[str]            the transcript the text tensors came from
extras         dict of tensors      per-sample arrays a model variant adds (for example
                                    SWRM's detected sentiment position and candidates)
============== ==================== =====================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

MODALITIES = ("text", "audio", "vision")
#: Label keys a feature file may carry, and the suffix of their ``regression_labels_*`` key.
LABEL_KEYS = ("M", "T", "A", "V", "AV", "AT", "VT")


@dataclass
class MSABatch:
    text_ids: torch.Tensor
    text_mask: torch.Tensor
    text_segment: torch.Tensor
    audio: torch.Tensor
    audio_lengths: torch.Tensor
    vision: torch.Tensor
    vision_lengths: torch.Tensor
    labels: dict[str, torch.Tensor]
    index: torch.Tensor
    ids: list[str] = field(default_factory=list)
    raw_text: list[str] = field(default_factory=list)
    text_feats: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.text_ids.shape[0]

    def to(self, device: torch.device | str) -> "MSABatch":
        """A copy with every tensor (including those in ``labels``/``extras``) on ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device)
            elif isinstance(value, dict):
                moved[f.name] = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in value.items()}
        return replace(self, **moved)

    @property
    def text_bert(self) -> torch.Tensor:
        """The field's ``[B, 3, L]`` layout (ids, mask, segments), for ports of reference code."""
        return torch.stack([self.text_ids, self.text_mask, self.text_segment], dim=1)
