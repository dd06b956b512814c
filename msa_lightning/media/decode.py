"""Decoding media files: clips with PyAV (FFmpeg inside the wheel), folders of face frames, audio files.

* :func:`decode_clip`: a video clip's mono audio at ``sample_rate`` and its frames sampled at ``fps``
  (each output time shows the last source frame at or before it), resized to ``size x size``;
  an optional crop hook (``"package.module:function"``, :func:`load_crop`) runs before the resize;
* :func:`load_audio`: an audio (or video) file's mono samples, with libsndfile/librosa or PyAV.

Problems are one :class:`~msa_lightning.errors.DataError` naming the file.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from msa_lightning.errors import ClipError, ConfigError, DataError


def load_crop(name: str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The crop hook ``"package.module:function"`` (None: no crop)."""
    if name is None:
        return None
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(
            f"data.init_args.crop={name!r} cannot be imported ({type(err).__name__}: {err}); "
            "expected 'package.module:function'"
        ) from None


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    """``[H, W, 3] uint8`` -> ``[size, size, 3] uint8`` (bilinear with antialiasing)."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def frame_images(folder: str | Path) -> list[Path]:
    """The frame images of a folder, in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def decode_clip(
    path: str | Path,
    sample_rate: int = 16_000,
    fps: float = 10.0,
    size: int = 128,
    max_seconds: float | None = None,
    crop: Callable[[np.ndarray], np.ndarray] | None = None,
    frames_folder: str | Path | None = None,
    frames_fps: float = 25.0,
    require: tuple[str, ...] = ("audio", "video"),
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Decode one clip: ``frames [T, size, size, 3] uint8`` at ``fps`` and ``audio [S] float32``, mono
    at ``sample_rate``; frames from ``frames_folder`` (images at ``frames_fps``) instead of the video
    stream when given. A stream named in ``require`` must be there; one that is not required and absent
    comes back as None (an audio-only or video-only model does not need the other stream; at least one
    must be there). Raises :class:`DataError` naming the file for anything unreadable or empty."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: clip file not found")
    if frames_folder is not None and not Path(frames_folder).is_dir():
        raise DataError(f"{frames_folder}: frame folder not found")
    audio = frames = None
    try:
        with av.open(str(path)) as container:
            has_audio = bool(container.streams.audio)
            has_video = frames_folder is not None or bool(container.streams.video)
            for stream, present in (("audio", has_audio), ("video", has_video)):
                if not present and stream in require:
                    raise DataError(f"{path}: the clip has no {stream} stream")
            if not has_audio and not has_video:
                raise DataError(f"{path}: the clip has neither an audio nor a video stream")
            if has_audio:
                audio = _decode_audio(container, sample_rate, max_seconds)
        if frames_folder is not None:
            frames = _read_frame_folder(Path(frames_folder), frames_fps, fps, size, max_seconds, crop)
        elif has_video:
            with av.open(str(path)) as container:
                frames = _decode_frames(container, fps, size, max_seconds, crop)
    except DataError:
        raise
    except Exception as err:  # FFmpeg reports corrupt input with many error types
        raise DataError(f"{path}: cannot decode the clip ({type(err).__name__}: {err})") from None
    if any(x is not None and len(x) == 0 for x in (frames, audio)):
        n_frames, n_audio = (0 if x is None else len(x) for x in (frames, audio))
        raise DataError(f"{path}: the clip is empty ({n_frames} frames, {n_audio} audio samples)")
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


def decode_video_frames(path: str | Path, fps: float = 10.0, max_side: int = 480) -> np.ndarray:
    """A clip's frames ``[T, H, W, 3] uint8`` sampled and held at ``fps`` (as :func:`decode_clip`), at the
    video's own aspect ratio, scaled down so the longer side is at most ``max_side`` (face detectors need the
    true shape, not a square). A :class:`ClipError` (``unreadable_video``) naming the file when it cannot."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: the clip has no video stream", "unreadable_video")
            stream = container.streams.video[0]
            scale = min(1.0, max_side / max(stream.width, stream.height, 1))
            shape = (max(2, round(stream.width * scale)), max(2, round(stream.height * scale)))
            frames = _decode_frames(container, fps, shape, None, None)
    except ClipError:
        raise
    except Exception as err:  # FFmpeg reports corrupt input with many error types
        raise ClipError(f"{path}: cannot decode the video ({type(err).__name__}: {err})", "unreadable_video") from None
    if len(frames) == 0:
        raise ClipError(f"{path}: the video stream has no frames", "unreadable_video")
    return frames


def _decode_frames(container, fps: float, size: int | tuple[int, int], max_seconds: float | None, crop) -> np.ndarray:
    """Sample-and-hold at ``fps``: output ``k`` shows the last source frame whose time is <= k / fps. ``size``:
    a square side or ``(width, height)``."""
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or fps)
    limit = np.inf if max_seconds is None else int(round(max_seconds * fps))
    out: list[np.ndarray] = []
    held, held_time, held_image = None, 0.0, None
    width, height = (size, size) if isinstance(size, int) else size

    def image(frame) -> np.ndarray:
        if crop is None:
            return frame.to_ndarray(format="rgb24", width=width, height=height)
        return _resize(crop(frame.to_ndarray(format="rgb24")), width)

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
    return np.stack(out) if out else np.zeros((0, height, width, 3), np.uint8)


def _read_frame_folder(
    folder: Path, source_fps: float, fps: float, size: int, max_seconds: float | None, crop
) -> np.ndarray:
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
        decoded[i] = (
            frame.to_ndarray(format="rgb24", width=size, height=size)
            if crop is None
            else _resize(crop(frame.to_ndarray(format="rgb24")), size)
        )
    return np.stack([decoded[i] for i in chosen]) if count else np.zeros((0, size, size, 3), np.uint8)


#: what libsndfile (through librosa) decodes; other suffixes (VoxCeleb2's m4a: AAC) go to PyAV
LIBSNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def load_audio(path: str | Path, sample_rate: int = 22050) -> np.ndarray:
    """Mono waveform at ``sample_rate``: wav/flac/ogg/mp3 through librosa (libsndfile), falling back to PyAV
    when that fails; other files (m4a/AAC, which libsndfile cannot read and librosa's audioread only with an
    ffmpeg binary) through PyAV, whose wheel carries FFmpeg. A :class:`ClipError` (``unreadable_audio``)
    when nothing can decode it."""
    path = Path(path)
    if path.suffix.lower() not in LIBSNDFILE_SUFFIXES:
        return _checked(_decode_with_pyav(path, sample_rate), path)
    try:
        return _checked(_decode_with_librosa(path, sample_rate), path)
    except ClipError as first:
        try:
            return _checked(_decode_with_pyav(path, sample_rate), path)
        except ClipError as second:
            raise ClipError(f"{first}; {second}", "unreadable_audio") from None


def _checked(y: np.ndarray, path: Path) -> np.ndarray:
    if y.size == 0 or not np.isfinite(y).all():
        raise ClipError(f"{path}: empty or non-finite audio", "unreadable_audio")
    return y


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0][:200] if str(err) else ""


def _decode_with_librosa(path: Path, sample_rate: int) -> np.ndarray:
    import librosa

    try:
        with warnings.catch_warnings():  # the soundfile -> audioread fallback warns; a failure is reported below
            warnings.filterwarnings("ignore", message="PySoundFile failed", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*audioread", category=FutureWarning)
            y, _ = librosa.load(str(path), sr=sample_rate, mono=True)
    except Exception as err:  # soundfile/audioread/decoder errors come in many types
        raise ClipError(
            f"{path}: unreadable audio ({type(err).__name__}: {_first_line(err)})", "unreadable_audio"
        ) from None
    return y


def _decode_with_pyav(path: Path, sample_rate: int) -> np.ndarray:
    import av

    from msa_lightning.media.decode import _decode_audio

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ClipError(f"{path}: no audio stream", "unreadable_audio")
            return _decode_audio(container, sample_rate, None)
    except ClipError:
        raise
    except Exception as err:  # FFmpeg reports corrupt input with many error types
        raise ClipError(
            f"{path}: unreadable audio (PyAV {type(err).__name__}: {_first_line(err)})", "unreadable_audio"
        ) from None
