"""A torch ``Dataset`` over one validated split, producing :class:`~msa_lightning.batch.MSABatch`.

Batches are gathered with one fancy-indexing read per array (``__getitems__``, which the torch
``DataLoader`` calls with a whole batch of indices), not sample by sample: from a memory-mapped
cache this is one contiguous-ish read per array and no Python loop over samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from msa_lightning.batch import MODALITIES, MSABatch
from msa_lightning.data.reader import SplitArrays

#: extras holding a token index per sample (SWRM's detected sentiment position): never cut off
POSITION_EXTRAS = ("swrm_position",)


class FeatureNormalizer:
    """Per-feature mean/std of the acoustic and visual frames, fitted on the training split over
    valid (unpadded) frames only, applied to every split."""

    def __init__(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.stats = stats

    @classmethod
    def fit(cls, train: SplitArrays, chunk: int = 512) -> "FeatureNormalizer":
        stats = {}
        for key in ("audio", "vision"):
            seq, lengths = getattr(train, key), getattr(train, f"{key}_lengths")
            total = np.zeros(seq.shape[2]), np.zeros(seq.shape[2]), 0
            s, ss, count = total
            for start in range(0, len(seq), chunk):  # chunked: the split may be memory-mapped
                x = np.asarray(seq[start : start + chunk], dtype=np.float64)
                valid = np.arange(x.shape[1])[None, :] < lengths[start : start + chunk, None]
                frames = x[valid]
                s, ss, count = s + frames.sum(0), ss + (frames**2).sum(0), count + len(frames)
            mean = s / max(count, 1)
            std = np.sqrt(np.maximum(ss / max(count, 1) - mean**2, 0.0))
            stats[key] = (mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32))
        return cls(stats)

    def __call__(self, key: str, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        mean, std = self.stats[key]
        valid = np.arange(x.shape[1])[None, :, None] < lengths[:, None, None]
        return np.where(valid, (x - mean) / std, 0.0).astype(np.float32)


class MSADataset(Dataset):
    """One split. ``text`` is the ``[N, 3, L]`` id/mask/segment array to use (from ``text_bert`` or
    re-tokenised ``raw_text``; None when no text field is loaded). Modalities not in ``modalities``
    are replaced by a single zero frame (length 1), so models see the same batch structure in
    modality ablations without the cost of reading the features.

    ``inputs``: the batch fields to read (see :data:`~msa_lightning.batch.INPUT_FIELDS`), or None for
    everything the split has; a field not read arrives as None. ``labels`` may be empty (unlabeled).

    ``trim_text``: cut each batch's token columns after the last one any sample attends to (see
    :func:`text_width`); the model sees the same tokens, so its outputs are the same. The extras named in
    ``token_extras`` (``[N, L, ...]``, one entry per token) are cut with the text; a stored token position
    (:data:`POSITION_EXTRAS`) is always kept inside the width. Not done when the batch carries
    ``text_feats``, whose length pairs with the mask.
    """

    def __init__(
        self,
        arrays: SplitArrays,
        text: np.ndarray | None,
        modalities: tuple[str, ...] = MODALITIES,
        normalizer: FeatureNormalizer | None = None,
        extras: dict[str, np.ndarray] | None = None,
        trim: bool = True,
        inputs: set[str] | None = None,
        trim_text: bool = False,
        token_extras: tuple[str, ...] = (),
    ) -> None:
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}")
        self.arrays, self.text, self.modalities = arrays, text, tuple(modalities)
        self.normalizer, self.extras, self.trim = normalizer, dict(extras or {}), trim
        self.trim_text, self.token_extras = trim_text, tuple(token_extras)
        self.inputs = None if inputs is None else set(inputs)
        n = len(arrays)
        for name, arr in self.extras.items():
            if len(arr) != n:
                raise ValueError(f"extra array {name!r} has {len(arr)} rows, the split has {n} samples")
        if self.wants("text_ids", "text_mask", "text_segment"):
            if text is None:
                raise ValueError("text ids are requested but no text array was given")
            if len(text) != n:
                raise ValueError(f"text array has {len(text)} rows, the split has {n} samples")

    def wants(self, *names: str) -> bool:
        """Whether any of the batch fields ``names`` is loaded."""
        return self.inputs is None or any(name in self.inputs for name in names)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i) -> MSABatch:
        """One sample, or a whole batch when ``i`` is a list of rows (samplers that yield batches)."""
        if isinstance(i, (list, tuple, np.ndarray, torch.Tensor)):
            return self.__getitems__([int(j) for j in i])
        return self.__getitems__([i])

    def _sequence(self, key: str, idx: np.ndarray, take) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.wants(key, f"{key}_lengths"):
            return None, None
        seq = getattr(self.arrays, key)
        if key not in self.modalities:
            return torch.zeros(len(idx), 1, seq.shape[2]), torch.ones(len(idx), dtype=torch.long)
        lengths = np.asarray(getattr(self.arrays, f"{key}_lengths")[idx])
        x = take(seq)
        if self.trim:  # unaligned files pad to a fixed length; keep only what this batch uses
            x = x[:, : max(int(lengths.max()), 1)]
        if self.normalizer is not None:
            x = self.normalizer(key, x, lengths)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(lengths.astype(np.int64))

    def __getitems__(self, indices: list[int]) -> MSABatch:
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # sorted reads are faster on memory maps
        sorted_idx = idx[order]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))

        def take(arr: np.ndarray) -> np.ndarray:
            return np.asarray(arr[sorted_idx])[inverse]

        text = None
        extras = {k: np.asarray(v[idx]) for k, v in self.extras.items()}
        if self.wants("text_ids", "text_mask", "text_segment"):
            text = take(self.text)
            if self.trim_text and not (self.arrays.text is not None and self.wants("text_feats")):
                positions = [extras[k] for k in POSITION_EXTRAS if k in extras]
                width = text_width(text[:, 1], np.concatenate(positions) if positions else None)
                text = text[:, :, :width]
                extras.update({k: extras[k][:, :width] for k in self.token_extras if k in extras})
            text = torch.from_numpy(text.astype(np.int64))
        audio, audio_len = self._sequence("audio", idx, take)
        vision, vision_len = self._sequence("vision", idx, take)
        text_feats = None
        if self.arrays.text is not None and self.wants("text_feats"):
            text_feats = torch.from_numpy(take(self.arrays.text).astype(np.float32))

        def field(name: str, t: torch.Tensor | None) -> torch.Tensor | None:
            return t if self.inputs is None or name in self.inputs else None

        return MSABatch(
            text_ids=None if text is None else field("text_ids", text[:, 0]),
            text_mask=None if text is None else field("text_mask", text[:, 1]),
            text_segment=None if text is None else field("text_segment", text[:, 2]),
            audio=field("audio", audio),
            audio_lengths=field("audio_lengths", audio_len),
            vision=field("vision", vision),
            vision_lengths=field("vision_lengths", vision_len),
            labels={k: torch.from_numpy(np.asarray(v[idx], dtype=np.float32)) for k, v in self.arrays.labels.items()},
            index=torch.from_numpy(idx),
            ids=[self.arrays.ids[i] for i in idx],
            raw_text=[self.arrays.raw_text[i] for i in idx],
            text_feats=text_feats,
            extras={k: torch.from_numpy(v) for k, v in extras.items()},
        )


def text_width(mask: np.ndarray, positions: np.ndarray | None = None) -> int:
    """Token columns a batch needs: up to the last column any sample attends to (``mask [B, L]``), and past
    every stored token position (SWRM's ``swrm_position``), at least 1. Only trailing all-padding columns go,
    so with right padding (BERT) each real token keeps its position and with left padding (XLNet) nothing
    is cut."""
    used = np.flatnonzero(mask.any(axis=0))
    width = int(used[-1]) + 1 if len(used) else 1
    if positions is not None and len(positions):
        width = max(width, int(positions.max()) + 1)
    return min(width, mask.shape[1])


def collate_batch(batch: MSABatch | list[MSABatch]) -> MSABatch:
    """``__getitems__`` already built the batch; a list only appears without automatic batching."""
    if isinstance(batch, MSABatch):
        return batch
    raise TypeError("MSADataset batches are built by __getitems__; use a DataLoader with batch_size set")
