"""Raw clips in, batches out: the DataModule of the raw releases of CH-SIMS, CH-SIMS v2 and MOSI.

Layout (the datasets' raw releases)::

    <path>/label.csv                    video_id, clip_id, text, label[, label_T, label_A, label_V], mode, ...
    <path>/Raw/<video_id>/<clip_id>.mp4

``mode`` names the split (``train``, ``valid``, ``test``); ``label`` is the multimodal label ``M``
and ``label_T/_A/_V`` the unimodal ones where the release has them (MOSI's has none).

Every clip is decoded once with PyAV (FFmpeg inside the wheel): audio as mono float samples at
``sample_rate`` (16 kHz), frames sampled at ``fps`` (10, the paper's choice; each output time shows
the last source frame at or before it) and resized to ``size x size`` (128). The result goes into
the suite's :class:`~msa_lightning.store.Store` (kind ``raw_media``, one entry per clip keyed by the
clip file's content hash and the decoding settings), read memory-mapped afterwards: a second run,
another DDP rank or a loader worker never decodes again, and adding clips decodes only those.

Face cropping: the paper crops the active speaker's face (TalkNet) before resizing. That detector
is out of scope here. Three ways in: face-cropped videos; folders of face frames written by such a
tool (``frames_dir="Faces"``: ``<path>/Faces/<video_id>/<clip_id>/*.jpg|png``, sorted by name, taken
at ``frames_fps``; the audio still comes from the mp4); or ``crop``, an importable function
``"package.module:function"`` that maps one RGB frame ``[H, W, 3] uint8`` to its crop (the hook runs
before the resize, and its name enters the cache key).

Bad input (a missing or corrupt mp4, no audio or no video stream, a clip that decodes to nothing,
a label row without a file, a file without a label row) raises one :class:`DataError` naming the
clip, or with ``on_error="skip"`` is left out, reported by id and reason (``skipped``) and counted
in a warning: nothing is dropped silently. A bad ``label.csv`` (not UTF-8, a label that is not a finite
number, a clip listed twice or under two modes) is always an error naming the line and clip.

Decoding lives in :mod:`msa_lightning.media.decode`; step 2 of TwoStepMSA (features of frozen extractors)
in :mod:`msa_lightning.papers.twostep.data`.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from msa_lightning.batch import INPUT_FIELDS, MSABatch
from msa_lightning.data.base import DataFacts, SuiteDataModule
from msa_lightning.data.datamodule import resolve_inputs, tokenize_cached
from msa_lightning.data.labels import LABEL_COLUMNS, REQUIRED_COLUMNS, read_labels  # noqa: F401 (their old home)
from msa_lightning.data.sampling import EpochBatchSampler, ResumableDataLoader
from msa_lightning.data.specs import SPLITS, get_spec
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.media.decode import decode_clip, frame_images, load_crop
from msa_lightning.store import DEFAULT_ROOT, Entry, Store

log = logging.getLogger(__name__)

TEXT_ID_FIELDS = ("text_ids", "text_mask", "text_segment")
RAW_FIELDS = ("waveform", "waveform_mask", "frames", "frame_mask")
#: decoded array of each stream -> (the stream's name, the batch fields read from it)
STREAMS = {"audio": ("audio", {"waveform", "waveform_mask"}), "frames": ("video", {"frames", "frame_mask"})}


def _build_clip(path: Path, settings: dict, folder: Path | None) -> tuple[dict[str, np.ndarray], dict]:
    frames, audio = decode_clip(
        path,
        settings["sample_rate"],
        settings["fps"],
        settings["size"],
        settings["max_seconds"],
        load_crop(settings["crop"]),
        folder,
        settings["frames_fps"],
        require=(),  # a missing stream is an error only for a model that reads it (RawMediaDataModule.setup)
    )
    arrays = {name: x for name, x in (("frames", frames), ("audio", audio)) if x is not None}
    return arrays, {"file": str(path)}


def _decode_to_store(root: str, inputs: dict, path: Path, settings: dict, folder: Path | None) -> str | None:
    """Worker of the parallel first pass: decode one clip into the store; the error message, if any."""
    try:
        Store(root).get_or_build("raw_media", inputs, lambda: _build_clip(path, settings, folder))
    except DataError as err:
        return str(err)
    return None


class RawClipDataset(Dataset):
    """One split of decoded clips; ``__getitems__`` builds a padded :class:`MSABatch`."""

    def __init__(
        self,
        entries: list[Entry],
        ids: list[str],
        raw_text: list[str],
        labels: dict[str, np.ndarray],
        text: np.ndarray | None,
        inputs: set[str] | None,
    ) -> None:
        self.entries, self.ids, self.raw_text, self.labels = entries, ids, raw_text, labels
        self.text, self.inputs = text, inputs

    def wants(self, *names: str) -> bool:
        return self.inputs is None or any(n in self.inputs for n in names)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i) -> MSABatch:
        if isinstance(i, (list, tuple, np.ndarray, torch.Tensor)):
            return self.__getitems__([int(j) for j in i])
        return self.__getitems__([int(i)])

    def __getitems__(self, indices: list[int]) -> MSABatch:
        idx = np.asarray(indices, dtype=np.int64)
        waveform = waveform_mask = frames = frame_mask = None
        if self.wants("waveform", "waveform_mask"):
            clips = [self.entries[i]["audio"] for i in idx]
            lengths = np.array([len(c) for c in clips])
            waveform = np.zeros((len(idx), lengths.max()), np.float32)
            for row, clip in enumerate(clips):  # ragged clips: one copy each into the padded batch
                waveform[row, : len(clip)] = clip
            waveform_mask = np.arange(lengths.max())[None] < lengths[:, None]
        if self.wants("frames", "frame_mask"):
            clips = [self.entries[i]["frames"] for i in idx]
            lengths = np.array([len(c) for c in clips])
            frames = np.zeros((len(idx), lengths.max(), *clips[0].shape[1:]), np.uint8)
            for row, clip in enumerate(clips):
                frames[row, : len(clip)] = clip
            frames = frames.transpose(0, 1, 4, 2, 3)  # [B, T, C, H, W]
            frame_mask = np.arange(lengths.max())[None] < lengths[:, None]

        def field(name: str, value: np.ndarray | None) -> torch.Tensor | None:
            if value is None or not (self.inputs is None or name in self.inputs):
                return None
            return torch.from_numpy(np.ascontiguousarray(value))

        text = None if self.text is None or not self.wants(*TEXT_ID_FIELDS) else self.text[idx].astype(np.int64)
        return MSABatch(
            index=torch.from_numpy(idx),
            text_ids=field("text_ids", None if text is None else text[:, 0]),
            text_mask=field("text_mask", None if text is None else text[:, 1]),
            text_segment=field("text_segment", None if text is None else text[:, 2]),
            waveform=field("waveform", waveform),
            waveform_mask=field("waveform_mask", waveform_mask),
            frames=field("frames", frames),
            frame_mask=field("frame_mask", frame_mask),
            labels={k: torch.from_numpy(v[idx].astype(np.float32)) for k, v in self.labels.items()},
            ids=[self.ids[i] for i in idx],
            raw_text=[self.raw_text[i] for i in idx],
        )


def _collate(batch):
    if isinstance(batch, MSABatch):
        return batch
    raise TypeError("RawClipDataset batches are built by __getitems__; use a DataLoader with batch_size set")


class RawMediaDataModule(SuiteDataModule):
    """Raw clips of CH-SIMS / CH-SIMS v2 / MOSI (module docstring for the layout and the cache).

    Args:
        path: the folder holding ``label.csv`` and ``Raw/``.
        dataset: ``sims``, ``simsv2`` or ``mosi`` (label range and metric family).
        batch_size, eval_batch_size, num_workers, shuffle_seed: as in the feature-file DataModules
            (the training order depends only on (seed, epoch); no training batch of one sample).
        tokenizer, text_max_length: how ``text`` becomes ``text_ids``/``text_mask``/``text_segment``.
        sample_rate, fps, size: decoding (16 kHz mono; 10 fps; 128 x 128 frames).
        max_seconds: cut clips longer than this (None: keep everything).
        crop: the face-crop hook ``"package.module:function"`` (None: videos are already face crops).
        frames_dir: read frames from ``<path>/<frames_dir>/<video_id>/<clip_id>/`` images (face crops
            of an external detector) at ``frames_fps`` instead of the mp4's video stream.
        on_error: ``"raise"`` (one error naming the first bad clip) or ``"skip"`` (left out, reported).
        decode_workers: processes for the first decoding pass (0: decode in this process).
        cache_dir: the store's root (default ``$MSA_CACHE_DIR`` or ``~/.cache/msa_lightning``).
        inputs: batch fields to load (None: what the attached model's ``required_inputs`` names, else all).
    """

    #: the batch fields it serves (a model that reads others cannot run on it: ``check_inputs``)
    provided_inputs = frozenset(
        {"text_ids", "text_mask", "text_segment", "waveform", "waveform_mask", "frames", "frame_mask"}
    )

    def __init__(
        self,
        path: str,
        dataset: str = "simsv2",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        tokenizer: str = "bert-base-chinese",
        text_max_length: int = 50,
        sample_rate: int = 16_000,
        fps: float = 10.0,
        size: int = 128,
        max_seconds: float | None = None,
        crop: str | None = None,
        frames_dir: str | None = None,
        frames_fps: float = 25.0,
        on_error: str = "raise",
        decode_workers: int = 0,
        cache_dir: str | None = None,
        inputs: list[str] | None = None,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__()
        try:
            self.spec = get_spec(dataset)
        except ValueError as err:
            raise ConfigError(f"data.init_args.dataset: {err}") from None
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"data.init_args.on_error: expected 'raise' or 'skip', found {on_error!r}")
        for key, value, low in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("sample_rate", sample_rate, 1),
            ("size", size, 1),
            ("num_workers", num_workers, 0),
            ("decode_workers", decode_workers, 0),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"data.init_args.{key}: expected an integer >= {low}, found {value!r}")
        if not fps > 0:
            raise ConfigError(f"data.init_args.fps: expected a positive number, found {fps!r}")
        if not frames_fps > 0:
            raise ConfigError(f"data.init_args.frames_fps: expected a positive number, found {frames_fps!r}")
        if inputs is not None and set(inputs) - set(INPUT_FIELDS):
            raise ConfigError(f"data.init_args.inputs: unknown fields {sorted(set(inputs) - set(INPUT_FIELDS))}")
        self.path = Path(path).expanduser()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.shuffle_seed = num_workers, shuffle_seed
        self.tokenizer_name, self.text_max_length = tokenizer, text_max_length
        self.decode_settings = {
            "sample_rate": sample_rate,
            "fps": float(fps),
            "size": size,
            "max_seconds": max_seconds,
            "crop": crop,
            "frames_dir": frames_dir,
            "frames_fps": float(frames_fps),
        }
        self.on_error, self.decode_workers = on_error, decode_workers
        self.store = Store(cache_dir if cache_dir is not None else DEFAULT_ROOT)
        self.inputs = set(inputs) if inputs is not None else None
        self.skipped: dict[str, str] = {}
        self.splits: dict[str, dict] = {}
        self.datasets: dict[str, RawClipDataset] = {}

    # ------------------------------------------------------------------ reading and decoding
    @property
    def label_file(self) -> Path:
        return self.path / "label.csv"

    def clip_file(self, video_id: str, clip_id: str) -> Path:
        return self.path / "Raw" / video_id / f"{clip_id}.mp4"

    def _bad(self, clip: str, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(message)
        self.skipped[clip] = message

    def _clip_inputs(self, video_id: str, clip_id: str) -> tuple[Path, Path | None, dict]:
        """The clip's file, its frame folder (with ``frames_dir``) and its store key inputs."""
        s = self.decode_settings
        folder = None if s["frames_dir"] is None else self.path / s["frames_dir"] / video_id / clip_id
        return self._file_inputs(self.clip_file(video_id, clip_id), folder)

    def _file_inputs(self, path: Path, folder: Path | None = None) -> tuple[Path, Path | None, dict]:
        if not path.is_file():
            raise DataError(f"{path}: clip file not found")
        inputs = {"clip": self.store.content_hash(path), **self.decode_settings}
        if folder is not None:
            if not folder.is_dir():
                raise DataError(f"{folder}: frame folder not found")
            inputs["frame_files"] = [self.store.content_hash(f) for f in frame_images(folder)]
        return path, folder, inputs

    def decode(self, video_id: str, clip_id: str) -> Entry:
        """The decoded clip from the store, decoding it on first use."""
        return self.decode_file(*self._clip_inputs(video_id, clip_id)[:2])

    def decode_file(self, path: Path, folder: Path | None = None) -> Entry:
        """Any video file decoded with this DataModule's settings (``msa infer`` decodes new videos so),
        from the store, decoding it on first use."""
        path, folder, inputs = self._file_inputs(Path(path), folder)
        return self.store.get_or_build("raw_media", inputs, lambda: _build_clip(path, self.decode_settings, folder))

    def rebuild_args(self) -> dict:
        """The ``__init__`` arguments that fix how a clip becomes a batch (decoding, tokenizer, dataset),
        carried by checkpoints (:meth:`state_dict`) so ``msa infer`` decodes new videos the same way."""
        s = self.decode_settings
        return {
            "dataset": self.spec.name,
            "tokenizer": self.tokenizer_name,
            "text_max_length": self.text_max_length,
            "eval_batch_size": self.eval_batch_size,
            **{k: s[k] for k in ("sample_rate", "fps", "size", "max_seconds", "crop", "frames_dir", "frames_fps")},
        }

    def state_dict(self) -> dict:
        """What a checkpoint carries of the data (Lightning saves it with the model): this class and
        :meth:`rebuild_args`, for ``msa infer``."""
        cls = type(self)
        return {"raw_media": {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self.rebuild_args()}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore: the settings are read from the checkpoint by ``msa infer``."""

    def _decode_in_parallel(self, clips: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Decode the clips missing from the store in ``decode_workers`` processes (each writes its own
        store entries, atomically); returns the error message of each clip that failed."""
        jobs = {}
        for video, clip in clips:
            try:
                path, folder, inputs = self._clip_inputs(video, clip)
            except DataError:
                continue  # reported by the sequential pass
            if self.store.get("raw_media", inputs) is None:
                jobs[(video, clip)] = (str(self.store.root), inputs, path, self.decode_settings, folder)
        if not jobs:
            return {}
        log.info("%s: decoding %d clips in %d processes", self.path, len(jobs), self.decode_workers)
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(self.decode_workers, mp_context=context) as pool:
            results = dict(zip(jobs, pool.map(_decode_to_store, *zip(*jobs.values()))))
        return {clip: error for clip, error in results.items() if error is not None}

    def _load(self) -> None:
        if self.splits:
            return
        rows = read_labels(self.label_file)
        self.skipped = {}
        labelled = set()
        failed = (
            self._decode_in_parallel([(r["video_id"].strip(), r["clip_id"].strip()) for r in rows])
            if self.decode_workers > 0
            else {}
        )
        per_split: dict[str, dict] = {s: {"entries": [], "ids": [], "raw_text": [], "labels": []} for s in SPLITS}
        label_keys = [key for col, key in LABEL_COLUMNS.items() if col in rows[0]] if rows else ["M"]
        for row in rows:
            video, clip = row["video_id"].strip(), row["clip_id"].strip()
            clip_name = f"{video}_{clip}"
            labelled.add((video, clip))
            path = self.clip_file(video, clip)
            if not path.is_file():
                self._bad(clip_name, f"clip {clip_name}: label row without a file ({path} does not exist)")
                continue
            labels = [float(row[col]) for col, key in LABEL_COLUMNS.items() if key in label_keys]  # checked
            try:
                if (video, clip) in failed:
                    raise DataError(failed[(video, clip)])
                entry = self.decode(video, clip)
            except DataError as err:
                self._bad(clip_name, f"clip {clip_name}: {err}")
                continue
            part = per_split[row["mode"]]
            part["entries"].append(entry)
            part["ids"].append(clip_name)
            part["raw_text"].append(row["text"])
            part["labels"].append(labels)
        for file in sorted((self.path / "Raw").glob("*/*.mp4")):
            if (file.parent.name, file.stem) not in labelled:
                name = f"{file.parent.name}_{file.stem}"
                self._bad(name, f"clip {name}: file without a label row in {self.label_file} ({file})")
        if self.skipped:
            log.warning(
                "%s: %d clips skipped: %s",
                self.path,
                len(self.skipped),
                "; ".join(f"{k} ({v})" for k, v in self.skipped.items()),
            )
        for split, part in per_split.items():
            if not part["entries"]:
                raise DataError(
                    f"{self.label_file}: split {split!r} has no usable clips"
                    + (f" ({len(self.skipped)} skipped)" if self.skipped else "")
                )
            labels = np.asarray(part["labels"], dtype=np.float32).reshape(len(part["ids"]), len(label_keys))
            low, high = self.spec.label_range
            if (labels < low - 1e-6).any() or (labels > high + 1e-6).any():
                raise DataError(
                    f"{self.label_file}: split {split!r} has labels outside {list(self.spec.label_range)} "
                    f"of dataset {self.spec.name!r}"
                )
            part["labels"] = {key: labels[:, i] for i, key in enumerate(label_keys)}
            self.splits[split] = part

    def prepare_data(self) -> None:
        self._load()  # decodes every clip once (later runs and ranks read the store)

    # ------------------------------------------------------------------ facts models read
    def num_train_samples(self) -> int:
        self._load()
        return len(self.splits["train"]["ids"])

    def train_labels(self, key: str = "M") -> np.ndarray:
        self._load()
        labels = self.splits["train"]["labels"]
        if key not in labels:
            raise DataError(
                f"{self.label_file}: split 'train' has no labels {key!r} (it has {sorted(labels)}; "
                f"unimodal labels come from the columns label_T, label_A, label_V)"
            )
        return labels[key]

    def data_facts(self) -> DataFacts:
        """Raw media has no feature sizes (``audio_dim``/``vision_dim`` are None); the decoding settings
        are facts too."""
        self._load()
        return DataFacts(
            label_bound=float(self.spec.label_bound),
            metric_family=self.spec.family,
            num_train_samples=self.num_train_samples(),
            sample_rate=self.decode_settings["sample_rate"],
            fps=self.decode_settings["fps"],
            frame_size=self.decode_settings["size"],
        )

    def describe(self) -> str:
        return f"{type(self).__name__} (clips of {self.label_file})"

    # ------------------------------------------------------------------ datasets and loaders
    def _resolve_inputs(self) -> set[str] | None:
        return resolve_inputs(self, self.inputs)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load()
        inputs = self._resolve_inputs()
        self.check_streams(inputs)
        for split, part in self.splits.items():
            self.datasets[split] = self.split_dataset(part, inputs)

    def split_dataset(self, part: dict, inputs: set[str] | None) -> Dataset:
        """The dataset of one split (``entries``, ``ids``, ``raw_text``, ``labels``), its text tokenised if read."""
        wants_text = inputs is None or bool(set(TEXT_ID_FIELDS) & inputs)
        text = (
            tokenize_cached(part["raw_text"], self.tokenizer_name, self.text_max_length, self.store.root)
            if wants_text
            else None
        )
        return RawClipDataset(part["entries"], part["ids"], part["raw_text"], part["labels"], text, inputs)

    def clips_dataset(self, files: list[Path], texts: list[str], inputs: set[str] | None) -> Dataset:
        """New, unlabelled videos served as this DataModule serves its clips (``msa infer``): decoded with its
        settings (:meth:`decode_file`), checked for the streams that ``inputs`` read (a missing one is a
        DataError naming the file), their ``texts`` tokenised. The ids are the file stems."""
        if self.decode_settings["frames_dir"] is not None:
            raise ConfigError(
                f"the model was trained on frames read from folders of face crops (data.init_args.frames_dir="
                f"{self.decode_settings['frames_dir']!r}); msa infer reads a video's own frames: train on "
                "face-cropped videos (or the crop hook) to score new videos"
            )
        part = {"entries": [self.decode_file(f) for f in files], "ids": [f.stem for f in files], "raw_text": texts}
        part["labels"] = {}
        self.splits = {"infer": part}
        self.check_streams(inputs)
        return self.split_dataset(part, inputs)

    def check_streams(self, inputs: set[str] | None) -> None:
        """Every clip has the streams the batch fields ``inputs`` come from (None: all): an audio-only model
        reads no frames, so a clip without a video stream is fine for it. A clip lacking a stream that is
        read is an error naming it (``on_error: skip``: left out and reported)."""
        needed = {array: stream for array, (stream, fields) in STREAMS.items() if inputs is None or fields & inputs}
        if not needed:
            return
        dropped = 0
        for split, part in self.splits.items():
            keep = []
            for i, (entry, clip) in enumerate(zip(part["entries"], part["ids"])):
                lacking = [stream for array, stream in needed.items() if array not in entry]
                if lacking:
                    read = sorted(set().union(*(STREAMS[a][1] for a in needed if needed[a] in lacking)))
                    self._bad(
                        clip,
                        f"clip {clip}: {entry.meta.get('file', entry.path)}: the clip has no {lacking[0]} stream, "
                        f"and the model reads {read}",
                    )
                else:
                    keep.append(i)
            if len(keep) < len(part["ids"]):
                dropped += len(part["ids"]) - len(keep)
                for key in ("entries", "ids", "raw_text"):
                    part[key] = [part[key][i] for i in keep]
                part["labels"] = {k: v[keep] for k, v in part["labels"].items()}
                if not keep:
                    raise DataError(f"{self.label_file}: split {split!r} has no clip with the streams the model reads")
        if dropped:
            log.warning("%s: %d clips without a stream the model reads skipped", self.path, dropped)

    def _dataset(self, split: str) -> RawClipDataset:
        if split not in self.datasets:
            self.setup()
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train")
        world, rank = self._world()
        sampler = EpochBatchSampler(
            len(dataset), self.batch_size, seed=self.train_seed, shuffle=True, num_replicas=world, rank=rank
        )
        return ResumableDataLoader(
            dataset,
            sampler=sampler,
            rows_per_batch=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            sampler=self._eval_sampler(dataset),
            num_workers=self.num_workers,
            collate_fn=_collate,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


# ---------------------------------------------------------------------------------------------------
# Step 2 of TwoStepMSA: frozen extractors run once per clip, their outputs served as feature batches


# ---------------------------------------------------------------------------------------------------
# A tiny synthetic raw release (tests, notebooks, benchmarks): mp4 files written with PyAV
