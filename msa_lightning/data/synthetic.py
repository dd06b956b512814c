"""Synthetic feature files in exactly the field's schema, with each dataset's real shapes.

Every sample has a latent sentiment per modality (``z_t``, ``z_a``, ``z_v``); the multimodal label is
their mean plus noise, and the unimodal labels (CH-SIMS family) are the latents themselves, so a
model that reads any single modality beats the mean predictor, and one that fuses all three does
best. The signal is planted the way real features carry it:

* text: the transcript contains sentiment words ("great", "awful", ...) whose number and polarity
  follow ``z_t``; ``text_bert`` holds the matching BERT-uncased vocabulary ids;
* audio / vision: frames are Gaussian noise plus ``z`` times a fixed direction of the feature space,
  over a random valid length (zero padding after it, as in the real unaligned files).

Labels are rounded to multiples of 0.2 (MOSI-like) so exact zeros occur, as in the real data.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from msa_lightning.data.specs import SPLITS, get_spec

# BERT-uncased ids of a few words, so that a real BERT also sees meaningful tokens.
_POSITIVE = {"good": 2204, "great": 2307, "love": 2293, "funny": 6057, "awesome": 12476, "best": 2190}
_NEGATIVE = {"bad": 2919, "awful": 9643, "hate": 5223, "boring": 11771, "worst": 5409, "sad": 6517}
_NEUTRAL = {
    "the": 1996,
    "movie": 3185,
    "was": 2001,
    "it": 2009,
    "i": 1045,
    "think": 2228,
    "and": 1998,
    "story": 2466,
    "a": 1037,
    "really": 2428,
    "this": 2023,
    "actor": 3364,
    "just": 2074,
    "so": 2061,
}
CLS, SEP = 101, 102


def _text(rng: np.random.Generator, z: np.ndarray, length: int) -> tuple[list[str], np.ndarray]:
    n = len(z)
    pos_w, neg_w, neu_w = list(_POSITIVE), list(_NEGATIVE), list(_NEUTRAL)
    vocab = {**_POSITIVE, **_NEGATIVE, **_NEUTRAL}
    raw, bert = [], np.zeros((n, 3, length), dtype=np.float32)
    n_words = rng.integers(4, min(length - 2, 20), size=n)
    for i in range(n):  # data generation, not a forward pass
        words = list(rng.choice(neu_w, size=n_words[i]))
        k = int(round(min(abs(z[i]), 3.0)))  # stronger sentiment -> more sentiment words
        pool = pos_w if z[i] > 0 else neg_w
        for slot in rng.choice(len(words), size=min(k, len(words)), replace=False):
            words[slot] = str(rng.choice(pool))
        raw.append(" ".join(words).upper())
        ids = [CLS] + [vocab[w] for w in words] + [SEP]
        bert[i, 0, : len(ids)] = ids
        bert[i, 1, : len(ids)] = 1
    return raw, bert


def _frames(rng: np.random.Generator, z: np.ndarray, length: int, dim: int, lengths: np.ndarray) -> np.ndarray:
    direction = np.random.default_rng(dim).normal(size=dim)
    direction /= np.linalg.norm(direction)
    x = rng.normal(size=(len(z), length, dim)).astype(np.float32)
    x += (1.5 * z[:, None, None] * direction[None, None, :]).astype(np.float32)
    x[np.arange(length)[None, :] >= lengths[:, None]] = 0.0
    return x


def make_synthetic(
    dataset: str = "mosi",
    out: str | Path = "data/synthetic/mosi_unaligned.pkl",
    size_factor: float = 0.1,
    aligned: bool = False,
    seed: int = 0,
    bimodal_labels: bool = False,
) -> Path:
    """Write a synthetic feature file for ``dataset`` and return its path.

    Args:
        size_factor: fraction of the real split sizes (at least 8 samples per split).
        aligned: word-aligned layout (audio and vision at the text length, no length keys).
        bimodal_labels: also write ``regression_labels_AV/_AT/_VT`` (the extension keys).
    """
    spec = get_spec(dataset)
    rng = np.random.default_rng(seed)
    bound = spec.label_bound
    step = 0.2 if bound > 1 else 0.1
    t_audio = spec.text_len if aligned else spec.audio_len
    t_vision = spec.text_len if aligned else spec.vision_len
    data = {}
    for split, size in zip(SPLITS, spec.split_sizes):
        n = max(8, int(round(size * size_factor)))
        z = rng.uniform(-bound, bound, size=(3, n))  # latent per modality: text, audio, vision
        scale = bound / 3.0
        noise = rng.normal(scale=0.15 * scale, size=n)
        y = np.clip(np.round((z.mean(0) + noise) / step) * step, -bound, bound)
        raw, bert = _text(rng, z[0] / scale, spec.text_len)
        if aligned:
            a_len = v_len = np.full(n, spec.text_len)
        else:
            a_len = rng.integers(t_audio // 4, t_audio + 1, size=n)
            v_len = rng.integers(t_vision // 4, t_vision + 1, size=n)
        split_data = {
            "id": [f"synth{split}{i // 10:04d}$_${i % 10}" for i in range(n)],
            "raw_text": raw,
            "text_bert": bert,
            "audio": _frames(rng, z[1] / scale, t_audio, spec.audio_dim, a_len),
            "vision": _frames(rng, z[2] / scale, t_vision, spec.vision_dim, v_len),
            "regression_labels": y.astype(np.float32),
            "annotations": ["Positive" if v > 0 else "Negative" if v < 0 else "Neutral" for v in y],
        }
        if not aligned:
            split_data["audio_lengths"] = a_len.tolist()
            split_data["vision_lengths"] = v_len.tolist()
        if spec.unimodal_labels:
            for key, zi in zip("TAV", z):
                split_data[f"regression_labels_{key}"] = np.clip(np.round(zi / step) * step, -bound, bound).astype(
                    np.float32
                )
        if bimodal_labels:
            for key, (i, j) in {"AV": (1, 2), "AT": (1, 0), "VT": (2, 0)}.items():
                split_data[f"regression_labels_{key}"] = np.clip(
                    np.round((z[i] + z[j]) / 2 / step) * step, -bound, bound
                ).astype(np.float32)
        data[split] = split_data
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return out
