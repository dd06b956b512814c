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

:class:`ExtractedFeaturesDataModule` is step 2 of TwoStepMSA: frozen BERT, HuBERT and Video Swin
(with the fine-tuned weights of step 1) run once over every clip; their outputs are stored and
served as ordinary feature batches (``text_feats``, ``audio``, ``vision`` with lengths), so a
step-2 epoch costs what the fusion network costs.
"""
from __future__ import annotations

import csv
import hashlib
import importlib
import logging
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from msa_lightning.batch import INPUT_FIELDS, MSABatch
from msa_lightning.data.datamodule import resolve_inputs, tokenize_cached
from msa_lightning.data.sampling import EpochBatchSampler, ResumableDataLoader
from msa_lightning.data.specs import SPLITS, get_spec
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.store import DEFAULT_ROOT, Entry, Store
from msa_lightning.textfiles import open_text

log = logging.getLogger(__name__)

#: label.csv column -> label key of the batch
LABEL_COLUMNS = {"label": "M", "label_T": "T", "label_A": "A", "label_V": "V"}
REQUIRED_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
TEXT_ID_FIELDS = ("text_ids", "text_mask", "text_segment")
RAW_FIELDS = ("waveform", "waveform_mask", "frames", "frame_mask")


def load_crop(name: str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The crop hook ``"package.module:function"`` (None: no crop)."""
    if name is None:
        return None
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"data.init_args.crop={name!r} cannot be imported ({type(err).__name__}: {err}); "
                          "expected 'package.module:function'") from None


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    """``[H, W, 3] uint8`` -> ``[size, size, 3] uint8`` (bilinear with antialiasing)."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def frame_images(folder: str | Path) -> list[Path]:
    """The frame images of a folder, in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def decode_clip(path: str | Path, sample_rate: int = 16_000, fps: float = 10.0, size: int = 128,
                max_seconds: float | None = None, crop: Callable[[np.ndarray], np.ndarray] | None = None,
                frames_folder: str | Path | None = None, frames_fps: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """Decode one clip: ``frames [T, size, size, 3] uint8`` at ``fps`` and ``audio [S] float32``, mono
    at ``sample_rate``; frames from ``frames_folder`` (images at ``frames_fps``) instead of the video
    stream when given. Raises :class:`DataError` naming the file for anything unreadable or empty."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: clip file not found")
    if frames_folder is not None and not Path(frames_folder).is_dir():
        raise DataError(f"{frames_folder}: frame folder not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(f"{path}: the clip has no audio stream")
            if frames_folder is None and not container.streams.video:
                raise DataError(f"{path}: the clip has no video stream")
            audio = _decode_audio(container, sample_rate, max_seconds)
        if frames_folder is None:
            with av.open(str(path)) as container:
                frames = _decode_frames(container, fps, size, max_seconds, crop)
        else:
            frames = _read_frame_folder(Path(frames_folder), frames_fps, fps, size, max_seconds, crop)
    except DataError:
        raise
    except Exception as err:  # FFmpeg reports corrupt input with many error types
        raise DataError(f"{path}: cannot decode the clip ({type(err).__name__}: {err})") from None
    if len(audio) == 0 or len(frames) == 0:
        raise DataError(f"{path}: the clip is empty ({len(frames)} frames, {len(audio)} audio samples)")
    return frames, audio


def _decode_audio(container, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks = []
    for frame in container.decode(audio=0):
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]  # flush
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return audio[: int(max_seconds * sample_rate)] if max_seconds is not None else audio


def _decode_frames(container, fps: float, size: int, max_seconds: float | None, crop) -> np.ndarray:
    """Sample-and-hold at ``fps``: output ``k`` shows the last source frame whose time is <= k / fps."""
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or fps)
    limit = np.inf if max_seconds is None else int(round(max_seconds * fps))
    out: list[np.ndarray] = []
    held, held_time, held_image = None, 0.0, None

    def image(frame) -> np.ndarray:
        if crop is None:
            return frame.to_ndarray(format="rgb24", width=size, height=size)
        return _resize(crop(frame.to_ndarray(format="rgb24")), size)

    for index, frame in enumerate(container.decode(video=0)):
        t = float(frame.time) if frame.time is not None else index / rate
        while held is not None and len(out) / fps < t and len(out) < limit:
            if held_image is None:
                held_image = image(held)
            out.append(held_image)
        if len(out) >= limit:
            break
        held, held_time, held_image = frame, t, None
    if held is not None:  # the last frame shows until its own duration ends
        end = held_time + 1.0 / rate
        while len(out) / fps < end - 1e-9 and len(out) < limit:
            if held_image is None:
                held_image = image(held)
            out.append(held_image)
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def _read_frame_folder(folder: Path, source_fps: float, fps: float, size: int, max_seconds: float | None,
                       crop) -> np.ndarray:
    """Images ``i`` shown at ``i / source_fps``, sampled and held at ``fps`` like a video stream."""
    import av

    images = frame_images(folder)
    count = int(np.ceil(len(images) * fps / source_fps - 1e-9))
    if max_seconds is not None:
        count = min(count, int(round(max_seconds * fps)))
    chosen = np.floor(np.arange(count) * source_fps / fps + 1e-9).astype(int)
    decoded: dict[int, np.ndarray] = {}
    for i in np.unique(chosen):
        try:
            with av.open(str(images[i])) as container:
                frame = next(container.decode(video=0))
        except Exception as err:  # a truncated or foreign image
            raise DataError(f"{images[i]}: cannot read the frame image ({type(err).__name__}: {err})") from None
        decoded[i] = (frame.to_ndarray(format="rgb24", width=size, height=size) if crop is None
                      else _resize(crop(frame.to_ndarray(format="rgb24")), size))
    return np.stack([decoded[i] for i in chosen]) if count else np.zeros((0, size, size, 3), np.uint8)


def _build_clip(path: Path, settings: dict, folder: Path | None) -> tuple[dict[str, np.ndarray], dict]:
    frames, audio = decode_clip(path, settings["sample_rate"], settings["fps"], settings["size"],
                                settings["max_seconds"], load_crop(settings["crop"]), folder, settings["frames_fps"])
    return {"frames": frames, "audio": audio}, {"file": str(path)}


def _decode_to_store(root: str, inputs: dict, path: Path, settings: dict, folder: Path | None) -> str | None:
    """Worker of the parallel first pass: decode one clip into the store; the error message, if any."""
    try:
        Store(root).get_or_build("raw_media", inputs, lambda: _build_clip(path, settings, folder))
    except DataError as err:
        return str(err)
    return None


def read_labels(csv_path: Path) -> list[dict]:
    """Rows of ``label.csv``, checked: the required columns (one error naming the missing ones), a known
    ``mode``, every label a finite number, every clip listed once. Each problem is one :class:`DataError`
    naming the file, line, clip, split and column; a clip listed twice, above all under two modes (a test
    clip leaking into training), is never resolved by a guess. The file is UTF-8 (a BOM, CRLF tolerated)."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: label file not found")
    reader = csv.DictReader(open_text(csv_path, "label file"))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{csv_path}: missing columns {missing} (expected at least {list(REQUIRED_COLUMNS)}, "
                        f"found {reader.fieldnames})")
    columns = [c for c in LABEL_COLUMNS if c in reader.fieldnames]
    first: dict[tuple[str, str], tuple[int, str]] = {}
    rows = []
    for row in reader:
        rows.append(row)
        number = reader.line_num  # the row's (last) line
        video, clip = (row["video_id"] or "").strip(), (row["clip_id"] or "").strip()
        where = f"{csv_path}, line {number}: clip {video}_{clip}"
        if row["mode"] not in SPLITS:
            raise DataError(f"{where}: mode {row['mode']!r} is not one of {list(SPLITS)}")
        for column in columns:
            value = row[column]
            try:
                label = float(value)
            except (TypeError, ValueError):
                label = None
            if label is None or not math.isfinite(label):
                raise DataError(f"{where} (split {row['mode']!r}): column {column!r}: expected a finite number, "
                                f"found {'nothing (a short row)' if value is None else repr(value)}")
        if (video, clip) in first:
            line, mode = first[(video, clip)]
            leak = "" if mode == row["mode"] else (
                f" (under mode {mode!r} there and {row['mode']!r} here: "
                + ("an evaluation clip would also be trained on)" if "train" in (mode, row["mode"])
                   else "one clip would be evaluated in two splits)"))
            raise DataError(f"{where} is listed again (first on line {line}){leak}; list each clip once")
        first[(video, clip)] = (number, row["mode"])
    return rows


class RawClipDataset(Dataset):
    """One split of decoded clips; ``__getitems__`` builds a padded :class:`MSABatch`."""

    def __init__(self, entries: list[Entry], ids: list[str], raw_text: list[str], labels: dict[str, np.ndarray],
                 text: np.ndarray | None, inputs: set[str] | None) -> None:
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
            waveform=field("waveform", waveform), waveform_mask=field("waveform_mask", waveform_mask),
            frames=field("frames", frames), frame_mask=field("frame_mask", frame_mask),
            labels={k: torch.from_numpy(v[idx].astype(np.float32)) for k, v in self.labels.items()},
            ids=[self.ids[i] for i in idx], raw_text=[self.raw_text[i] for i in idx],
        )


def _collate(batch):
    if isinstance(batch, MSABatch):
        return batch
    raise TypeError("RawClipDataset batches are built by __getitems__; use a DataLoader with batch_size set")


class RawMediaDataModule(L.LightningDataModule):
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
    provided_inputs = frozenset({"text_ids", "text_mask", "text_segment", "waveform", "waveform_mask", "frames",
                                 "frame_mask"})

    def __init__(self, path: str, dataset: str = "simsv2", batch_size: int = 8, eval_batch_size: int | None = None,
                 num_workers: int = 0, tokenizer: str = "bert-base-chinese", text_max_length: int = 50,
                 sample_rate: int = 16_000, fps: float = 10.0, size: int = 128, max_seconds: float | None = None,
                 crop: str | None = None, frames_dir: str | None = None, frames_fps: float = 25.0,
                 on_error: str = "raise", decode_workers: int = 0, cache_dir: str | None = None,
                 inputs: list[str] | None = None, shuffle_seed: int | None = None) -> None:
        super().__init__()
        try:
            self.spec = get_spec(dataset)
        except ValueError as err:
            raise ConfigError(f"data.init_args.dataset: {err}") from None
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"data.init_args.on_error: expected 'raise' or 'skip', found {on_error!r}")
        for key, value, low in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1),
                                ("sample_rate", sample_rate, 1), ("size", size, 1), ("num_workers", num_workers, 0),
                                ("decode_workers", decode_workers, 0)):
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
        self.decode_settings = {"sample_rate": sample_rate, "fps": float(fps), "size": size,
                                "max_seconds": max_seconds, "crop": crop, "frames_dir": frames_dir,
                                "frames_fps": float(frames_fps)}
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
        path = self.clip_file(video_id, clip_id)
        s = self.decode_settings
        if not path.is_file():
            raise DataError(f"{path}: clip file not found")
        inputs = {"clip": self.store.content_hash(path), **s}
        folder = None
        if s["frames_dir"] is not None:
            folder = self.path / s["frames_dir"] / video_id / clip_id
            if not folder.is_dir():
                raise DataError(f"{folder}: frame folder not found")
            inputs["frame_files"] = [self.store.content_hash(f) for f in frame_images(folder)]
        return path, folder, inputs

    def decode(self, video_id: str, clip_id: str) -> Entry:
        """The decoded clip from the store, decoding it on first use."""
        path, folder, inputs = self._clip_inputs(video_id, clip_id)
        return self.store.get_or_build("raw_media", inputs, lambda: _build_clip(path, self.decode_settings, folder))

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
        failed = (self._decode_in_parallel([(r["video_id"].strip(), r["clip_id"].strip()) for r in rows])
                  if self.decode_workers > 0 else {})
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
            log.warning("%s: %d clips skipped: %s", self.path, len(self.skipped),
                        "; ".join(f"{k} ({v})" for k, v in self.skipped.items()))
        for split, part in per_split.items():
            if not part["entries"]:
                raise DataError(f"{self.label_file}: split {split!r} has no usable clips"
                                + (f" ({len(self.skipped)} skipped)" if self.skipped else ""))
            labels = np.asarray(part["labels"], dtype=np.float32).reshape(len(part["ids"]), len(label_keys))
            low, high = self.spec.label_range
            if (labels < low - 1e-6).any() or (labels > high + 1e-6).any():
                raise DataError(f"{self.label_file}: split {split!r} has labels outside {list(self.spec.label_range)} "
                                f"of dataset {self.spec.name!r}")
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
            raise DataError(f"{self.label_file}: split 'train' has no labels {key!r} (it has {sorted(labels)}; "
                            f"unimodal labels come from the columns label_T, label_A, label_V)")
        return labels[key]

    def data_facts(self) -> dict:
        """Raw media has no feature sizes (``audio_dim``/``vision_dim`` are None); the decoding settings
        are facts too."""
        self._load()
        return {"audio_dim": None, "vision_dim": None, "label_bound": float(self.spec.label_bound),
                "metric_family": self.spec.family, "num_train_samples": self.num_train_samples(),
                "sample_rate": self.decode_settings["sample_rate"], "fps": self.decode_settings["fps"],
                "frame_size": self.decode_settings["size"]}

    # ------------------------------------------------------------------ datasets and loaders
    def _resolve_inputs(self) -> set[str] | None:
        return resolve_inputs(self, self.inputs)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load()
        inputs = self._resolve_inputs()
        wants_text = inputs is None or bool(set(TEXT_ID_FIELDS) & inputs)
        for split, part in self.splits.items():
            text = (tokenize_cached(part["raw_text"], self.tokenizer_name, self.text_max_length, self.store.root)
                    if wants_text else None)
            self.datasets[split] = RawClipDataset(part["entries"], part["ids"], part["raw_text"], part["labels"],
                                                  text, inputs)

    @property
    def train_seed(self) -> int:
        return int(self.shuffle_seed) if self.shuffle_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def _dataset(self, split: str) -> RawClipDataset:
        if split not in self.datasets:
            self.setup()
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train")
        world, rank = self._world()
        sampler = EpochBatchSampler(len(dataset), self.batch_size, seed=self.train_seed, shuffle=True,
                                    num_replicas=world, rank=rank)
        return ResumableDataLoader(dataset, sampler=sampler, rows_per_batch=self.batch_size,
                                   num_workers=self.num_workers, collate_fn=_collate,
                                   persistent_workers=self.num_workers > 0)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        world, rank = self._world()
        sampler = None
        if world > 1:  # no repeated samples in evaluation metrics
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=_collate, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


# ---------------------------------------------------------------------------------------------------
# Step 2 of TwoStepMSA: frozen extractors run once per clip, their outputs served as feature batches


def load_encoder_weights(encoder: torch.nn.Module, checkpoint: str | Path, what: str) -> str:
    """Load ``encoder``'s weights from a (step-1) checkpoint: a Lightning ``.ckpt`` (``state_dict``)
    or a plain state dict, or a run folder (its best checkpoint, resolved as ``msa test`` and ``msa
    export`` do; ``RUN/last`` for the last). The encoder's keys are looked for under any prefix
    (``net.audio.`` ...), so the checkpoint's model layout does not matter; exactly one prefix must
    hold all of them with the same shapes. Returns the prefix."""
    from msa_lightning.checkpoints import resolve_checkpoint

    path = Path(checkpoint).expanduser()
    if path.is_dir() or (path.name in ("best", "last") and path.parent.is_dir()):
        try:
            path = Path(resolve_checkpoint(path, "best"))
        except ConfigError as err:
            raise ConfigError(f"{what}: {err}") from None
    if not path.is_file():
        raise ConfigError(f"{what}: checkpoint {str(path)!r} does not exist (expected a .ckpt file or a run folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or foreign files fail in many ways
        raise ConfigError(f"{what}: cannot read checkpoint {str(path)!r} ({type(err).__name__}: {err})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    own = encoder.state_dict()
    anchor = next(iter(own))
    prefixes = [k[: -len(anchor)] for k in state if k.endswith(anchor)]
    fits = [p for p in prefixes if all(p + k in state and tuple(state[p + k].shape) == tuple(v.shape)
                                       for k, v in own.items())]
    if len(fits) != 1:
        raise ConfigError(f"{what}: checkpoint {str(path)!r} holds {'no' if not fits else len(fits)} complete copies "
                          f"of the {type(encoder).__name__} weights (looked for {len(own)} tensors such as "
                          f"{anchor!r} under any prefix{'; found prefixes ' + str(fits) if fits else ''})")
    encoder.load_state_dict({k: state[fits[0] + k] for k in own})
    return fits[0]


def _fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureClipDataset(Dataset):
    """One split of extractor outputs: ragged sequences (concatenated rows + offsets) padded per batch."""

    def __init__(self, arrays: dict[str, np.ndarray], ids: list[str], raw_text: list[str],
                 labels: dict[str, np.ndarray], tokens: np.ndarray) -> None:
        self.arrays, self.ids, self.raw_text, self.labels, self.tokens = arrays, ids, raw_text, labels, tokens

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i) -> MSABatch:
        if isinstance(i, (list, tuple, np.ndarray, torch.Tensor)):
            return self.__getitems__([int(j) for j in i])
        return self.__getitems__([int(i)])

    def _ragged(self, name: str, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows, offsets = self.arrays[name], self.arrays[f"{name}_offsets"]
        lengths = offsets[idx + 1] - offsets[idx]
        out = np.zeros((len(idx), int(lengths.max()), rows.shape[1]), np.float32)
        for row, (start, n) in enumerate(zip(offsets[idx], lengths)):  # ragged clips: one copy each
            out[row, :n] = rows[start:start + n]
        return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64))

    def __getitems__(self, indices: list[int]) -> MSABatch:
        idx = np.asarray(indices, dtype=np.int64)
        audio, audio_lengths = self._ragged("audio", idx)
        vision, vision_lengths = self._ragged("vision", idx)
        tokens = torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))  # [B, 3, L]
        return MSABatch(
            text_ids=tokens[:, 0], text_segment=tokens[:, 2],
            index=torch.from_numpy(idx), text_feats=torch.from_numpy(np.asarray(self.arrays["text"][idx], np.float32)),
            text_mask=tokens[:, 1], audio=audio, audio_lengths=audio_lengths, vision=vision,
            vision_lengths=vision_lengths,
            labels={k: torch.from_numpy(v[idx].astype(np.float32)) for k, v in self.labels.items()},
            ids=[self.ids[i] for i in idx], raw_text=[self.raw_text[i] for i in idx],
            extras={f"{m}_pooled": torch.from_numpy(np.asarray(self.arrays[f"{m}_pooled"][idx], np.float32))
                    for m in ("text", "audio", "vision")},
        )


class ExtractedFeaturesDataModule(RawMediaDataModule):
    """Step 2 of TwoStepMSA (paper 3.4): the extractors are frozen, so their outputs are computed once
    per clip and stored (kind ``frozen_features``, keyed by the decoded clips and a fingerprint of
    each extractor's weights); epochs then cost what the fusion network costs.

    Batches carry the standard feature fields, so every fusion model of the suite reads them:
    ``text_feats [B, L, D_t]`` + ``text_mask`` (BERT's last layer; the token ids too), ``audio [B, Ta, D_a]`` +
    ``audio_lengths`` (HuBERT's last layer, valid frames), ``vision [B, Tv, D_v]`` + ``vision_lengths``
    (Video Swin, mean over space), and the global vectors in ``extras["text_pooled"]`` (``[CLS]``),
    ``extras["audio_pooled"]`` and ``extras["vision_pooled"]`` (means over valid steps).

    Args (besides :class:`RawMediaDataModule`'s):
        text_model, audio_model: names or folders (``tiny-bert``, ``tiny-hubert`` in tests).
        video_arch, video_checkpoint: the Video Swin architecture and its pretrained weights file.
        step1_checkpoints: ``{"text"|"audio"|"vision": checkpoint}``: fine-tuned weights of step 1, a
            ``.ckpt`` file or a step-1 run folder (its best checkpoint; found under any prefix, see
            :func:`load_encoder_weights`).
        tokenizer: left unset, it follows ``text_model`` (the stored BERT outputs are computed from
            that model's token ids); a different value is refused.
        extract_batch_size: clips per extractor call; ``extract_device``: ``auto`` (GPU if present).
    """

    provided_inputs = frozenset({"text_ids", "text_mask", "text_segment", "text_feats", "audio", "audio_lengths",
                                 "vision", "vision_lengths"})

    def __init__(self, path: str, text_model: str = "bert-base-chinese",
                 audio_model: str = "facebook/hubert-base-ls960",
                 video_arch: str = "swin3d_t", video_checkpoint: str | None = None,
                 step1_checkpoints: dict[str, str] | None = None, extract_batch_size: int = 8,
                 extract_device: str = "auto", tokenizer: str | None = None, **kwargs) -> None:
        if tokenizer is not None and str(tokenizer) != str(text_model):
            raise ConfigError(f"data.init_args.tokenizer={tokenizer!r} differs from data.init_args.text_model="
                              f"{text_model!r}: the stored BERT outputs are computed from text_model's token ids; "
                              "leave tokenizer unset (it follows text_model)")
        super().__init__(path, tokenizer=text_model, **kwargs)
        unknown = set(step1_checkpoints or {}) - {"text", "audio", "vision"}
        if unknown:
            raise ConfigError(f"data.init_args.step1_checkpoints: unknown modalities {sorted(unknown)}; "
                              "expected text, audio, vision")
        if isinstance(extract_batch_size, bool) or not isinstance(extract_batch_size, int) or extract_batch_size < 1:
            raise ConfigError("data.init_args.extract_batch_size: expected an integer >= 1, "
                              f"found {extract_batch_size!r}")
        self.text_model, self.audio_model = text_model, audio_model
        self.video_arch, self.video_checkpoint = video_arch, video_checkpoint
        self.step1_checkpoints = dict(step1_checkpoints or {})
        self.extract_batch_size, self.extract_device = extract_batch_size, extract_device
        self._extractors: dict[str, torch.nn.Module] | None = None
        self._fingerprints: dict[str, str] = {}
        self.features: dict[str, dict[str, np.ndarray]] = {}

    def extractors(self) -> dict[str, torch.nn.Module]:
        """The three frozen extractors (built once; random tiny models are seeded, so the same every time)."""
        if self._extractors is None:
            from msa_lightning.nn.audio_encoder import AudioEncoder
            from msa_lightning.nn.text_encoder import TextEncoder
            from msa_lightning.nn.video_swin import VideoSwinEncoder

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                built = {"text": TextEncoder(self.text_model, finetune=False),
                         "audio": AudioEncoder(self.audio_model, finetune=False),
                         "vision": VideoSwinEncoder(self.video_arch, self.video_checkpoint, finetune=False)}
            for modality, checkpoint in self.step1_checkpoints.items():
                load_encoder_weights(built[modality], checkpoint, f"data.init_args.step1_checkpoints.{modality}")
            self._extractors = built
            self._fingerprints = {m: _fingerprint(e) for m, e in built.items()}
        return self._extractors

    def _device(self) -> torch.device:
        if self.extract_device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.extract_device)

    @torch.no_grad()
    def _extract(self, split: str) -> dict[str, np.ndarray]:
        """Every clip of ``split`` through the three extractors, in batches of clips of similar length
        (HuBERT-base normalises over the padded batch and Swin's windows see padding positions, so
        little padding keeps each clip's features close to what it gives alone)."""
        extractors, device = self.extractors(), self._device()
        for module in extractors.values():
            module.to(device).eval()
        part = self.splits[split]
        raw = RawClipDataset(part["entries"], part["ids"], part["raw_text"], part["labels"],
                             tokenize_cached(part["raw_text"], self.tokenizer_name, self.text_max_length,
                                             self.store.root), None)
        durations = [e.meta["arrays"]["audio"]["shape"][0] for e in part["entries"]]
        order = np.argsort(durations, kind="stable")
        clips: list[dict[str, np.ndarray]] = [{} for _ in range(len(raw))]
        for start in range(0, len(raw), self.extract_batch_size):  # batches of clips through each extractor
            rows = order[start:start + self.extract_batch_size]
            batch = raw.__getitems__(rows.tolist()).to(device)
            text = extractors["text"](batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state
            text = text.float().cpu().numpy()
            text_mask = batch.text_mask.cpu().numpy()
            sequences = {m: tuple(t.cpu().numpy() for t in out) for m, out in (
                ("audio", extractors["audio"](batch.waveform, batch.waveform_mask)),
                ("vision", extractors["vision"](batch.frames, batch.frame_mask)))}
            for j, row in enumerate(rows):  # split the batch back into clips (valid steps only)
                clips[row].update(text=text[j], text_mask=text_mask[j], text_pooled=text[j, 0])  # [CLS]
                for modality, (sequence, mask, pooled) in sequences.items():
                    clips[row][modality] = sequence[j][mask[j]].astype(np.float32)
                    clips[row][f"{modality}_pooled"] = pooled[j].astype(np.float32)
        arrays = {name: np.stack([c[name] for c in clips]) for name in ("text", "text_mask", "text_pooled",
                                                                        "audio_pooled", "vision_pooled")}
        for modality in ("audio", "vision"):
            arrays[modality] = np.concatenate([c[modality] for c in clips])
            arrays[f"{modality}_offsets"] = np.concatenate([[0], np.cumsum([len(c[modality]) for c in clips])])
        return arrays

    def _features(self, split: str) -> dict[str, np.ndarray]:
        self.extractors()
        part = self.splits[split]
        inputs = {"clips": [e.meta["key"] for e in part["entries"]], "ids": part["ids"],
                  "tokenizer": self.tokenizer_name, "text_max_length": self.text_max_length,
                  "texts": hashlib.sha256("\x00".join(part["raw_text"]).encode()).hexdigest(),
                  "extractors": self._fingerprints}
        entry = self.store.get_or_build("frozen_features", inputs,
                                        lambda: (self._extract(split), {"split": split, "source": str(self.path)}))
        log.info("%s/%s: frozen extractor outputs from %s", self.path, split, entry.path)
        return entry.arrays()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load()
        for split, part in self.splits.items():
            self.features[split] = self._features(split)
            tokens = tokenize_cached(part["raw_text"], self.tokenizer_name, self.text_max_length, self.store.root)
            self.datasets[split] = FeatureClipDataset(self.features[split], part["ids"], part["raw_text"],
                                                      part["labels"], tokens)
        self._extractors = None  # not needed once the outputs are stored: free their (GPU) memory

    def prepare_data(self) -> None:
        super().prepare_data()
        self.setup()

    def data_facts(self) -> dict:
        self.setup()
        train = self.features["train"]
        return {**super().data_facts(), "audio_dim": int(train["audio"].shape[1]),
                "vision_dim": int(train["vision"].shape[1]), "text_dim": int(train["text"].shape[2])}


# ---------------------------------------------------------------------------------------------------
# A tiny synthetic raw release (tests, notebooks, benchmarks): mp4 files written with PyAV

#: the default rows of :func:`make_synthetic_raw`:
#: video_id, clip_id, text, label, label_T, label_A, label_V, mode, seconds
SYNTHETIC_ROWS = (
    ("vidA", "1", "i love this movie", 0.8, 0.6, 0.4, 0.2, "train", 1.0),
    ("vidA", "2", "it was boring", -0.6, -0.8, -0.2, 0.0, "train", 0.6),
    ("vidB", "1", "the plot is ok", 0.2, 0.0, 0.4, 0.2, "train", 0.8),
    ("vidB", "2", "terrible acting", -1.0, -1.0, -0.6, -0.4, "train", 0.5),
    ("vidC", "1", "great fun", 0.6, 0.8, 0.2, 0.4, "train", 0.7),
    ("vidC", "2", "not good", -0.4, -0.6, 0.0, -0.2, "valid", 0.6),
    ("vidD", "1", "so funny", 0.4, 0.6, 0.2, 0.0, "valid", 0.9),
    ("vidD", "2", "bad movie", -0.8, -0.6, -0.4, -0.2, "test", 0.5),
    ("vidE", "1", "nice story", 0.2, 0.4, 0.0, 0.2, "test", 0.6),
)


def write_synthetic_clip(path: str | Path, seconds: float = 1.0, fps: int = 25, tone: float = 440.0,
                         audio: bool = True, rate: int = 44_100, base: int = 0, width: int = 32,
                         height: int = 24) -> Path:
    """An mp4 (MPEG-4 video, AAC stereo audio) whose frame ``i`` is a grey image of brightness
    ``min(base + 10 i, 255)`` (so a sampled frame can be read back) and whose audio is a sine ``tone``;
    ``audio=False`` leaves the audio stream out."""
    import fractions

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt, video.bit_rate = width, height, "yuv420p", 4_000_000
        if audio:
            sound = out.add_stream("aac", rate=rate)
            sound.layout = "stereo"
        for i in range(int(round(seconds * fps))):
            image = np.full((height, width, 3), min(base + 10 * i, 255), np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio:
            wave = (0.5 * np.sin(2 * np.pi * tone * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(np.stack([wave[start:start + 1024]] * 2), format="fltp",
                                                   layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, fractions.Fraction(1, rate)
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


_POSITIVE = ("great", "lovely", "funny", "good", "nice", "brilliant")
_NEGATIVE = ("boring", "awful", "bad", "terrible", "dull", "sad")


def make_synthetic_raw(root: str | Path, clips: int | None = None, unimodal: bool = True, seed: int = 0,
                       splits: tuple[float, float] = (0.6, 0.2), width: int = 32, height: int = 24) -> Path:
    """Write a tiny raw release (``label.csv`` + ``Raw/<video_id>/<clip_id>.mp4``) under ``root``.

    ``clips=None`` writes :data:`SYNTHETIC_ROWS`. ``clips=n`` draws ``n`` clips whose unimodal labels
    are carried by their modality (text: positive or negative words; audio: the tone's pitch; vision:
    the frames' brightness) and ``label`` = their mean, so models can learn something; ``splits`` are
    the train and valid shares (the rest is test). ``unimodal=False`` leaves out ``label_T/_A/_V`` (a
    MOSI-like release); ``width`` x ``height``: the video's frame size."""
    import csv

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if clips is None:
        rows = list(SYNTHETIC_ROWS)
        tones = [200.0 + 50 * i for i in range(len(rows))]
        bases = [0] * len(rows)
    else:
        if isinstance(clips, bool) or not isinstance(clips, int) or clips < 6:
            raise ConfigError(f"make_synthetic_raw: clips must be an integer >= 6 (two per split), found {clips!r}")
        rng = np.random.default_rng(seed)
        n_train, n_valid = max(2, int(clips * splits[0])), max(2, int(clips * splits[1]))
        rows, tones, bases = [], [], []
        for i in range(clips):
            t, a, v = (np.round(rng.uniform(-1, 1, 3), 1) + 0.0).tolist()
            words = rng.choice(_POSITIVE if t >= 0 else _NEGATIVE, size=1 + int(abs(t) * 3))
            mode = "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
            rows.append((f"vid{i // 4:03d}", str(i % 4 + 1), "the movie was " + " ".join(words),
                         round((t + a + v) / 3, 2), t, a, v, mode, float(np.round(rng.uniform(0.5, 1.0), 2))))
            tones.append(300.0 + 250.0 * a)      # 50 .. 550 Hz
            bases.append(int(100 + 90 * v))      # brightness 10 .. 190 at the first frame
    header = ["video_id", "clip_id", "text", "label"] + (["label_T", "label_A", "label_V"] if unimodal else [])
    with open(root / "label.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + ["annotation", "mode"])
        for (video, clip, text, m, t, a, v, mode, seconds), tone, base in zip(rows, tones, bases):
            sentiment = "Positive" if m > 0 else "Negative" if m < 0 else "Neutral"
            writer.writerow([video, clip, text, m] + ([t, a, v] if unimodal else []) + [sentiment, mode])
            write_synthetic_clip(root / "Raw" / video / f"{clip}.mp4", seconds=seconds, tone=tone, base=base,
                                 width=width, height=height)
    return root
