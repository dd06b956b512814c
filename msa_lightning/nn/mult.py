"""Multimodal Transformer (MulT; Tsai et al., ACL 2019) as a reusable fusion component.

Three modalities ``l`` (text), ``a`` (audio), ``v`` (vision), each a padded sequence ``[B, T_m, D_m]``
with a mask ``[B, T_m]`` (True = valid):

1. a temporal 1D convolution (no bias) projects every modality to the common width ``dim``;
2. six cross-modal transformers, one per ordered pair: each target modality's sequence attends to
   the sequence of each other modality (``l<-a``, ``l<-v``, ``a<-l``, ``a<-v``, ``v<-l``, ``v<-a``);
3. for each target, the two cross-modal outputs are concatenated (width ``2 dim``) and passed
   through a self-attention transformer over time (the three "memory" transformers);
4. each memory output is read at its last valid time step; the three vectors concatenated
   (``6 dim``) go through the residual two-layer projection of the paper (ReLU) to ``fused``.

Every transformer is pre-norm (LayerNorm before attention and before the ReLU feed-forward, a final
LayerNorm), scales its inputs by ``sqrt(width)`` and, when ``positional_embedding`` is on (the
original MulT), adds sinusoidal position embeddings (positions 1..T, sine and cosine halves) to
queries and keys. MMSA's re-implementation, used for most reported numbers of the field, omits
them: ``positional_embedding=False``.

Padding: padded frames are zeroed before the convolution, are never attention keys, and are not
read out, so their content cannot change any output.

Dropouts as in the reference code (Tsai et al., ``MULTModel``): a cross-modal block's attention dropout is that of
its *source* modality, every memory block uses the text one (``memory_attn_dropout="text"``), and the raw text
sequence gets the embedding dropout before its projection (``text_dropout=None``). ``memory_attn_dropout="target"``
gives each memory block its target modality's instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msa_lightning.batch import MODALITIES
from msa_lightning.errors import DataError
from msa_lightning.nn.masking import gather_positions, lengths_to_mask

#: MulT's short key of each modality (the reference code's l, a, v; its module names use them)
MULT_KEY = dict(zip(MODALITIES, ("l", "a", "v")))
KEYS = tuple(MULT_KEY.values())
#: (target, source) of the six cross-modal transformers, in the reference's order
CROSS_PAIRS = (("l", "a"), ("l", "v"), ("a", "l"), ("a", "v"), ("v", "l"), ("v", "a"))


def sinusoidal_positions(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[length, dim]`` sinusoidal embeddings of positions ``1..length`` (sines, then cosines;
    a zero column when ``dim`` is odd)."""
    half = dim // 2
    step = math.log(10000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -step)
    angles = torch.arange(1, length + 1, device=device, dtype=torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.to(dtype)


class MulTLayer(nn.Module):
    """One pre-norm transformer layer; with ``context`` it is cross-modal (queries from ``x``)."""

    def __init__(self, dim: int, num_heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=attn_dropout, batch_first=True)
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, key_padding: torch.Tensor | None) -> torch.Tensor:
        q = self.norm_attn(x)
        kv = q if context is None else self.norm_attn(context)  # the reference normalises keys with the same norm
        attended, _ = self.attn(q, kv, kv, key_padding_mask=key_padding, need_weights=False)
        x = x + F.dropout(attended, self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.norm_ff(x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class MulTTransformer(nn.Module):
    """A stack of :class:`MulTLayer` with input scaling, optional positions, embedding dropout and a
    final LayerNorm. ``forward(x [B, T, D], x_mask, context [B, S, D] | None, context_mask)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        layers: int,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        positional_embedding: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.embed_dropout, self.positional_embedding = dim, embed_dropout, positional_embedding
        self.layers = nn.ModuleList(
            MulTLayer(dim, num_heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = x * math.sqrt(self.dim)
        if self.positional_embedding:
            x = x + sinusoidal_positions(x.shape[1], self.dim, x.device, x.dtype)
        return F.dropout(x, self.embed_dropout, self.training)

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self._embed(x)
        if context is None:
            keys, key_mask = None, x_mask
        else:
            keys, key_mask = self._embed(context), context_mask
        padding = ~key_mask.bool()
        for layer in self.layers:
            x = layer(x, keys, padding)
        return self.norm(x)


class MulT(nn.Module):
    """The Multimodal Transformer over three padded sequences (see the module docstring).

    Args:
        input_dims: feature sizes of (text, audio, vision).
        dim: common width of every modality after the projection (MMSA: 30; the paper: 40).
        num_heads: attention heads (``dim`` must be divisible by it).
        layers: depth of the cross-modal transformers; ``mem_layers`` that of the self-attention
            ones (default ``max(layers, 3)``, as the reference).
        kernel_sizes: temporal convolution widths of the projections (text, audio, vision).
        attn_dropout: attention dropout per modality (text, audio, vision).
        relu_dropout, res_dropout, embed_dropout: feed-forward, residual and input dropout.
        memory_attn_dropout: ``"text"`` (the reference: every memory transformer uses the text attention
            dropout) or ``"target"`` (each uses its target modality's).
        text_dropout: dropout on the raw text features before the projection (None: ``embed_dropout``, as the
            reference).
        out_dropout: dropout inside the residual output projection.
        positional_embedding: add sinusoidal positions (original MulT) or not (MMSA).
        modalities: the modalities fused, a subset of ``"lav"`` with at least two (TwoStepMSA's
            bimodal rows): each attends to the others, so a pair has two cross-modal and two memory
            transformers of width ``dim``; sizes of absent modalities in ``input_dims`` are ignored
            and their inputs to ``forward`` are None.

    ``forward`` returns a dict: ``fused [B, 6 dim]`` (after the residual projection), ``l``/``a``/``v``
    ``[B, 2 dim]`` (each memory transformer at its last valid step) and ``sequences`` (the memory
    transformers' outputs ``[B, T_m, 2 dim]``).
    """

    def __init__(
        self,
        input_dims: tuple[int, int, int] | list[int],
        dim: int = 30,
        num_heads: int = 5,
        layers: int = 5,
        mem_layers: int | None = None,
        kernel_sizes: tuple[int, int, int] | list[int] = (1, 1, 1),
        attn_dropout: tuple[float, float, float] | list[float] = (0.1, 0.0, 0.0),
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.25,
        memory_attn_dropout: str = "text",
        text_dropout: float | None = None,
        out_dropout: float = 0.0,
        positional_embedding: bool = True,
        modalities: str = "lav",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MulT width {dim} is not divisible by num_heads {num_heads}")
        self.modalities = tuple(m for m in KEYS if m in modalities)
        if len(self.modalities) < 2 or set(modalities) - set(KEYS):
            raise ValueError(f"MulT fuses two or three of {KEYS}, got modalities={modalities!r}")
        if memory_attn_dropout not in ("text", "target"):
            raise ValueError(f"memory_attn_dropout: expected 'text' or 'target', got {memory_attn_dropout!r}")
        width = (len(self.modalities) - 1) * dim  # a target's cross-modal outputs, concatenated
        self.dim, self.out_dropout = dim, out_dropout
        self.text_dropout = embed_dropout if text_dropout is None else text_dropout
        self.kernel_sizes = dict(zip(KEYS, kernel_sizes))
        self.proj = nn.ModuleDict(
            {
                m: nn.Conv1d(d, dim, kernel_size=k, padding=0, bias=False)
                for m, d, k in zip(KEYS, input_dims, kernel_sizes)
                if m in self.modalities
            }
        )
        dropout = dict(zip(KEYS, attn_dropout))
        common = dict(
            relu_dropout=relu_dropout,
            res_dropout=res_dropout,
            embed_dropout=embed_dropout,
            positional_embedding=positional_embedding,
        )
        self.cross = nn.ModuleDict(
            {
                f"{t}_with_{s}": MulTTransformer(dim, num_heads, layers, dropout[s], **common)
                for t, s in CROSS_PAIRS
                if t in self.modalities and s in self.modalities
            }
        )
        self.memory = nn.ModuleDict(
            {
                m: MulTTransformer(
                    width,
                    num_heads,
                    mem_layers or max(layers, 3),
                    dropout["l" if memory_attn_dropout == "text" else m],
                    **common,
                )
                for m in self.modalities
            }
        )
        self.out_dim = len(self.modalities) * width
        self.proj1 = nn.Linear(self.out_dim, self.out_dim)
        self.proj2 = nn.Linear(self.out_dim, self.out_dim)

    def _project(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero the padding, convolve over time (valid convolution), shrink the mask to match."""
        x = (x * mask[..., None].to(x.dtype)).transpose(1, 2)
        if m == "l":
            x = F.dropout(x, self.text_dropout, self.training)
        k = self.kernel_sizes[m]
        if x.shape[-1] < k:
            raise DataError(f"MulT: the {m!r} sequences have {x.shape[-1]} frames, fewer than the kernel size {k}")
        lengths = (mask.sum(1) - (k - 1)).clamp(min=1)
        return self.proj[m](x).transpose(1, 2), lengths_to_mask(lengths, x.shape[-1] - k + 1)

    def forward(
        self,
        text: torch.Tensor | None,
        audio: torch.Tensor | None,
        vision: torch.Tensor | None,
        text_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        vision_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        inputs = {"l": (text, text_mask), "a": (audio, audio_mask), "v": (vision, vision_mask)}
        seq, mask = {}, {}
        for m, (x, x_mask) in inputs.items():
            if m not in self.modalities:
                continue
            x_mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if x_mask is None else x_mask.bool()
            seq[m], mask[m] = self._project(m, x, x_mask)
        out: dict[str, torch.Tensor] = {"sequences": {}}
        for t in self.modalities:
            sources = [s for s in self.modalities if s != t]
            crossed = torch.cat([self.cross[f"{t}_with_{s}"](seq[t], mask[t], seq[s], mask[s]) for s in sources], -1)
            memory = self.memory[t](crossed, mask[t])
            out["sequences"][t] = memory
            last = (mask[t].sum(1) - 1).clamp(min=0)
            out[t] = gather_positions(memory, last[:, None])[:, 0]
        joint = torch.cat([out[m] for m in self.modalities], dim=-1)
        hidden = F.dropout(F.relu(self.proj1(joint)), self.out_dropout, self.training)
        out["fused"] = self.proj2(hidden) + joint
        return out

    def forward_batch(self, batch, text: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Run on a standard feature-file :class:`~msa_lightning.batch.MSABatch`: audio/vision frames
        with their lengths, and text as ``text`` (e.g. a text encoder's last hidden state) or the
        file's precomputed ``text_feats``, masked by ``text_mask``."""
        text = batch.text_feats if text is None else text
        missing = [
            name
            for name, v in (
                ("text features", text),
                ("text_mask", batch.text_mask),
                ("audio", batch.audio),
                ("audio_lengths", batch.audio_lengths),
                ("vision", batch.vision),
                ("vision_lengths", batch.vision_lengths),
            )
            if v is None
        ]
        if missing:
            raise DataError(f"MulT needs {', '.join(missing)} in the batch, which the DataModule did not load")
        return self(
            text,
            batch.audio,
            batch.vision,
            batch.text_mask.bool(),
            lengths_to_mask(batch.audio_lengths, batch.audio.shape[1]),
            lengths_to_mask(batch.vision_lengths, batch.vision.shape[1]),
        )
