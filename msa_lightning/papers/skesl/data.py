"""SKESL's DataModules: the masked-text feature-file DataModule, the unlabeled corpus folders, the streaming
shards."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from msa_lightning.batch import INPUT_FIELDS, MSABatch
from msa_lightning.corpus.format import VALID_SALT, read_manifest
from msa_lightning.corpus.sources import (
    AUDIO_SUFFIXES,
    VISUAL_SUFFIXES,
    collect_clips,
    fix_length,
    index_files,
    listing_fingerprint,
)
from msa_lightning.corpus.stream import ShardClips, SKESLStreamLoader
from msa_lightning.data.base import DataFacts, SuiteDataModule
from msa_lightning.data.datamodule import TEXT_ID_FIELDS, MSADataModule, resolve_inputs
from msa_lightning.data.reader import SplitArrays
from msa_lightning.data.sampling import id_draws
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.papers.skesl.masking import (
    LABEL_BOUND,
    MaskedText,
    check_fallback,
    fast_tokenizer,
    load_intensity_lexicon,
    mask_sentiment_words,
    masked_text_cached,
)
from msa_lightning.store import Store, content_hash

log = logging.getLogger(__name__)


class SKESLMaskedDataModule(MSADataModule):
    """A feature file read as an **unlabeled** pretraining set for ``SKESLPretrain``.

    Each split's ``raw_text`` is masked (:func:`mask_sentiment_words`, cached in the store) and
    tokenised with ``tokenizer``; batches carry the masked ids in ``text_ids``, an empty ``labels``
    dict (the file's sentiment labels are not read), and in ``batch.extras``

    * ``skesl_target`` ``[B, L]`` bool: the masked pieces,
    * ``skesl_label`` ``[B]`` float: the masked word's scaled intensity (0.0 for the random fallback).

    Any feature file of the suite works (MOSI-, MOSEI- or CH-SIMS-shaped; its splits are kept, so
    validation reports the pretraining loss on held-out clips). The masked words themselves are in
    :attr:`masked` (``masked[split].word``).

    Args:
        tokenizer: the model's tokenizer (name or path; it must be a fast tokenizer with a mask token).
        text_max_length: tokens per transcript (the authors' pretraining used 39).
        lexicon: ``vader`` or a VADER-format file (:func:`load_intensity_lexicon`).
        mask_seed: seed of the random fallback (drawn per clip id).
        random_fallback: ``per_epoch`` (one occurrence, drawn anew every training epoch: the released code)
            or ``fixed`` (every occurrence of one word drawn once per clip).
        recenter: a lexicon word beyond ``text_max_length`` moves the token window onto it (released code).
        Remaining keyword arguments: :class:`~msa_lightning.data.MSADataModule`.
    """

    token_extras = ("skesl_target",)  # one flag per token: cut with the text's padding (trim_text)

    def __init__(
        self,
        path: str,
        tokenizer: str = "bert-base-uncased",
        text_max_length: int = 50,
        lexicon: str = "vader",
        mask_seed: int = 0,
        random_fallback: Literal["per_epoch", "fixed"] = "per_epoch",
        recenter: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(path, tokenizer=tokenizer, text_max_length=text_max_length, **kwargs)
        self.lexicon, self.mask_seed = lexicon, int(mask_seed)
        self.random_fallback, self.recenter = check_fallback(random_fallback), bool(recenter)
        self.masked: dict[str, MaskedText] = {}
        self._epoch_masked: tuple[int, MaskedText] | None = None

    def transform_split(self, split: str, arrays: SplitArrays) -> SplitArrays:
        return dataclasses.replace(arrays, labels={})  # unlabeled: the pretraining labels come from masking

    def train_labels(self, key: str = "M") -> np.ndarray:
        raise DataError(f"{self.feature_file}: {type(self).__name__} serves unlabeled data (no labels {key!r})")

    def _masked(self, split: str, arrays: SplitArrays) -> MaskedText:
        if split not in self.masked:
            self.masked[split] = masked_text_cached(
                arrays.raw_text,
                self.tokenizer_name,
                self.text_max_length,
                self.lexicon,
                arrays.ids,
                self.mask_seed,
                self.cache_dir,
                where=f"{self.feature_file} split {split!r}",
                fallback=self.random_fallback,
                recenter=self.recenter,
            )
        return self.masked[split]

    def on_before_batch_transfer(self, batch: MSABatch, dataloader_idx: int) -> MSABatch:
        """Training batches of epoch e > 0 with the random fallback drawn for e (``per_epoch``); lexicon words
        and validation batches keep the masking of epoch 0."""
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        trainer = getattr(self, "trainer", None)
        if self.random_fallback != "per_epoch" or trainer is None or not trainer.training or not trainer.current_epoch:
            return batch
        epoch, train = int(trainer.current_epoch), self.splits["train"]
        if self._epoch_masked is None or self._epoch_masked[0] != epoch:  # the whole split once per epoch
            self._epoch_masked = (
                epoch,
                mask_sentiment_words(
                    train.raw_text,
                    self.tokenizer_name,
                    self.text_max_length,
                    self.lexicon,
                    train.ids,
                    self.mask_seed,
                    f"{self.feature_file} split 'train'",
                    self.random_fallback,
                    epoch,
                    self.recenter,
                ),
            )
        masked, rows = self._epoch_masked[1], batch.index.cpu().numpy()
        width = batch.text_ids.shape[1]
        batch.text_ids = torch.from_numpy(masked.ids[rows, 0, :width]).to(batch.text_ids)
        batch.extras["skesl_target"] = torch.from_numpy(masked.target[rows, :width])
        batch.extras["skesl_label"] = torch.from_numpy(masked.label[rows])
        return batch

    def _text_ids(self, split: str, arrays: SplitArrays) -> np.ndarray:
        return self._masked(split, arrays).ids

    def split_extras(self, split: str, arrays: SplitArrays) -> dict[str, np.ndarray]:
        masked = self._masked(split, arrays)
        return {"skesl_target": masked.target, "skesl_label": masked.label}


class SKESLCorpusDataModule(SKESLMaskedDataModule):
    """An unlabeled corpus on disk (transcripts TSV, audio files, OpenFace CSVs; :func:`collect_clips`) served
    as masked pretraining batches for ``SKESLPretrain``, exactly as
    :class:`~msa_lightning.papers.skesl.data.SKESLMaskedDataModule` serves a feature file (same batches,
    sampler, resume and DDP behaviour: only where the clips come from differs).

    ``prepare_data`` (rank 0 of each node) extracts every clip's features once, pads or cuts them to fixed
    lengths and writes them to the store (kind ``skesl_corpus``, keyed by the transcript file's content, the
    media files' names/sizes/times and every setting); the left-out clips, by id and reason, and the summary
    are in the entry's meta (:attr:`report`). Clips go to ``valid`` by a hash of their id (``valid_share``),
    so the split does not move when clips are added; there is no test split.

    Args:
        transcripts, audio, visual: the ``id<TAB>text`` file and the audio / OpenFace folders.
        audio_frames, vision_frames: the length policy (the authors: 400 and 55 frames).
        sample_rate, hop_length, f0: audio features (:func:`audio_features`; ``f0`` ``pyin`` = the paper).
        max_bad_share: the share of unusable clips above which the build fails.
        valid_share: share of clips held out for validation (by id hash).
        predict_split: the split `msa predict` serves (``valid``: a corpus has no test split).
        Remaining keyword arguments: :class:`~msa_lightning.papers.skesl.data.SKESLMaskedDataModule`
        (tokenizer, text_max_length, lexicon, mask_seed, batch_size, num_workers, cache_dir, ...).
    """

    def __init__(
        self,
        transcripts: str,
        audio: str,
        visual: str,
        audio_frames: int = 400,
        vision_frames: int = 55,
        sample_rate: int = 22050,
        hop_length: int = 512,
        f0: Literal["pyin", "zcr"] = "pyin",
        max_bad_share: float = 0.05,
        valid_share: float = 0.02,
        predict_split: str = "valid",
        **kwargs,
    ) -> None:
        kwargs["predict_split"] = predict_split  # a corpus has no test split (an explicit default for the CLI)
        kwargs.setdefault("text_max_length", 39)
        super().__init__(str(transcripts), **kwargs)
        if f0 not in ("pyin", "zcr"):
            raise ConfigError(f"data.init_args.f0: expected 'pyin' or 'zcr', found {f0!r}")
        if not 0 < valid_share < 1:
            raise ConfigError(f"data.init_args.valid_share: expected a share in (0, 1), found {valid_share!r}")
        self.transcripts, self.audio_root, self.visual_root = Path(transcripts), Path(audio), Path(visual)
        self.audio_frames, self.vision_frames = int(audio_frames), int(vision_frames)
        self.sample_rate, self.hop_length, self.f0 = int(sample_rate), int(hop_length), f0
        self.max_bad_share, self.valid_share = float(max_bad_share), float(valid_share)
        self.report: dict = {}

    @property
    def feature_file(self) -> Path:
        return self.transcripts

    def _entry(self):
        from msa_lightning.data.transcripts import read_transcripts

        store = Store(self.cache_dir)
        if not self.transcripts.is_file():
            raise DataError(f"{self.transcripts}: transcript file not found (data.init_args.transcripts)")
        audio, visual = index_files(self.audio_root, AUDIO_SUFFIXES), index_files(self.visual_root, VISUAL_SUFFIXES)
        inputs = {
            "transcripts": content_hash(self.transcripts, store.root),
            "audio": listing_fingerprint(audio),
            "visual": listing_fingerprint(visual),
            "audio_frames": self.audio_frames,
            "vision_frames": self.vision_frames,
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "f0": self.f0,
            "max_bad_share": self.max_bad_share,
        }

        def build():
            read_transcripts(self.transcripts)  # a malformed file fails here, before any media is read
            clips, report = collect_clips(
                self.transcripts,
                self.audio_root,
                self.visual_root,
                self.sample_rate,
                self.hop_length,
                self.f0,
                self.max_bad_share,
            )
            if not clips:
                raise DataError(f"{self.transcripts}: no usable clip ({report.summary()})")
            a = [fix_length(c.audio, self.audio_frames) for c in clips]
            v = [fix_length(c.vision, self.vision_frames) for c in clips]
            arrays = {
                "audio": np.stack([x for x, _ in a]),
                "audio_lengths": np.array([n for _, n in a]),
                "vision": np.stack([x for x, _ in v]),
                "vision_lengths": np.array([n for _, n in v]),
                "ids": np.array([c.id for c in clips], dtype=str),
                "texts": np.array([c.text for c in clips], dtype=str),
            }
            meta = {
                "summary": report.summary(),
                "total": report.total,
                "bad": {k: list(v) for k, v in report.bad.items()},
                "counts": report.counts(),
            }
            return arrays, meta

        return store.get_or_build("skesl_corpus", inputs, build)

    def prepare_data(self) -> None:
        self._entry()

    def _load(self) -> None:
        if self.splits:
            return
        entry = self._entry()
        self.report = {k: entry.meta[k] for k in ("summary", "total", "bad", "counts")}
        ids, texts = entry["ids"].tolist(), entry["texts"].tolist()
        held_out = id_draws(ids, VALID_SALT) < self.valid_share  # a hash of the salt and id: stable as clips come
        for split, rows in (("train", np.flatnonzero(~held_out)), ("valid", np.flatnonzero(held_out))):
            if len(rows) == 0:
                raise DataError(
                    f"{self.transcripts}: split {split!r} is empty ({len(ids)} usable clips, "
                    f"valid_share={self.valid_share:g})"
                )
            self.splits[split] = SplitArrays(
                ids=[ids[i] for i in rows],
                raw_text=[texts[i] for i in rows],
                text_bert=None,
                audio=entry["audio"][rows],
                vision=entry["vision"][rows],
                audio_lengths=entry["audio_lengths"][rows],
                vision_lengths=entry["vision_lengths"][rows],
                labels={},
            )


# ---------------------------------------------------------------------------------------------- data module
class SKESLStreamDataModule(SuiteDataModule):
    """SKESL pretraining data from the shards ``msa pretrain-data build`` writes (module docstring).

    Args:
        path: the build's ``--out`` folder (``manifest.json``, ``train/``, ``valid/``), on a shared
            filesystem or copied to the same path on every node.
        tokenizer: the model's tokenizer (name or path; a fast tokenizer with a mask token).
        text_max_length: tokens per transcript (the authors' pretraining used 39).
        lexicon: ``vader`` or a VADER-format file.
        mask_seed: seed of the random-word fallback (drawn per clip id).
        random_fallback, recenter: as :class:`SKESLMaskedDataModule` (``per_epoch``: training batches draw the
            fallback word of their epoch; validation batches that of epoch 0).
        batch_size: training clips per batch (per rank); ``eval_batch_size`` for validation.
        num_workers: loader worker processes per rank (they read and pad clips; batches are masked in
            the main process).
        shuffle: draw the chunk order and the order inside each chunk anew every epoch from
            ``(shuffle_seed, epoch)``; False keeps the shards' order.
        shuffle_seed: None = the global seed of ``seed_everything`` (``PL_GLOBAL_SEED``), else 0.
        trim_text: cut each batch's trailing token padding (exact, as the feature-file DataModules do).
        inputs: batch fields to load (None: what the model declares in ``required_inputs``).
    """

    token_extras = ("skesl_target",)

    def __init__(
        self,
        path: str,
        tokenizer: str = "bert-base-uncased",
        text_max_length: int = 39,
        lexicon: str = "vader",
        mask_seed: int = 0,
        random_fallback: Literal["per_epoch", "fixed"] = "per_epoch",
        recenter: bool = True,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        shuffle_seed: int | None = None,
        trim_text: bool = True,
        inputs: list[str] | None = None,
    ) -> None:
        super().__init__()
        for key, value, low in (
            ("batch_size", batch_size, 2),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
            ("text_max_length", text_max_length, 3),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(
                    f"data.init_args.{key}: expected an integer >= {low}, found {value!r}"
                    + (" (a training batch of one clip is not formed)" if key == "batch_size" else "")
                )
        if inputs is not None and set(inputs) - set(INPUT_FIELDS):
            raise ConfigError(f"data.init_args.inputs: unknown fields {sorted(set(inputs) - set(INPUT_FIELDS))}")
        self.path = Path(path).expanduser()
        self.tokenizer_name, self.text_max_length = tokenizer, text_max_length
        self.lexicon, self.mask_seed = lexicon, int(mask_seed)
        self.random_fallback, self.recenter = check_fallback(random_fallback), bool(recenter)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.shuffle, self.shuffle_seed = num_workers, bool(shuffle), shuffle_seed
        self.trim_text = bool(trim_text)
        self.inputs = set(inputs) if inputs is not None else None
        self._manifest: dict | None = None
        self._tokenizer = None

    # ------------------------------------------------------------------ facts
    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = read_manifest(self.path)
        return self._manifest

    @property
    def feature_file(self) -> Path:  # how error messages name the data
        return self.path

    metric_family = "mosi"

    def data_facts(self) -> DataFacts:
        """Feature sizes from the manifest; the masked words' intensities are bounded by 3 (Section 4.3)."""
        m = self.manifest
        return DataFacts(
            audio_dim=int(m["audio_dim"]),
            vision_dim=int(m["vision_dim"]),
            label_bound=LABEL_BOUND,
            metric_family=self.metric_family,
            num_train_samples=int(m["splits"]["train"]),
        )

    def describe(self) -> str:
        return f"{type(self).__name__} (shards in {self.path})"

    def num_train_samples(self) -> int:
        return int(self.manifest["splits"]["train"])

    def train_labels(self, key: str = "M") -> np.ndarray:
        raise DataError(f"{self.path}: {type(self).__name__} serves unlabeled clips (no labels {key!r})")

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        read_manifest(self.path)

    def setup(self, stage: str | None = None) -> None:
        self.manifest  # noqa: B018  (validates before any loader is built)
        self._loaded_inputs = resolve_inputs(self, self.inputs)

    def _fields(self) -> set[str] | None:
        return getattr(self, "_loaded_inputs", None)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = fast_tokenizer(self.tokenizer_name)
            load_intensity_lexicon(self.lexicon)  # a bad lexicon fails before the first batch
        return self._tokenizer

    # ------------------------------------------------------------------ batches
    def collate(self, clips: Sequence[dict], split: str = "train") -> MSABatch:
        """Clips (padded by the loader workers) -> one masked batch, as SKESLMaskedDataModule's."""
        fields = self._fields()
        ids = [c["id"] for c in clips]
        texts = [c["text"] for c in clips]
        trainer = getattr(self, "trainer", None)
        epoch = int(trainer.current_epoch) if split == "train" and trainer is not None else 0
        masked = mask_sentiment_words(
            texts,
            self.tokenizer,
            self.text_max_length,
            self.lexicon,
            ids,
            self.mask_seed,
            f"{self.path / split}",
            self.random_fallback,
            epoch,
            self.recenter,
        )
        text = torch.from_numpy(masked.ids)
        target = torch.from_numpy(masked.target)
        if self.trim_text:  # the longest text of the batch decides the width (exact: padding is never attended)
            width = int(text[:, 1].sum(1).max())
            text, target = text[..., :width], target[:, :width]
        batch = MSABatch(
            index=torch.tensor([c["row"] for c in clips], dtype=torch.long),
            ids=ids,
            raw_text=texts,
            labels={},
            extras={"skesl_target": target, "skesl_label": torch.from_numpy(masked.label)},
        )
        if fields is None or set(TEXT_ID_FIELDS) & fields:
            batch.text_ids, batch.text_mask, batch.text_segment = text[:, 0], text[:, 1], text[:, 2]
        for key in ("audio", "vision"):
            if fields is None or key in fields or f"{key}_lengths" in fields:
                setattr(batch, key, torch.from_numpy(np.stack([c[key] for c in clips])))
                setattr(batch, f"{key}_lengths", torch.tensor([c[f"{key}_length"] for c in clips], dtype=torch.long))
        return batch

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, train: bool) -> SKESLStreamLoader:
        m = self.manifest
        world, rank = self._world()
        total = int(m["splits"][split])
        if train and total < world:
            raise DataError(f"{self.path / split}: {total} clips, fewer than the {world} DDP processes")
        if total == 0:
            raise DataError(
                f"{self.path / split}: the split has no clips (build the shards with a valid share > 0 to validate)"
            )
        clips = ShardClips(
            str(self.path / split), m["audio_frames"], m["vision_frames"], m["audio_dim"], m["vision_dim"]
        )
        size = self.batch_size if train else self.eval_batch_size
        loader = SKESLStreamLoader(
            clips,
            size,
            lambda group: self.collate(group, split),
            equal_batches=train,
            num_workers=self.num_workers,
            pin_memory=self._pin_memory(),
            shuffle=self.shuffle and train,
            seed=self.train_seed,
            world_size=world,
            rank=rank,
        )
        if train:
            # the loader counts its epochs from here (it draws epoch e's order at its e-th iteration): a loader
            # built anew for a later epoch (reload_dataloaders_every_n_epochs) continues the count
            loader.current_epoch = int(getattr(getattr(self, "trainer", None), "current_epoch", 0) or 0)
        if train and rank == 0:
            shares = loader.shares()
            log.info(
                "%s: %d training clips over %d rank(s) (%s per rank), %d batches of up to %d per rank and "
                "epoch; none dropped or repeated",
                self.path / split,
                total,
                world,
                "/".join(map(str, sorted(set(shares)))),
                len(loader),
                size,
            )
        return loader

    def train_dataloader(self) -> SKESLStreamLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> SKESLStreamLoader:
        return self._loader("valid", train=False)

    def predict_dataloader(self) -> SKESLStreamLoader:
        """The held-out clips in shard order (``msa predict``: predicted and lexicon intensity per clip)."""
        return self._loader("valid", train=False)
