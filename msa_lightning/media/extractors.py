"""Per-clip acoustic and visual feature extractors, named as ``msa features extract`` names them.

Each extractor is described by a settings dict (plain JSON: it keys the store, goes into the feature file's
manifest and, through it, into a checkpoint, so ``msa infer`` extracts new videos the same way):

audio (``--audio``):
  * ``librosa``: the 33-d log F0 (or zero-crossing rate) + 20 MFCC + 12 constant-Q chroma of CH-SIMS and SKESL,
    :func:`msa_lightning.media.acoustic.audio_features`, the one implementation ``msa pretrain-data build`` uses;
  * ``opensmile``: audEERING's openSMILE (the ``opensmile`` package, its binary inside the wheel; the optional
    extra ``msa_lightning[opensmile]``), eGeMAPS v02 low-level descriptors, 25-d at 100 frames/s: the audio
    features of CH-SIMS v2;
  * any other value: a Hugging Face speech model of the HuBERT / wav2vec 2.0 family by name or local folder
    (``tiny-hubert`` builds a small random one), its last layer's frames (50/s), frozen.

vision (``--vision``):
  * ``dlib``: the built-in face extractor (:mod:`msa_lightning.media.face`), 140-d at ``fps`` frames/s;
  * ``openface:DIR``: OpenFace 2.x CSVs (:mod:`msa_lightning.media.openface`), ``DIR/<video_id>/<clip_id>.csv``
    (or ``DIR/<video_id>_<clip_id>.csv``), 709-d (427-d for OpenFace 2.0 files), at the video's frame rate.

A clip whose audio is silent (or which has no audio stream) or in which no face is ever found is not dropped:
its features are zeros of the clip's length and the extractor returns a ``status`` the caller records by id.
Files that cannot be read raise :class:`~msa_lightning.errors.ClipError` with a short reason.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from msa_lightning.errors import ClipError, ConfigError, MSAError

#: a waveform whose peak stays below this is silence (zero-filled, not analysed: pitch and chroma are undefined)
SILENCE_PEAK = 1e-4
OPENSMILE_DIM = 25
SPEECH_MODEL_RATE = 16_000
#: ``msa features extract``'s extractors when ``--audio`` / ``--vision`` are not given
DEFAULT_AUDIO, DEFAULT_VISION = "librosa", "dlib"


# ---------------------------------------------------------------------------------------------- settings
def audio_settings(name: str, f0: str = "pyin", sample_rate: int = 22050, hop_length: int = 512) -> dict:
    """The settings of ``--audio NAME`` (module docstring), with its feature size ``dim``."""
    if name == "librosa":
        from msa_lightning.media.acoustic import AUDIO_DIM

        if f0 not in ("pyin", "zcr"):
            raise ConfigError(f"--f0: expected pyin or zcr, found {f0!r}")
        return {
            "extractor": "librosa",
            "f0": f0,
            "sample_rate": int(sample_rate),
            "hop_length": int(hop_length),
            "dim": AUDIO_DIM,
            "frame_rate": sample_rate / hop_length,  # centred frames: frame k at k * hop / rate seconds
        }
    if name == "opensmile":
        smile = _opensmile()
        return {
            "extractor": "opensmile",
            "feature_set": "eGeMAPSv02",
            "feature_level": "LowLevelDescriptors",
            "sample_rate": SPEECH_MODEL_RATE,
            "dim": len(smile.feature_names),
            "frame_rate": 100.0,  # eGeMAPS low-level descriptors every 10 ms
        }
    encoder = _speech_model(name)
    stride = int(np.prod(encoder.model.config.conv_stride))  # samples between output frames (320 for HuBERT)
    return {
        "extractor": "speech_model",
        "model": name,
        "sample_rate": SPEECH_MODEL_RATE,
        "dim": encoder.hidden_size,
        "frame_rate": SPEECH_MODEL_RATE / stride,
    }


def vision_settings(name: str, fps: float = 10.0, max_side: int = 480, upsample: int = 0) -> dict:
    """The settings of ``--vision NAME`` (module docstring), with its feature size ``dim``: for OpenFace, the
    layout all CSVs under the folder share (one error naming two files of different layouts)."""
    if name == "dlib":
        from msa_lightning.media.face import FACE_DIM

        if not fps > 0:
            raise ConfigError(f"--fps: expected a positive number, found {fps!r}")
        return {
            "extractor": "dlib",
            "fps": float(fps),
            "max_side": int(max_side),
            "upsample": int(upsample),
            "dim": FACE_DIM,
        }
    if name.startswith("openface:"):
        from msa_lightning.media.openface import header_layout, layout_dim

        folder = Path(name.partition(":")[2]).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"--vision {name}: folder {folder} not found")
        layouts: dict[str, Path] = {}
        refused: ClipError | None = None
        for csv in sorted(folder.rglob("*.csv")):
            try:
                layouts.setdefault(header_layout(csv), csv)
            except ClipError as err:  # that clip is reported as bad when it is extracted
                refused = refused or err
        if not layouts and refused is not None:  # no usable CSV at all: say why once, before any work
            raise ConfigError(f"--vision {name}: {refused}")
        if len(layouts) > 1:
            (a, fa), (b, fb) = list(layouts.items())[:2]
            raise ConfigError(
                f"--vision {name}: the CSVs mix OpenFace layouts: {fa} is {a} ({layout_dim(a)} features), {fb} is "
                f"{b} ({layout_dim(b)}); extract every clip with the same OpenFace release and flags"
            )
        layout = next(iter(layouts), "openface2")
        return {"extractor": "openface", "dir": str(folder.resolve()), "layout": layout, "dim": layout_dim(layout)}
    raise ConfigError(f"--vision {name}: expected 'dlib' (built in) or 'openface:DIR' (OpenFace 2.x CSVs)")


def known_dims(audio: str = DEFAULT_AUDIO, vision: str = DEFAULT_VISION) -> tuple[int | None, int | None]:
    """The feature sizes ``--audio`` / ``--vision`` give where they are known without loading a model or reading
    a video: librosa 33, opensmile 25, dlib 140, ``openface:DIR`` its CSVs' layout (their headers); None for a
    speech model or an OpenFace folder that cannot be read yet."""
    from msa_lightning.media.acoustic import AUDIO_DIM
    from msa_lightning.media.face import FACE_DIM

    audio_dim = {"librosa": AUDIO_DIM, "opensmile": OPENSMILE_DIM}.get(audio)
    vision_dim = FACE_DIM if vision == "dlib" else None
    if vision.startswith("openface:"):
        try:
            vision_dim = vision_settings(vision)["dim"]
        except ConfigError:
            vision_dim = None
    return audio_dim, vision_dim


def describe(settings: dict) -> str:
    """One phrase naming an extractor and its size, for messages."""
    what = {
        "librosa": lambda s: f"librosa (f0 {s['f0']}, {s['sample_rate']} Hz, hop {s['hop_length']})",
        "opensmile": lambda s: f"opensmile {s['feature_set']} {s['feature_level']}",
        "speech_model": lambda s: f"speech model {s['model']}",
        "dlib": lambda s: f"dlib face landmarks ({s['fps']:g} fps)",
        "openface": lambda s: f"OpenFace {s['layout']} CSVs",
    }[settings["extractor"]](settings)
    return f"{what}, {settings['dim']}-d"


# ---------------------------------------------------------------------------------------------- optional backends
@lru_cache(maxsize=1)
def _opensmile():
    try:
        import opensmile
    except ImportError:
        raise ConfigError(
            "--audio opensmile needs the optional extra: pip install 'msa_lightning[opensmile]' (the opensmile "
            "package, openSMILE's binary inside its wheel)"
        ) from None
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )


@lru_cache(maxsize=2)
def _speech_model(name: str):
    from msa_lightning.nn.audio_encoder import AudioEncoder

    try:
        return AudioEncoder(name, finetune=False).eval()
    except MSAError as err:  # a typo, a model not downloaded, a model of another kind
        raise ConfigError(
            f"--audio {name}: expected librosa, opensmile or a Hugging Face speech model (name or folder); {err}"
        ) from None


# ---------------------------------------------------------------------------------------------- extraction
def extract_audio(path: str | Path, settings: dict) -> tuple[np.ndarray, str | None]:
    """Audio features ``[T, dim]`` float32 of a clip's sound track and its status: None, ``silent`` or
    ``no_audio`` (zero-filled)."""
    from msa_lightning.media.decode import load_audio

    rate = settings["sample_rate"]
    try:
        y = load_audio(path, rate)
    except ClipError as err:
        if "no audio stream" not in str(err):
            raise
        return np.zeros((1, settings["dim"]), np.float32), "no_audio"
    silent = bool(np.abs(y).max() < SILENCE_PEAK)
    kind = settings["extractor"]
    if kind == "librosa":
        from msa_lightning.media.acoustic import audio_features

        if silent:  # pitch and chroma are undefined on silence: zeros, one per centred frame
            return np.zeros((1 + len(y) // settings["hop_length"], settings["dim"]), np.float32), "silent"
        return audio_features(y, rate, settings["hop_length"], settings["f0"]), None
    if kind == "opensmile":
        features = np.nan_to_num(_opensmile().process_signal(y, rate).to_numpy(np.float32))
    else:
        import torch

        with torch.inference_mode():
            sequence, mask, _ = _speech_model(settings["model"])(torch.from_numpy(y)[None])
        features = sequence[0][mask[0]].float().numpy()
    return (np.zeros_like(features), "silent") if silent else (features, None)


def openface_file(folder: str | Path, video_id: str, clip_id: str) -> Path:
    """A clip's OpenFace CSV under ``folder``: ``<video_id>/<clip_id>.csv``, else ``<video_id>_<clip_id>.csv``."""
    folder = Path(folder)
    nested = folder / video_id / f"{clip_id}.csv"
    return nested if nested.is_file() else folder / f"{video_id}_{clip_id}.csv"


def extract_vision(
    video: str | Path, settings: dict, csv: str | Path | None = None
) -> tuple[np.ndarray, int, str | None, float]:
    """Visual features ``[T, dim]`` float32, the number of frames without a face, the status (None or ``no_face``:
    every frame zero) and the frames per second. ``csv``: the clip's OpenFace file (for ``openface`` settings)."""
    if settings["extractor"] == "openface":
        from msa_lightning.media.openface import read_openface

        if csv is None or not Path(csv).is_file():
            raise ClipError(f"{csv}: no OpenFace CSV for this clip", "missing_openface")
        frames = read_openface(csv, layout=settings["layout"], allow_no_face=True, require="this feature file")
        features, found, rate = frames.features, frames.success, frames.frame_rate
    else:
        from msa_lightning.media.decode import decode_video_frames
        from msa_lightning.media.face import face_features

        images = decode_video_frames(video, settings["fps"], settings["max_side"])
        features, found = face_features(images, settings["upsample"])
        rate = settings["fps"]
    missing = int((~found).sum())
    return features, missing, None if found.any() else "no_face", rate
