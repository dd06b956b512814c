"""Frame-level acoustic features with librosa: 33-d per frame, as CH-SIMS and SKESL use them.

A pitch column (``f0="pyin"``: log F0 from probabilistic YIN, 0 on unvoiced frames; ``f0="zcr"``: the
zero-crossing rate the SKESL authors' released scripts and the CH-SIMS files put there), 20 MFCCs (HTK mel
scale, as the released scripts) and 12 constant-Q chroma bins (:func:`audio_features`).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from msa_lightning.errors import ClipError

AUDIO_DIM = 33


def audio_features(
    y: np.ndarray,
    sample_rate: int = 22050,
    hop_length: int = 512,
    f0: Literal["pyin", "zcr"] = "pyin",
    f0_min: float = 60.0,
    f0_max: float = 600.0,
    htk_mel: bool = True,
) -> np.ndarray:
    """Frame-level features ``[T, 33]`` float32: pitch (1), MFCC (20), constant-Q chroma (12).

    Args:
        y: mono waveform.
        sample_rate, hop_length: frames are ``hop_length`` samples apart (centred frames, librosa's default).
        f0: ``pyin``: natural log of the fundamental frequency in Hz from probabilistic YIN searched in
            ``[f0_min, f0_max]``, 0 on frames it finds unvoiced (the paper's "log F0"); ``zcr``: the
            zero-crossing rate (the authors' released feature scripts).
        htk_mel: HTK mel scale for the MFCCs (the released scripts' setting).
    """
    import librosa

    if f0 not in ("pyin", "zcr"):
        raise ValueError(f"f0 must be 'pyin' or 'zcr', got {f0!r}")
    y = np.asarray(y, dtype=np.float32)
    if f0 == "pyin":
        hz, voiced, _ = librosa.pyin(y, fmin=f0_min, fmax=f0_max, sr=sample_rate, hop_length=hop_length)
        pitch = np.where(voiced & np.isfinite(hz), np.log(np.where(np.isfinite(hz), hz, 1.0)), 0.0)[None, :]
    else:
        pitch = librosa.feature.zero_crossing_rate(y, hop_length=hop_length)
    mfcc = librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=20, hop_length=hop_length, htk=htk_mel)
    with warnings.catch_warnings():  # the CQT's lowest octaves are computed on short decimated signals
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal", category=UserWarning)
        warnings.filterwarnings("ignore", message="Trying to estimate tuning from empty", category=UserWarning)
        chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate, hop_length=hop_length, n_chroma=12)
    frames = min(pitch.shape[1], mfcc.shape[1], chroma.shape[1])  # all centred: equal counts, kept safe
    out = np.concatenate([pitch[:, :frames], mfcc[:, :frames], chroma[:, :frames]], axis=0).T.astype(np.float32)
    if not np.isfinite(out).all():
        raise ClipError("non-finite audio features", "bad_features")
    return out
