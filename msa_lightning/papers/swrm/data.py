"""MOSI with ASR transcripts (MOSI-Gold / -SpeechBrain / -IBM / -iFlytek; Wu et al., 2022, Section 4.1).

The variants keep MOSI's acoustic and visual features, labels and splits and replace the text by
one transcript source: the DataModule reads a MOSI feature file and an ``id<TAB>text`` transcript
file (see :mod:`msa_lightning.data.transcripts`), swaps ``raw_text`` (hook ``transform_split``) and
re-tokenises it. A ready-made feature file whose ``raw_text`` already holds the ASR text is read
with ``asr="file"``.

For SWRM it also runs the sentiment word position precompute
(:mod:`msa_lightning.papers.swrm.positions`) in ``prepare_data`` (rank 0; cached on disk) and
loads it in ``setup`` on every rank; ``batch.extras`` then carries ``swrm_position`` ``[B]``,
``swrm_gate`` ``[B]`` and ``swrm_candidates`` ``[B, k]`` (hook ``split_extras``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from msa_lightning.data.datamodule import MOSIDataModule
from msa_lightning.data.reader import SplitArrays
from msa_lightning.data.specs import SPLITS
from msa_lightning.data.transcripts import (
    MISSING_POLICIES,
    apply_transcripts,
    read_transcripts,
)
from msa_lightning.errors import ConfigError
from msa_lightning.papers.swrm.positions import (
    SentimentPositions,
    compute_sentiment_positions,
)

log = logging.getLogger(__name__)


class MOSIASRDataModule(MOSIDataModule):
    """MOSI with the text of one transcript source.

    Args:
        path: MOSI feature file or folder (as :class:`~msa_lightning.data.MOSIDataModule`).
        asr: name of the transcript source (``gold``, ``speechbrain``, ``ibm``, ``iflytek`` or any
            name); ``file`` keeps the feature file's own ``raw_text`` (a ready-made MOSI-ASR file).
        transcripts: the ``id<TAB>text`` file; default ``{folder of the feature file}/asr/{asr}.tsv``.
        missing: utterances the transcript file lacks: ``error`` (raise, listing them), ``gold``
            (keep the feature file's text) or ``empty`` (empty transcript). Missing ids are always
            logged and kept in :attr:`missing_ids`.
        max_missing_share: with ``gold``/``empty``, the largest share of a split's utterances that
            may lack a transcript (default 0.01); above it, loading fails. A file that matches no
            utterance at all always fails.
        tokenizer: the model's tokenizer; the text is always re-tokenised with it.
        positions: run/load SWRM's sentiment word position precompute (not needed by Self-MM).
        mlm: masked LM of the precompute (default: ``tokenizer``); it must share the tokenizer's
            vocabulary, since candidate ids index the model's embeddings.
        k, threshold: top-k candidates and the gate threshold (paper: 50 and 0.5).
        lexicon: ``vader`` or word-list files, comma-separated (see :mod:`msa_lightning.data.lexicon`).
        position_batch_size: masked copies per masked-LM forward pass; ``position_device``: where
            it runs (default CUDA when available); ``progress``: show a progress bar.
        Remaining keyword arguments: :class:`~msa_lightning.data.MSADataModule`.
    """

    def __init__(
        self,
        path: str = "data/MOSI",
        asr: str = "speechbrain",
        transcripts: str | None = None,
        missing: Literal["error", "gold", "empty"] = "error",
        max_missing_share: float = 0.01,
        tokenizer: str = "bert-base-uncased",
        positions: bool = True,
        mlm: str | None = None,
        k: int = 50,
        threshold: float = 0.5,
        lexicon: str = "vader",
        position_batch_size: int = 512,
        position_device: str | None = None,
        progress: bool = True,
        **kwargs,
    ) -> None:
        if not tokenizer:
            raise ConfigError(
                "data.init_args.tokenizer: MOSIASRDataModule re-tokenises the transcripts, "
                "so it needs a tokenizer (found none)"
            )
        if missing not in MISSING_POLICIES:
            raise ConfigError(f"data.init_args.missing: expected one of {list(MISSING_POLICIES)}, found {missing!r}")
        if not 0.0 <= max_missing_share <= 1.0:
            raise ConfigError(
                f"data.init_args.max_missing_share: expected a share in [0, 1], found {max_missing_share!r}"
            )
        super().__init__(path, tokenizer=tokenizer, **kwargs)
        self.asr, self.transcripts_path, self.missing = asr, transcripts, missing
        self.max_missing_share = max_missing_share
        self.positions, self.mlm, self.k, self.threshold, self.lexicon = positions, mlm, k, threshold, lexicon
        self.position_batch_size, self.position_device, self.progress = position_batch_size, position_device, progress
        self.missing_ids: dict[str, list[str]] = {}
        self._transcripts: dict[str, str] | None = None
        self._positions: dict[str, SentimentPositions] | None = None

    # ------------------------------------------------------------------ transcripts
    @property
    def transcript_file(self) -> Path | None:
        if self.asr == "file":
            return None
        if self.transcripts_path:
            return Path(self.transcripts_path).expanduser()
        return self.feature_file.parent / "asr" / f"{self.asr}.tsv"

    def transform_split(self, split: str, arrays: SplitArrays) -> SplitArrays:
        if self.asr == "file":
            return arrays
        if self._transcripts is None:
            self._transcripts = read_transcripts(self.transcript_file)
        texts, absent = apply_transcripts(
            arrays.ids,
            self._transcripts,
            arrays.raw_text,
            self.missing,
            where=f"{self.transcript_file} ({split} split of {self.feature_file})",
            max_missing_share=self.max_missing_share,
        )
        self.missing_ids[split] = absent
        return dataclasses.replace(arrays, raw_text=texts)

    # ------------------------------------------------------------------ sentiment positions
    def sentiment_positions(self) -> dict[str, SentimentPositions]:
        """``{split: SentimentPositions}`` for the current transcripts (computed once, cached on disk)."""
        if self._positions is None:
            self._load()
            texts = [t for split in SPLITS for t in self.splits[split].raw_text]
            result = compute_sentiment_positions(
                texts,
                self.tokenizer_name,
                self.mlm,
                k=self.k,
                threshold=self.threshold,
                lexicon=self.lexicon,
                max_length=self.text_max_length,
                cache_dir=self.cache_dir,
                source=f"mosi-{self.asr}",
                batch_size=self.position_batch_size,
                device=self.position_device,
                progress=self.progress,
            )
            self._positions, start = {}, 0
            for split in SPLITS:
                n = len(self.splits[split])
                self._positions[split] = SentimentPositions(
                    *(getattr(result, f.name)[start : start + n] for f in dataclasses.fields(result))
                )
                log.info(
                    "MOSI-%s %s: sentiment position gate p = 1 for %.1f%% of %d utterances",
                    self.asr,
                    split,
                    100 * float(self._positions[split].gate.mean()) if n else 0.0,
                    n,
                )
                start += n
        return self._positions

    def prepare_data(self) -> None:
        super().prepare_data()
        # rank 0 fills the disk caches (tokens, positions); setup() on every rank then only reads them
        self._load()
        for split in SPLITS:
            self._text_ids(split, self.splits[split])
        if self.positions:
            self.sentiment_positions()

    def split_extras(self, split: str, arrays: SplitArrays) -> dict[str, np.ndarray]:
        if not self.positions:
            return {}
        return self.sentiment_positions()[split].extras()
