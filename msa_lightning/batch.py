"""The one batch contract shared by every model in the suite.

Every DataModule yields :class:`MSABatch`; every LightningModule consumes it. Lightning moves
dataclasses to the right device field by field, so models never call ``.to(device)``.

Shapes (``B`` batch, ``L`` text tokens, ``Ta``/``Tv`` frames, ``Da``/``Dv`` feature sizes, ``S``
audio samples, ``T`` video frames). Every *input* field may be ``None`` when the DataModule was told
not to load it (``inputs``: only the fields the model declares in ``required_inputs`` are read);
``labels`` may be an empty dict (unlabeled data, e.g. for pretraining).

============== ======================= ==================================================
field          shape / type            meaning
============== ======================= ==================================================
text_ids       long ``[B, L]``         token ids (BERT ids from ``text_bert`` or re-tokenised)
text_mask      long ``[B, L]``         attention mask, 1 = real token
text_segment   long ``[B, L]``         segment / token-type ids
text_feats     float ``[B, L, 768]``   precomputed text features (only if the file has them
                                       and the model reads them)
audio          float ``[B, Ta, Da]``   acoustic frames (zero padded)
audio_lengths  long ``[B]``            valid frames per sample (``Ta`` for aligned files)
vision         float ``[B, Tv, Dv]``   visual frames (zero padded)
vision_lengths long ``[B]``            valid frames per sample
waveform       float ``[B, S]``        raw audio samples, mono, zero padded (raw-media data)
waveform_mask  bool ``[B, S]``         True = a real sample
frames         uint8 ``[B, T, C, H, W]`` raw video frames, zero padded (raw-media data)
frame_mask     bool ``[B, T]``         True = a real frame
labels         dict of float ``[B]``   ``M`` (multimodal) and, where the file has them,
                                       ``T``, ``A``, ``V``, ``AV``, ``AT``, ``VT``; empty for
                                       unlabeled data
ids            list[str]               utterance ids, normalised to ``{video}_{clip}``
index          long ``[B]``            row of the sample in its split (for per-sample state
                                       such as Self-MM's generated labels); ``len(batch)``
raw_text       list[str]               the transcript the text tensors came from
extras         dict of tensors         per-sample arrays a model variant adds (for example
                                       SWRM's detected sentiment position and candidates)
============== ======================= ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

MODALITIES = ("text", "audio", "vision")
#: Label keys a feature file may carry, and the suffix of their ``regression_labels_*`` key.
LABEL_KEYS = ("M", "T", "A", "V", "AV", "AT", "VT")


#: the input fields a DataModule can load (``MSADataModule(inputs=...)``, ``required_inputs`` of models)
INPUT_FIELDS = (
    "text_ids",
    "text_mask",
    "text_segment",
    "text_feats",
    "audio",
    "audio_lengths",
    "vision",
    "vision_lengths",
    "waveform",
    "waveform_mask",
    "frames",
    "frame_mask",
)


@dataclass
class MSABatch:
    index: torch.Tensor = None  # type: ignore[assignment]  # required: the rows of the split
    text_ids: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    text_segment: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    audio_lengths: torch.Tensor | None = None
    vision: torch.Tensor | None = None
    vision_lengths: torch.Tensor | None = None
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    raw_text: list[str] = field(default_factory=list)
    text_feats: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    waveform: torch.Tensor | None = None
    waveform_mask: torch.Tensor | None = None
    frames: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.index is None:
            raise TypeError("MSABatch needs `index` (the rows of the samples in their split)")

    def __len__(self) -> int:
        return self.index.shape[0]

    def _map(self, fn) -> "MSABatch":
        """A copy with ``fn`` applied to every tensor, including those in ``labels``/``extras``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = fn(value)
            elif isinstance(value, dict):
                moved[f.name] = {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in value.items()}
        return replace(self, **moved)

    def to(self, device: torch.device | str) -> "MSABatch":
        """A copy with every tensor (including those in ``labels``/``extras``) on ``device``."""
        return self._map(lambda t: t.to(device))

    def pin_memory(self) -> "MSABatch":
        """A copy in page-locked memory: a DataLoader with ``pin_memory=True`` calls this, so batches
        reach a GPU by asynchronous copies."""
        return self._map(lambda t: t.pin_memory())

    @property
    def text_bert(self) -> torch.Tensor:
        """The field's ``[B, 3, L]`` layout (ids, mask, segments), for ports of reference code."""
        if self.text_ids is None:
            raise ValueError("this batch has no text ids (the DataModule did not load text_ids)")
        return torch.stack([self.text_ids, self.text_mask, self.text_segment], dim=1)
