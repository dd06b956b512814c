"""LightningDataModules for CMU-MOSI, CMU-MOSEI, CH-SIMS and CH-SIMS v2 on one shared base.

``prepare_data`` (rank 0 of each node) validates the pickle and converts it into the memory-mapped
cache; ``setup`` (every rank) opens the cache, so no process holds a private copy of the features.

Subclasses change what a split contains through two hooks:

* :meth:`MSADataModule.transform_split` gets each split's :class:`SplitArrays` right after loading
  and returns a (possibly modified) one, e.g. with ``raw_text`` replaced by ASR transcripts;
* :meth:`MSADataModule.split_extras` returns per-sample arrays ``[N, ...]`` that arrive in
  ``batch.extras`` (e.g. precomputed positions).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
import numpy as np
from torch.utils.data import DataLoader

from msa_lightning.batch import MODALITIES
from msa_lightning.data.cache import DEFAULT_CACHE_DIR, atomic_write, ensure_cache, load_cached
from msa_lightning.data.dataset import FeatureNormalizer, MSADataset, collate_batch
from msa_lightning.data.reader import FeatureFileError, SplitArrays, read_feature_file
from msa_lightning.data.specs import ALIGNED_FILE, SPLITS, get_spec

log = logging.getLogger(__name__)


class MSADataModule(L.LightningDataModule):
    """Args:
        path: a feature pickle, or a folder holding the dataset's standard file names
            (``unaligned_50.pkl``/``aligned_50.pkl``; ``unaligned_39.pkl`` for CH-SIMS).
        dataset: ``mosi``, ``mosei``, ``sims`` or ``simsv2`` (shapes, label range, metric family).
        aligned: with a folder ``path``, pick the word-aligned file instead of the unaligned one.
        batch_size: training batch size; ``eval_batch_size`` for validation/test/predict
            (defaults to ``batch_size``).
        num_workers: DataLoader worker processes (they share the memory-mapped cache).
        modalities: the subset of ``text``, ``audio``, ``vision`` to load; a left-out modality
            arrives as one zero frame per sample.
        normalize: standardise each acoustic/visual feature with mean/std fitted on train.
        tokenizer: re-tokenise ``raw_text`` with this Hugging Face tokenizer (name or path) instead
            of using the stored BERT ids, e.g. for XLNet; results are cached on disk.
        text_max_length: token length when re-tokenising.
        use_cache: read through the memory-mapped cache (recommended); False unpickles directly.
        cache_dir: where caches go (default ``$MSA_CACHE_DIR`` or ``~/.cache/msa_lightning``).
    """

    def __init__(self, path: str, dataset: str = "mosi", aligned: bool = False, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0,
                 modalities: list[str] = list(MODALITIES), normalize: bool = False,
                 tokenizer: str | None = None, text_max_length: int = 50, use_cache: bool = True,
                 cache_dir: str | None = None) -> None:
        super().__init__()
        self.spec = get_spec(dataset)
        self.path, self.aligned = path, aligned
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.modalities, self.normalize = num_workers, tuple(modalities), normalize
        self.tokenizer_name, self.text_max_length = tokenizer, text_max_length
        self.use_cache, self.cache_dir = use_cache, Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
        self.datasets: dict[str, MSADataset] = {}
        self.splits: dict[str, SplitArrays] = {}
        self.normalizer: FeatureNormalizer | None = None

    # ------------------------------------------------------------------ facts models read
    @property
    def metric_family(self) -> str:
        return self.spec.family

    @property
    def feature_file(self) -> Path:
        p = Path(self.path).expanduser()
        if p.is_dir():
            p = p / (ALIGNED_FILE if self.aligned else self.spec.unaligned_file)
        if not p.is_file():
            raise FeatureFileError(f"{p}: feature file not found (data.path={self.path!r}, dataset={self.spec.name!r})")
        return p

    def num_train_samples(self) -> int:
        self._load()
        return len(self.splits["train"])

    # ------------------------------------------------------------------ hooks
    def transform_split(self, split: str, arrays: SplitArrays) -> SplitArrays:
        return arrays

    def split_extras(self, split: str, arrays: SplitArrays) -> dict[str, np.ndarray]:
        return {}

    # ------------------------------------------------------------------ loading
    def prepare_data(self) -> None:
        if self.use_cache:
            ensure_cache(self.feature_file, self.spec, self.cache_dir)

    def _load(self) -> None:
        if self.splits:
            return
        if self.use_cache:
            raw = load_cached(ensure_cache(self.feature_file, self.spec, self.cache_dir))
        else:
            raw = read_feature_file(self.feature_file, self.spec)
        for split in SPLITS:
            arrays = self.transform_split(split, raw[split])
            for key, count in arrays.nonfinite.items():
                log.warning("%s/%s: %d non-finite values in %r were replaced by 0", self.spec.name, split, count, key)
            self.splits[split] = arrays

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load()
        if self.normalize:
            self.normalizer = FeatureNormalizer.fit(self.splits["train"])
        for split, arrays in self.splits.items():
            self.datasets[split] = MSADataset(
                arrays, self._text_ids(split, arrays), self.modalities, self.normalizer,
                self.split_extras(split, arrays), trim=not self.aligned_file,
            )

    @property
    def aligned_file(self) -> bool:
        """Word-aligned files: all modalities share the text length (no trimming of frames)."""
        train = self.splits["train"]
        return bool((train.audio_lengths == train.audio.shape[1]).all()
                    and train.audio.shape[1] == train.vision.shape[1])

    def _text_ids(self, split: str, arrays: SplitArrays) -> np.ndarray:
        if self.tokenizer_name is None:
            if arrays.text_bert is None:
                raise FeatureFileError(f"{self.feature_file}: split {split!r} has no 'text_bert'; "
                                       "set data.tokenizer to re-tokenise 'raw_text'")
            return arrays.text_bert
        return tokenize_cached(arrays.raw_text, self.tokenizer_name, self.text_max_length, self.cache_dir)

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset, sampler = self.datasets[split], None
        trainer = self.trainer
        if not train and trainer is not None and trainer.world_size > 1:
            # Lightning's default DistributedSampler repeats samples so that ranks get equal shares,
            # which would count them twice in validation/test metrics: split them without repeats.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                                   rank=trainer.global_rank, shuffle=False)
        return DataLoader(
            dataset, batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train, sampler=sampler, num_workers=self.num_workers, collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def tokenize_cached(texts: list[str], tokenizer: str, max_length: int, cache_dir: Path) -> np.ndarray:
    """``[N, 3, max_length]`` ids/mask/segments of ``texts``; cached by tokenizer, length and texts."""
    key = hashlib.sha256("\x00".join([tokenizer, str(max_length), *texts]).encode()).hexdigest()[:20]
    file = Path(cache_dir) / "tokens" / f"{key}.npy"
    if file.is_file():
        return np.load(file)
    from msa_lightning.nn.pretrained import load_tokenizer

    tok = load_tokenizer(tokenizer)
    enc = tok(list(texts), max_length=max_length, padding="max_length", truncation=True,
              return_token_type_ids=True, return_tensors="np")
    out = np.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], axis=1).astype(np.int64)
    atomic_write(file, lambda tmp: np.save(tmp, out))  # DDP ranks may tokenise at once
    return out


class MOSIDataModule(MSADataModule):
    """CMU-MOSI (audio 5-d COVAREP, vision 20-d Facet; 1,284/229/686; labels in [-3, 3])."""

    def __init__(self, path: str = "data/MOSI", **kwargs) -> None:
        kwargs.setdefault("dataset", "mosi")
        super().__init__(path, **kwargs)


class MOSEIDataModule(MSADataModule):
    """CMU-MOSEI (audio 74-d, vision 35-d; 16,326/1,871/4,659; labels in [-3, 3])."""

    def __init__(self, path: str = "data/MOSEI", **kwargs) -> None:
        kwargs.setdefault("dataset", "mosei")
        super().__init__(path, **kwargs)


class SIMSDataModule(MSADataModule):
    """CH-SIMS (``version=1``: audio 33-d, vision 709-d) or CH-SIMS v2 (``version=2``: 25-d, 177-d);
    labels in [-1, 1] with unimodal labels T/A/V."""

    def __init__(self, path: str = "data/SIMS", version: int = 1, **kwargs) -> None:
        if version not in (1, 2):
            raise ValueError(f"CH-SIMS version must be 1 or 2, got {version}")
        kwargs["dataset"] = "sims" if version == 1 else "simsv2"
        super().__init__(path, **kwargs)
