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
import numpy as np
from torch.utils.data import DataLoader

from msa_lightning.batch import INPUT_FIELDS, MODALITIES
from msa_lightning.data import cache as feature_cache
from msa_lightning.data.base import DataFacts, SuiteDataModule
from msa_lightning.data.cache import ensure_cache, load_cached
from msa_lightning.data.custom import CUSTOM, custom_spec, read_features_manifest
from msa_lightning.data.dataset import FeatureNormalizer, MSADataset, collate_batch
from msa_lightning.data.reader import FeatureFileError, SplitArrays, read_feature_file, warn_overlaps
from msa_lightning.data.sampling import EpochBatchSampler, ResumableDataLoader
from msa_lightning.data.specs import ALIGNED_FILE, SPLITS, get_spec
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.store import Store, local_fingerprint

log = logging.getLogger(__name__)

TEXT_ID_FIELDS = ("text_ids", "text_mask", "text_segment")


def resolve_inputs(datamodule: L.LightningDataModule, inputs: set[str] | None) -> set[str] | None:
    """The batch fields a DataModule loads: ``inputs`` if set (it must cover what the model reads), else
    the ``required_inputs`` of the model of an attached trainer, else None (everything)."""
    trainer = getattr(datamodule, "trainer", None)
    model = getattr(trainer, "lightning_module", None) if trainer is not None else None
    required = getattr(model, "required_inputs", None) if model is not None else None
    required = set(required) if required is not None else None
    if required is not None:
        check_inputs(model, datamodule)
    if inputs is None:
        return required
    if required is not None and not required <= inputs:
        raise ConfigError(
            f"data.init_args.inputs: the model reads {sorted(required - inputs)} too "
            f"(model required_inputs {sorted(required)}, data.init_args.inputs {sorted(inputs)})"
        )
    return inputs


#: where the batch fields come from, for the hint of :func:`check_inputs`
_SOURCES = (
    (
        {"waveform", "waveform_mask", "frames", "frame_mask"},
        "raw waveforms and frames come from RawMediaDataModule (raw clips)",
    ),
    (
        {"audio", "audio_lengths", "vision", "vision_lengths"},
        "acoustic/visual feature frames come from a feature-file DataModule (MOSIDataModule, MOSEIDataModule, "
        "SIMSDataModule, ...) or from ExtractedFeaturesDataModule (raw clips through frozen extractors)",
    ),
    (
        {"text_feats"},
        "text_feats come from a feature file with a 'text' array, TextFeaturesDataModule or "
        "ExtractedFeaturesDataModule",
    ),
)


def provided_inputs(datamodule) -> set[str] | None:
    """The batch fields ``datamodule`` can serve (its ``provided_inputs``); None when it does not say."""
    provided = getattr(datamodule, "provided_inputs", None)
    return set(provided) if provided is not None else None


def check_inputs(model, datamodule) -> None:
    """The one check that a model can run on a DataModule: every batch field the model reads (its
    ``required_inputs``) must be one the DataModule provides (its ``provided_inputs``). Otherwise one
    ConfigError names both classes, the missing fields and where such fields come from. A model or a
    DataModule that does not declare its fields is not checked."""
    required = getattr(model, "required_inputs", None)
    provided = provided_inputs(datamodule)
    if required is None or provided is None:
        return
    missing = set(required) - provided
    if not missing:
        return
    model_name, data_name = type(model).__name__, type(datamodule).__name__
    hints = [hint for fields, hint in _SOURCES if fields & missing]
    raise ConfigError(
        f"{model_name} cannot run on {data_name}: the model reads {sorted(missing)}, which "
        f"{data_name} does not provide (it provides {sorted(provided)})" + (f"; {'; '.join(hints)}" if hints else "")
    )


class MSADataModule(SuiteDataModule):
    """Args:
    path: a feature pickle, or a folder holding the dataset's standard file names
        (``unaligned_50.pkl``/``aligned_50.pkl``; ``unaligned_39.pkl`` for CH-SIMS).
    dataset: ``mosi``, ``mosei``, ``sims`` or ``simsv2`` (shapes, label range, metric family), or ``custom``: a
        file of ``msa features extract``, whose manifest gives the label range and metric family.
    aligned: with a folder ``path``, pick the word-aligned file instead of the unaligned one.
    batch_size: training batch size; ``eval_batch_size`` for validation/test/predict
        (defaults to ``batch_size``). A training batch never holds a single sample (a trailing
        one joins the previous batch).
    num_workers: DataLoader worker processes (they share the memory-mapped cache).
    modalities: the subset of ``text``, ``audio``, ``vision`` to load; a left-out modality
        arrives as one zero frame per sample.
    normalize: standardise each acoustic/visual feature with mean/std fitted on train.
    tokenizer: re-tokenise ``raw_text`` with this Hugging Face tokenizer (name or path) instead
        of using the stored BERT ids, e.g. for XLNet; results are cached on disk.
    text_max_length: token length when re-tokenising.
    use_cache: read through the memory-mapped cache (recommended); False unpickles directly.
    cache_dir: where caches go (default ``$MSA_CACHE_DIR`` or ``~/.cache/msa_lightning``).
    inputs: the batch fields to load (see :data:`msa_lightning.batch.INPUT_FIELDS`); None = the
        fields the model declares (``required_inputs``) when a trainer with such a model is
        attached at ``setup``, else everything the file has. Fields not loaded arrive as None.
    predict_split: the split ``predict_dataloader`` serves (``train``, ``valid`` or ``test``).
    shuffle_seed: seed of the training order (which depends only on this seed and the epoch);
        None = the global seed of ``seed_everything`` (``PL_GLOBAL_SEED``), else 0.
    trim_text: cut each batch's trailing token padding (every column no sample attends to), so
        the text encoder runs on the batch's longest text instead of ``text_max_length``; exact
        (same outputs). Not done for word-aligned files or when ``text_feats`` is loaded.
    bucket_by_length: training batches of clips of similar length (acoustic + visual frames), so the
        recurrent encoders run over less padding (:class:`~msa_lightning.data.sampling.EpochBatchSampler`).
        Off by default: it changes which clips share a batch, and so the numbers.
    """

    #: ``split_extras`` entries with one value per token column (``[N, L, ...]``): cut with the text
    token_extras: tuple[str, ...] = ()

    def __init__(
        self,
        path: str,
        dataset: str = "mosi",
        aligned: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        modalities: list[str] = list(MODALITIES),
        normalize: bool = False,
        tokenizer: str | None = None,
        text_max_length: int = 50,
        use_cache: bool = True,
        cache_dir: str | None = None,
        inputs: list[str] | None = None,
        predict_split: str = "test",
        shuffle_seed: int | None = None,
        trim_text: bool = True,
        bucket_by_length: bool = False,
    ) -> None:
        super().__init__()
        try:  # custom: a file of `msa features extract`, its label range and metric family in its manifest
            self.spec = custom_spec(Path(path).expanduser()) if dataset.lower() == CUSTOM else get_spec(dataset)
        except ValueError as err:
            raise ConfigError(f"data.init_args.dataset: {err}") from None
        for key, value, low in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
            ("text_max_length", text_max_length, 1),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"data.init_args.{key}: expected an integer >= {low}, found {value!r}")
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ConfigError(
                f"data.init_args.modalities: unknown modalities {sorted(unknown)}; "
                f"expected a subset of {list(MODALITIES)}"
            )
        if predict_split not in SPLITS:
            raise ConfigError(f"data.init_args.predict_split: expected one of {list(SPLITS)}, found {predict_split!r}")
        if inputs is not None and set(inputs) - set(INPUT_FIELDS):
            raise ConfigError(
                f"data.init_args.inputs: unknown fields {sorted(set(inputs) - set(INPUT_FIELDS))}; "
                f"expected a subset of {list(INPUT_FIELDS)}"
            )
        self.path, self.aligned = path, aligned
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.modalities, self.normalize = num_workers, tuple(modalities), normalize
        self.tokenizer_name, self.text_max_length = tokenizer, text_max_length
        self.use_cache, self._cache_dir = use_cache, Path(cache_dir).expanduser() if cache_dir else None
        self.inputs: set[str] | None = set(inputs) if inputs is not None else None
        self.predict_split, self.shuffle_seed = predict_split, shuffle_seed
        self.trim_text = bool(trim_text)
        self.bucket_by_length = bool(bucket_by_length)
        self.datasets: dict[str, MSADataset] = {}
        self._loaded_inputs: set[str] | None = None  # the fields self.datasets give (None: all)
        self.splits: dict[str, SplitArrays] = {}
        self.normalizer: FeatureNormalizer | None = None

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir if self._cache_dir is not None else Path(feature_cache.DEFAULT_CACHE_DIR)

    # ------------------------------------------------------------------ facts models read
    @property
    def metric_family(self) -> str:
        return self.spec.family

    @property
    def provided_inputs(self) -> set[str]:
        """The batch fields this file can give: token ids and acoustic/visual frames, ``text_feats``
        when the file has precomputed text features (the file is read to know)."""
        self._load()
        provided = {*TEXT_ID_FIELDS, "audio", "audio_lengths", "vision", "vision_lengths"}
        if self.splits["train"].text is not None:
            provided.add("text_feats")
        return provided

    @property
    def feature_file(self) -> Path:
        p = Path(self.path).expanduser()
        if p.is_dir():
            p = p / (ALIGNED_FILE if self.aligned else self.spec.unaligned_file)
        if not p.is_file():
            raise FeatureFileError(
                f"{p}: feature file not found (data.init_args.path={self.path!r}, dataset={self.spec.name!r})"
            )
        return p

    def num_train_samples(self) -> int:
        self._load()
        return len(self.splits["train"])

    def train_labels(self, key: str = "M") -> np.ndarray:
        """Training labels ``key`` ``[N]`` (float32) in the row order of ``batch.index``."""
        self._load()
        labels = self.splits["train"].labels
        if key not in labels:
            raise DataError(
                f"{self.feature_file}: split 'train' has no labels {key!r} (it has {sorted(labels) or 'no labels'})"
            )
        return np.asarray(labels[key], dtype=np.float32)

    def data_facts(self) -> DataFacts:
        """What models must agree with, read from the validated arrays: feature sizes, the label bound
        (of the range the file was validated against), the metric family and the training size."""
        self._load()
        train = self.splits["train"]
        return DataFacts(
            audio_dim=int(train.audio.shape[2]),
            vision_dim=int(train.vision.shape[2]),
            label_bound=float(self.spec.label_bound),
            metric_family=self.spec.family,
            num_train_samples=len(train),
        )

    def describe(self) -> str:
        return f"{type(self).__name__} (data file {self.feature_file})"

    def state_dict(self) -> dict:
        """What a checkpoint carries of the data (Lightning saves it with the model): for a file of
        ``msa features extract``, how its features were extracted, so ``msa infer`` extracts new videos alike."""
        manifest = read_features_manifest(self.feature_file)
        if manifest is None:
            return {}
        keys = ("settings", "dataset", "audio_frames", "vision_frames", "packages")
        return {"extraction": {k: manifest[k] for k in keys if k in manifest}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore: the extraction settings are read from the checkpoint by ``msa infer``."""

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
        splits = {}
        for split in SPLITS:
            arrays = self.transform_split(split, raw[split])
            if len(arrays) == 0:
                raise DataError(
                    f"{self.feature_file}: split {split!r} has 0 samples; "
                    "every split (train, valid, test) needs at least one"
                )
            for key, count in arrays.nonfinite.items():
                log.warning("%s/%s: %d non-finite values in %r were replaced by 0", self.spec.name, split, count, key)
            splits[split] = arrays
        warn_overlaps(splits, str(self.feature_file))
        self.splits = splits

    def _resolve_inputs(self) -> set[str] | None:
        return resolve_inputs(self, self.inputs)

    def setup(self, stage: str | None = None) -> None:
        self._load()
        inputs = self._resolve_inputs()
        if self.datasets and (self._loaded_inputs is None or (inputs is not None and inputs <= self._loaded_inputs)):
            return  # the datasets already give every field asked for
        if inputs is not None:
            provided = self.provided_inputs
            if missing := inputs - provided:
                raise DataError(
                    f"{self.feature_file}: the model reads {sorted(missing)}, which "
                    f"{type(self).__name__} cannot give from this file (it gives {sorted(provided)})"
                )
        if self.normalize and self.normalizer is None:
            self.normalizer = FeatureNormalizer.fit(self.splits["train"])
        self._loaded_inputs = inputs
        wants_text = inputs is None or bool(set(TEXT_ID_FIELDS) & inputs)
        for split, arrays in self.splits.items():
            self.datasets[split] = MSADataset(
                arrays,
                self._text_ids(split, arrays) if wants_text else None,
                self.modalities,
                self.normalizer,
                self.split_extras(split, arrays),
                trim=not self.aligned_file,
                inputs=inputs,
                trim_text=self.trim_text and not self.aligned_file,
                token_extras=self.token_extras,
            )

    @property
    def aligned_file(self) -> bool:
        """Word-aligned files: all modalities share the text length (no trimming of frames)."""
        train = self.splits["train"]
        return bool(
            (train.audio_lengths == train.audio.shape[1]).all() and train.audio.shape[1] == train.vision.shape[1]
        )

    def _text_ids(self, split: str, arrays: SplitArrays) -> np.ndarray:
        if self.tokenizer_name is None:
            if arrays.text_bert is None:
                raise FeatureFileError(
                    f"{self.feature_file}: split {split!r} has no 'text_bert'; "
                    "set data.init_args.tokenizer to re-tokenise 'raw_text'"
                )
            return arrays.text_bert
        return tokenize_cached(arrays.raw_text, self.tokenizer_name, self.text_max_length, self.cache_dir)

    # ------------------------------------------------------------------ loaders
    def _check_ready(self, split: str) -> MSADataset:
        if split not in self.datasets:
            self.setup()
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        dataset = self._check_ready("train")
        world, rank = self._world()
        if len(dataset) < world:
            raise DataError(
                f"{self.feature_file}: split 'train' has {len(dataset)} samples, fewer than the {world} DDP processes"
            )
        lengths = None
        if self.bucket_by_length:
            train = self.splits["train"]
            lengths = np.asarray(train.audio_lengths, dtype=np.int64) + np.asarray(train.vision_lengths, dtype=np.int64)
        sampler = EpochBatchSampler(
            len(dataset),
            self.batch_size,
            seed=self.train_seed,
            shuffle=True,
            num_replicas=world,
            rank=rank,
            lengths=lengths,
        )
        return ResumableDataLoader(
            dataset,
            sampler=sampler,
            rows_per_batch=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self._check_ready(split)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            sampler=self._eval_sampler(dataset),
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.predict_split)


def tokenize_cached(
    texts: list[str], tokenizer: str, max_length: int, cache_dir: str | Path | None = None
) -> np.ndarray:
    """``[N, 3, max_length]`` ids/mask/segments of ``texts`` (store kind ``tokens``, keyed by the
    tokenizer, the length and the texts). A tokenizer that cannot be loaded is a ConfigError naming
    ``data.init_args.tokenizer``."""
    store = Store(cache_dir if cache_dir is not None else feature_cache.DEFAULT_CACHE_DIR)
    texts = list(texts)
    inputs = {
        "tokenizer": tokenizer,
        "max_length": int(max_length),
        "texts": hashlib.sha256("\x00".join(texts).encode()).hexdigest(),
        "count": len(texts),
    }
    if (files := local_fingerprint(tokenizer, store.root)) is not None:  # a local tokenizer: its files decide
        inputs["tokenizer_files"] = files

    def build():
        from msa_lightning.nn.pretrained import PretrainedNotAvailable, load_tokenizer

        try:
            tok = load_tokenizer(tokenizer)
        except PretrainedNotAvailable as err:
            raise ConfigError(f"data.init_args.tokenizer={tokenizer!r} cannot be loaded: {err}") from None
        enc = tok(
            texts,
            max_length=max_length,
            padding="max_length",
            truncation=True,
            return_token_type_ids=True,
            return_tensors="np",
        )
        ids = np.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], axis=1).astype(np.int64)
        return {"ids": ids}, {}

    return store.get_or_build("tokens", inputs, build)["ids"]


class MOSIDataModule(MSADataModule):
    """CMU-MOSI (audio 5-d COVAREP, vision 20-d Facet; 1,284/229/686; labels in [-3, 3])."""

    def __init__(self, path: str = "data/MOSI", **kwargs) -> None:
        kwargs.setdefault("dataset", "mosi")
        super().__init__(path, **kwargs)


class MOSEIDataModule(MSADataModule):
    """CMU-MOSEI (audio 74-d, vision 35-d; 16,326/1,871/4,659; labels in [-3, 3])."""

    def __init__(self, path: str = "data/MOSEI", dataset: str = "mosei", **kwargs) -> None:
        # an explicit argument: through **kwargs jsonargparse would pass the base default "mosi"
        super().__init__(path, dataset=dataset, **kwargs)


class SIMSDataModule(MSADataModule):
    """CH-SIMS (``version=1``: audio 33-d, vision 709-d) or CH-SIMS v2 (``version=2``: 25-d, 177-d);
    labels in [-1, 1] with unimodal labels T/A/V."""

    def __init__(self, path: str = "data/SIMS", version: int = 1, **kwargs) -> None:
        if version not in (1, 2):
            raise ConfigError(f"data.init_args.version: CH-SIMS version must be 1 or 2, got {version}")
        kwargs["dataset"] = "sims" if version == 1 else "simsv2"
        super().__init__(path, **kwargs)
