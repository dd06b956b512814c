"""K folds of a training split, grouped by video, for out-of-fold (stacked) features.

Every clip of one video goes to the same fold: the clips of a video share its speaker, scene and recording, so a
model trained on the other folds must not have seen that video's other clips (otherwise its "held-out" outputs
would still be in-sample for the speaker). The video of an utterance id is the part before its last ``_`` (the
suite's normalised ``{video}_{clip}``, written ``{video}$_${clip}`` in the feature files of the field: MOSI, MOSEI
and CH-SIMS clip ids are numbers, while video ids may themselves hold ``_``, as MOSI's ``5W7Z1C_fDaE``).

The assignment depends only on the ids, ``folds`` and ``seed``: the videos are shuffled by the seed, then
placed, largest first, each into the fold with the fewest clips so far (folds of near-equal size).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from msa_lightning.data.reader import SplitArrays
from msa_lightning.errors import DataError

#: the split of a fold run that holds its fold's training clips (the rows it exports)
HELDOUT = "heldout"


def video_of(utterance_id: str) -> str:
    """The video an utterance id belongs to: its part before the last ``_`` (the whole id when it has none)."""
    return str(utterance_id).rsplit("_", 1)[0]


def fold_assignment(ids: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    """The fold (``0 .. folds-1``) of each id, clips of one video in one fold; deterministic in (ids, folds,
    seed). Fewer videos than folds is one DataError (a fold would be empty)."""
    videos = [video_of(i) for i in ids]
    names, group, sizes = np.unique(np.asarray(videos, dtype=object), return_inverse=True, return_counts=True)
    if len(names) < folds:
        raise DataError(
            f"{folds} folds need at least {folds} videos, but the training split has {len(names)} "
            f"({len(ids)} clips; the clips of a video share a fold)"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest videos first, ties in the seeded order
    fold_of_video = np.empty(len(names), dtype=np.int64)
    filled = np.zeros(folds, dtype=np.int64)
    for video in order:  # one step per video, not per clip
        k = int(np.argmin(filled))
        fold_of_video[video] = k
        filled[k] += sizes[video]
    return fold_of_video[group]


def take_rows(arrays: SplitArrays, rows: np.ndarray) -> SplitArrays:
    """The split's samples ``rows`` (in that order), every per-sample array and list alike."""
    rows = np.asarray(rows, dtype=np.int64)

    def take(value):
        return None if value is None else np.asarray(value[rows])

    return dataclasses.replace(
        arrays,
        ids=[arrays.ids[r] for r in rows],
        raw_text=[arrays.raw_text[r] for r in rows] if arrays.raw_text is not None else arrays.raw_text,
        text_bert=take(arrays.text_bert),
        audio=take(arrays.audio),
        vision=take(arrays.vision),
        audio_lengths=take(arrays.audio_lengths),
        vision_lengths=take(arrays.vision_lengths),
        labels={k: take(v) for k, v in arrays.labels.items()},
        text=take(arrays.text),
    )


def split_off_fold(train: SplitArrays, fold: int, folds: int, seed: int = 0) -> tuple[SplitArrays, SplitArrays]:
    """``(the other folds, fold `fold`)`` of a training split (:func:`fold_assignment`), rows in file order."""
    assigned = fold_assignment(train.ids, folds, seed)
    return take_rows(train, np.flatnonzero(assigned != fold)), take_rows(train, np.flatnonzero(assigned == fold))
