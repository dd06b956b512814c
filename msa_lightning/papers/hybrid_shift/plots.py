"""Analyses of Lin & Hu (TMM 2024) for a trained :class:`HybridShiftModule` (``msa plot hybrid-shift``).

* Fig. 7 — representations with and without MSG, embedded in 2-D and coloured by sentiment (green
  dots positive, grey diamonds neutral, red crosses negative): text ``M_t*`` of the last layer with
  MSG-T vs the same layers run on the unshifted ``F_t`` (same weights, MSG-T bypassed); acoustic
  ``F_a`` (RNN) vs ``M_a*`` (after MSG-A); visual ``F_v`` vs ``M_v*``. Text is read at the ``[CLS]``
  position, audio/vision are averaged over the valid positions.
* Fig. 8 — MBA attention maps ``p_att`` (Eq. 15) of text with audio and with vision, for chosen
  utterances (default: the most positive, the most neutral and the most negative of the split).

The 2-D embedding is scikit-learn's t-SNE (:func:`tsne`; inputs wider than 50 are first reduced to
50 dimensions by PCA, as is customary); ``--method pca`` gives a PCA projection instead (fast,
deterministic). Figures are PNGs.

The data section is read through the ``msa`` command's own parser (the config file plus any
``--data.*``/``--model.*`` overrides given after the known options), so a config that trains also plots.

Usage::

    msa plot hybrid-shift --ckpt runs/.../best-07.ckpt --config configs/hybrid_shift/mosi_bert.yaml \\
        --data-path /data/MOSI --out plots/hybrid_shift [--utterances ID ...] [--method pca] [--data.init_args.X=...]
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from msa_lightning.errors import ConfigError
from msa_lightning.nn.masking import masked_mean

#: (title, key of the representation without MSG, key with MSG)
PAIRS = (("text", "M_t_unshifted", "M_t"), ("audio", "F_a", "M_a"), ("vision", "F_v", "M_v"))


# ---------------------------------------------------------------------------------------------- embeddings
def pca(x: torch.Tensor, dim: int = 2) -> np.ndarray:
    """Projection of ``x [N, D]`` on its ``dim`` leading principal components."""
    from sklearn.decomposition import PCA

    return PCA(n_components=dim).fit_transform(x.detach().double().cpu().numpy())


def tsne(x: torch.Tensor, dim: int = 2, perplexity: float = 30.0, iters: int = 500, seed: int = 0) -> np.ndarray:
    """scikit-learn's t-SNE of ``x [N, D]`` (standardised; PCA to 50 dimensions first when wider)
    to ``[N, dim]``; ``perplexity`` is capped at ``(N - 1) / 3`` for small sets."""
    from sklearn.manifold import TSNE

    x = x.detach().double().cpu()
    n = x.shape[0]
    if n < 4:
        raise ConfigError(f"t-SNE needs at least 4 points, got {n} (use more utterances, or --method pca)")
    x = ((x - x.mean(0)) / x.std(0).clamp(min=1e-8)).numpy()
    if x.shape[1] > 50:
        x = pca(torch.from_numpy(x), 50)
    return TSNE(
        n_components=dim,
        perplexity=min(perplexity, (n - 1) / 3.0),
        max_iter=max(250, iters),
        init="pca",
        random_state=seed,  # exact for small sets, Barnes-Hut where exact would take minutes
        method="exact" if n <= 1000 else "barnes_hut",
    ).fit_transform(x)


def embed_2d(x: torch.Tensor, method: str = "tsne", **kwargs) -> np.ndarray:
    if method == "pca":
        return pca(x, 2)
    if method == "tsne":
        return tsne(x, 2, **kwargs)
    raise ValueError(f"unknown embedding method {method!r}; expected 'tsne' or 'pca'")


# ---------------------------------------------------------------------------------------------- collection
@torch.no_grad()
def collect(module, loader, keep_ids: set[str] | None = None, max_samples: int | None = None) -> dict:
    """Run the model over ``loader`` and gather per-utterance vectors of :data:`PAIRS`, labels, ids,
    and, for the utterances in ``keep_ids``, the MBA maps ``p_att`` cropped to their valid tokens."""
    net = getattr(module, "net", module)
    net.eval()
    device = next(net.parameters()).device
    vectors: dict[str, list[torch.Tensor]] = {}
    labels, ids, texts, maps = [], [], [], {}
    seen = 0
    for batch in loader:
        batch = batch.to(device)
        out = net(batch, unshifted_text=True)
        mask, index = out.extras["mask"], out.extras["pool_index"]
        p_att = out.group("p_att")
        for name, seq in out.features.items():
            if seq.dim() != 3:  # the fused vector: not one of the streams of Fig. 7
                continue
            if name.endswith("_t") or name == "M_t_unshifted":  # text: the [CLS] position
                vec = seq[torch.arange(len(seq), device=seq.device), index]
            else:  # audio/vision: mean over valid positions
                vec = masked_mean(seq, mask)
            vectors.setdefault(name, []).append(vec.float().cpu())
        labels.append(batch.labels["M"].float().cpu())
        ids.extend(batch.ids)
        texts.extend(batch.raw_text)
        if keep_ids:
            for row, uid in enumerate(batch.ids):
                if uid in keep_ids:
                    valid = mask[row].nonzero().squeeze(1)
                    lo, hi = int(valid.min()), int(valid.max()) + 1
                    maps[uid] = {
                        "p_att": {o: p[row, lo:hi, lo:hi].float().cpu() for o, p in p_att.items()},
                        "token_ids": batch.text_ids[row, lo:hi].cpu().tolist(),
                        "label": float(batch.labels["M"][row]),
                        "raw_text": batch.raw_text[row] if batch.raw_text else "",
                    }
        seen += len(batch)
        if max_samples is not None and seen >= max_samples:
            break
    return {
        "vectors": {k: torch.cat(v) for k, v in vectors.items()},
        "labels": torch.cat(labels),
        "ids": ids,
        "raw_text": texts,
        "maps": maps,
    }


def choose_utterances(ids: list[str], labels: torch.Tensor) -> list[str]:
    """The most positive, the most neutral (closest to 0) and the most negative utterance."""
    picks = [int(labels.argmax()), int(labels.abs().argmin()), int(labels.argmin())]
    return list(dict.fromkeys(ids[i] for i in picks))


# ---------------------------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_representations(collected: dict, out: Path, method: str = "tsne", **embed_kwargs) -> Path:
    """Fig. 7: a 2 x k grid (rows: without / with MSG; columns: the modalities present)."""
    plt = _pyplot()
    vectors, labels = collected["vectors"], collected["labels"]
    pairs = [p for p in PAIRS if p[1] in vectors and p[2] in vectors]
    if not pairs:
        raise ConfigError("the model has no stream with an MSG to compare (no text/audio/vision representations)")
    fig, axes = plt.subplots(2, len(pairs), figsize=(4.2 * len(pairs), 8.0), squeeze=False)
    groups = (
        (labels > 0, "positive", "tab:green", "o"),
        (labels == 0, "neutral", "tab:gray", "D"),
        (labels < 0, "negative", "tab:red", "x"),
    )
    for col, (title, without, with_msg) in enumerate(pairs):
        for row, (key, tag) in enumerate(((without, "without MSG"), (with_msg, "with MSG"))):
            xy = embed_2d(vectors[key], method, **embed_kwargs)
            ax = axes[row][col]
            for sel, name, color, marker in groups:
                sel = sel.numpy()
                if sel.any():
                    ax.scatter(xy[sel, 0], xy[sel, 1], s=10, c=color, marker=marker, label=name, alpha=0.7)
            ax.set_title(f"{title}: {key} ({tag})", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(f"Representations with and without MSG ({method})")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def token_labels(token_ids: list[int], tokenizer=None, raw_text: str = "") -> list[str]:
    """Axis labels: the tokenizer's tokens; without one, the transcript's words when they match the
    tokens one to one between ``[CLS]`` and ``[SEP]`` (as in the stored ids of short words), else ids."""
    if tokenizer is not None:
        return list(tokenizer.convert_ids_to_tokens(token_ids))
    words = raw_text.lower().split()
    if len(words) == len(token_ids) - 2:
        return ["[CLS]", *words, "[SEP]"]
    return [str(i) for i in token_ids]


def plot_p_att(uid: str, entry: dict, out: Path, tokenizer=None) -> Path:
    """Fig. 8: ``p_att`` of text with each partner modality for one utterance (valid tokens only)."""
    plt = _pyplot()
    maps = entry["p_att"]
    if not maps:
        raise ConfigError("the model has no MBA (use_mba off, or no MSG-A/MSG-V to read it): no p_att to plot")
    names = token_labels(entry["token_ids"], tokenizer, entry["raw_text"])
    size = max(4.0, 0.28 * len(names) + 2)
    fig, axes = plt.subplots(1, len(maps), figsize=(size * len(maps), size), squeeze=False)
    for ax, (partner, p) in zip(axes[0], sorted(maps.items())):
        scale = max(float(p.abs().max()), 1e-6)  # p_att is in [-1, 1]; use the map's own range
        im = ax.imshow(p.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"p_att text-{partner}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{uid} (label {entry['label']:+.2f})\n{entry['raw_text'][:100]}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_hybrid_shift(
    module,
    datamodule,
    out_dir: str | Path,
    split: str = "test",
    utterances: list[str] | None = None,
    method: str = "tsne",
    max_samples: int | None = None,
    tokenizer: str | None = None,
    perplexity: float = 30.0,
    iters: int = 500,
    seed: int = 0,
) -> list[Path]:
    """Write ``representations.png`` (Fig. 7) and ``p_att_<id>.png`` per utterance (Fig. 8) to
    ``out_dir`` and return their paths. ``tokenizer`` names the tokenizer used to print tokens on the
    heatmaps' axes (default: the datamodule's, else the model's; token ids if neither can be loaded)."""
    out_dir = Path(out_dir)
    datamodule.setup("test")
    loader = {
        "train": datamodule.train_dataloader,
        "valid": datamodule.val_dataloader,
        "test": datamodule.test_dataloader,
    }[split]()
    if not utterances:  # first pass over labels only, to pick positive / neutral / negative examples
        arrays = datamodule.splits[split]
        utterances = choose_utterances(list(arrays.ids), torch.tensor(np.array(arrays.labels["M"], dtype=np.float32)))
    collected = collect(module, loader, set(utterances), max_samples)
    missing = [u for u in utterances if u not in collected["maps"]]
    if missing:
        raise ConfigError(f"--utterances: {len(missing)} id(s) not found in split {split!r}: {missing[:5]}")
    paths = [
        plot_representations(
            collected,
            out_dir / "representations.png",
            method,
            **({"perplexity": perplexity, "iters": iters, "seed": seed} if method == "tsne" else {}),
        )
    ]
    hparams = getattr(module, "hparams", {})
    tok = _load_tokenizer(tokenizer or getattr(datamodule, "tokenizer_name", None) or hparams.get("text_model"))
    if getattr(getattr(module, "net", module), "mba", None):
        for uid in utterances:
            paths.append(
                plot_p_att(
                    uid, collected["maps"][uid], out_dir / f"p_att_{re.sub(r'[^A-Za-z0-9_.-]', '_', uid)}.png", tok
                )
            )
    return paths


def _load_tokenizer(name: str | None):
    if not name:
        return None
    from msa_lightning.nn.pretrained import (
        TINY_MODELS,
        PretrainedNotAvailable,
        load_tokenizer,
    )

    if name in TINY_MODELS:  # the stored ids are BERT-uncased ids, not the tiny vocabulary
        return None
    try:
        return load_tokenizer(name)
    except (PretrainedNotAvailable, OSError, ValueError):
        return None
