"""Video Swin Transformer (Liu et al., CVPR 2022) in torch + einops: the visual extractor of TwoStepMSA.

The architecture and parameter names follow torchvision's ``SwinTransformer3d`` (``swin3d_t``), so
torchvision's Kinetics-400 checkpoint loads strictly and reproduces its outputs; the official Video
Swin checkpoint (``SwinTransformer3D`` of the authors' mmaction2 repository) loads through
:func:`official_to_torchvision` (key mapping below). torchvision itself is not importable next to the
CPU torch of this suite, hence this module.

Shapes: a video is ``[B, C, T, H, W]`` (float, normalised); tokens inside the network are
``[B, T', H', W', D]`` with ``T' = ceil(T / 2)``, ``H' = ceil(H / 4)`` ... after the patch embedding,
and ``H, W`` halved by each patch merging.

Behaviour kept from the reference implementation on purpose (a checkpoint expects it):

- sizes not divisible by the patch or the window are zero-padded at the end; the padded zero tokens
  are attended to like any other token (only the shifted-window regions are masked, with -100);
- a window larger than the feature map shrinks to the map's size along that axis and that axis is not
  shifted; the relative position bias of a shrunk window takes the top-left ``vol x vol`` block of
  the full window's index (as both reference implementations do).

Extension (not in the references): an optional ``frame_mask [B, T]`` for batches of clips padded to a
common length. Padded frames are zeroed before the patch embedding (like the reference's own padding)
and their tokens are excluded as attention keys and from pooling, so the content of padded frames
cannot change any valid output. With no mask (or an all-true one) the result is the reference's.
The *amount* of padding still matters a little, as in the reference: the batch's length decides the
zero tokens that fill the last temporal window and whether windows shrink to a short map, so a clip
gives slightly different features alone and in a long batch (group clips of similar length).

Weights: ``msa weights convert-swin3d FILE.pth --out DIR`` (:func:`convert_swin3d`) checks torchvision's
published ``swin3d_t/s/b`` state dicts (or the official ones) key by key against :data:`CONFIGS` and writes
``DIR/model.safetensors`` + ``DIR/config.json``; every loader here takes that folder. A pretrained
architecture without weights is refused unless random weights are asked for (:func:`check_video_weights`).

Official Video Swin key mapping (:func:`official_to_torchvision`), ``i`` = stage, ``j`` = block::

    backbone.patch_embed.proj.*              -> patch_embed.proj.*
    backbone.patch_embed.norm.*              -> patch_embed.norm.*
    backbone.layers.i.blocks.j.norm1/attn/norm2.*  -> features.(2i).j.norm1/attn/norm2.*
    backbone.layers.i.blocks.j.mlp.fc1.*     -> features.(2i).j.mlp.0.*
    backbone.layers.i.blocks.j.mlp.fc2.*     -> features.(2i).j.mlp.3.*
    backbone.layers.i.downsample.reduction.* -> features.(2i+1).reduction.*
    backbone.layers.i.downsample.norm.*      -> features.(2i+1).norm.*
    backbone.norm.*                          -> norm.*
    cls_head.fc_cls.*                        -> head.*

(The attention's ``relative_position_bias_table``, ``relative_position_index``, ``qkv`` and ``proj``
keep their names.) The official checkpoints expect frames normalised with mean
(123.675, 116.28, 103.53) / std (58.395, 57.12, 57.375) on the 0-255 scale, which equals torchvision's
(0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) on the 0-1 scale.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange
from torch import nn

from msa_lightning.errors import ConfigError, MSAError
from msa_lightning.nn.masking import masked_mean

#: Architectures by name: torchvision's ``swin3d_t/s/b`` and a tiny one for tests and benchmarks.
CONFIGS: dict[str, dict] = {
    "swin3d_t": dict(
        patch_size=(2, 4, 4),
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=(8, 7, 7),
        stochastic_depth_prob=0.1,
    ),
    "swin3d_s": dict(
        patch_size=(2, 4, 4),
        embed_dim=96,
        depths=(2, 2, 18, 2),
        num_heads=(3, 6, 12, 24),
        window_size=(8, 7, 7),
        stochastic_depth_prob=0.1,
    ),
    "swin3d_b": dict(
        patch_size=(2, 4, 4),
        embed_dim=128,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        window_size=(8, 7, 7),
        stochastic_depth_prob=0.1,
    ),
    "tiny-swin3d": dict(
        patch_size=(2, 4, 4),
        embed_dim=16,
        depths=(2, 1, 2, 1),
        num_heads=(1, 2, 2, 4),
        window_size=(2, 3, 3),
        stochastic_depth_prob=0.0,
    ),
}

#: Frame normalisation of the Kinetics-400 checkpoints (0-1 scale).
KINETICS_MEAN = (0.485, 0.456, 0.406)
KINETICS_STD = (0.229, 0.224, 0.225)

_SHIFT_MASK_VALUE = -100.0  # what the reference adds between tokens of different shifted regions


def _stochastic_depth(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole residual branches per sample ("row" mode), rescaling the kept ones."""
    if not training or p == 0.0:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


def _effective_window(size: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> tuple[list[int], list[int]]:
    """A window no larger than the map; axes the window covers entirely are not shifted."""
    window, shift = list(window), list(shift)
    for i in range(3):
        if size[i] <= window[i]:
            window[i], shift[i] = size[i], 0
    return window, shift


def _region_ids(size: int, window: int, shift: int, device) -> torch.Tensor:
    """Which of the three shifted regions (0, 1, 2) each position of a padded axis falls in after the
    cyclic shift; a single region when the axis is not shifted."""
    idx = torch.arange(size, device=device)
    if shift == 0:
        return torch.zeros_like(idx)
    return (idx >= size - window).long() + (idx >= size - shift).long()


def shifted_window_mask(padded: Sequence[int], window: Sequence[int], shift: Sequence[int], device) -> torch.Tensor:
    """``[num_windows, L, L]``: 0 between tokens of the same shifted region, -100 between others."""
    rt, rh, rw = (_region_ids(padded[i], window[i], shift[i], device) for i in range(3))
    label = rt[:, None, None] * 9 + rh[None, :, None] * 3 + rw[None, None, :]
    label = rearrange(
        label, "(nt wt) (nh wh) (nw ww) -> (nt nh nw) (wt wh ww)", wt=window[0], wh=window[1], ww=window[2]
    )
    different = label[:, None, :] != label[:, :, None]
    return different.float() * _SHIFT_MASK_VALUE


class WindowAttention3d(nn.Module):
    """Multi-head self-attention inside (shifted) 3D windows with a learned relative position bias."""

    def __init__(
        self,
        dim: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        num_heads: int,
        attention_dropout: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size, self.shift_size, self.num_heads = list(window_size), list(shift_size), num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_dropout, self.dropout = attention_dropout, dropout
        wt, wh, ww = self.window_size
        table_size = (2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1)  # every relative offset within a window
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_size, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", self._relative_position_index())

    def _relative_position_index(self) -> torch.Tensor:
        """``[L, L]`` index into the bias table of every (query, key) offset within one window."""
        wt, wh, ww = self.window_size
        grid = torch.meshgrid(torch.arange(wt), torch.arange(wh), torch.arange(ww), indexing="ij")
        coords = torch.stack(grid).flatten(1)
        offset = (coords[:, :, None] - coords[:, None, :]) + torch.tensor([wt - 1, wh - 1, ww - 1])[:, None, None]
        strides = torch.tensor([(2 * wh - 1) * (2 * ww - 1), 2 * ww - 1, 1])[:, None, None]
        return (offset * strides).sum(0)

    def relative_position_bias(self, window: Sequence[int]) -> torch.Tensor:
        vol = window[0] * window[1] * window[2]
        index = self.relative_position_index[:vol, :vol].reshape(-1)
        return self.relative_position_bias_table[index].view(vol, vol, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, time_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, H, W, D]`` -> same shape; ``time_mask [B, T]`` (True = valid) excludes keys."""
        b, t, h, w, d = x.shape
        window, shift = _effective_window((t, h, w), self.window_size, self.shift_size)
        pad = [(window[i] - s % window[i]) % window[i] for i, s in enumerate((t, h, w))]
        x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        padded = x.shape[1:4]
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1], -shift[2]), dims=(1, 2, 3))
        windows = rearrange(
            x, "b (nt wt) (nh wh) (nw ww) d -> (b nt nh nw) (wt wh ww) d", wt=window[0], wh=window[1], ww=window[2]
        )
        n, length = windows.shape[:2]
        q, k, v = rearrange(self.qkv(windows), "n l (three h e) -> three n h l e", three=3, h=self.num_heads)
        attn = (q * (d // self.num_heads) ** -0.5) @ k.transpose(-2, -1)  # [n, heads, L, L]
        attn = attn + self.relative_position_bias(window)
        attn = attn.view(b, n // b, self.num_heads, length, length)
        if shifted:
            attn = attn + shifted_window_mask(padded, window, shift, x.device)[None, :, None]
        if time_mask is not None:
            # window padding (beyond T) stays a zero token as in the reference; padded frames are no keys
            valid = F.pad(time_mask.long(), (0, pad[0]), value=1).bool()
            valid = torch.roll(valid, shifts=-shift[0], dims=1)
            valid = valid[:, :, None, None].expand(b, padded[0], padded[1], padded[2])
            valid = rearrange(
                valid, "b (nt wt) (nh wh) (nw ww) -> b (nt nh nw) (wt wh ww)", wt=window[0], wh=window[1], ww=window[2]
            )
            attn = attn.masked_fill(~valid[:, :, None, None, :], torch.finfo(attn.dtype).min)
        attn = F.dropout(attn.softmax(-1), self.attention_dropout, self.training)
        attn = attn.view(n, self.num_heads, length, length)
        out = rearrange(attn @ v, "n h l e -> n l (h e)")
        out = F.dropout(self.proj(out), self.dropout, self.training)
        out = rearrange(
            out,
            "(b nt nh nw) (wt wh ww) d -> b (nt wt) (nh wh) (nw ww) d",
            b=b,
            nt=padded[0] // window[0],
            nh=padded[1] // window[1],
            wt=window[0],
            wh=window[1],
            ww=window[2],
        )
        if shifted:
            out = torch.roll(out, shifts=tuple(shift), dims=(1, 2, 3))
        return out[:, :t, :h, :w].contiguous()


class SwinBlock3d(nn.Module):
    """Pre-norm residual block: (shifted) window attention, then a GELU MLP (ratio 4)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        stochastic_depth_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = WindowAttention3d(dim, window_size, shift_size, num_heads, attention_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        hidden = int(dim * mlp_ratio)
        # indices 0 and 3 carry weights, as in torchvision's MLP (Linear, GELU, Dropout, Linear, Dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )
        self.stochastic_depth_prob = stochastic_depth_prob

    def forward(self, x: torch.Tensor, time_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + _stochastic_depth(self.attn(self.norm1(x), time_mask), self.stochastic_depth_prob, self.training)
        return x + _stochastic_depth(self.mlp(self.norm2(x)), self.stochastic_depth_prob, self.training)


class SwinStage3d(nn.Sequential):
    """The blocks of one stage (alternating plain and shifted windows), passing the time mask along.
    With ``gradient_checkpointing`` each block's activations are recomputed in the backward pass
    (fine-tuning long clips in less memory; the random state is replayed, so results are the same)."""

    gradient_checkpointing = False

    def forward(self, x: torch.Tensor, time_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, time_mask, use_reentrant=False)
            else:
                x = block(x, time_mask)
        return x


class PatchMerging3d(nn.Module):
    """Halve H and W (zero-padding odd sizes): concatenate each 2x2 neighbourhood, norm, project to 2D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=1e-5)

    def forward(self, x: torch.Tensor, time_mask: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-3:-1]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # order (row, col) = (0,0), (1,0), (0,1), (1,1): what the checkpoints' reduction weights expect
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x))


class PatchEmbed3d(nn.Module):
    """Non-overlapping 3D patches (zero-padded to a multiple of the patch) -> LayerNorm'd tokens."""

    def __init__(self, patch_size: Sequence[int], in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> ``[B, T', H', W', D]``."""
        t, h, w = video.shape[-3:]
        pad = [(p - s % p) % p for p, s in zip(self.patch_size, (t, h, w))]
        video = F.pad(video, (0, pad[2], 0, pad[1], 0, pad[0]))
        return self.norm(rearrange(self.proj(video), "b d t h w -> b t h w d"))


class SwinTransformer3d(nn.Module):
    """Video Swin Transformer with torchvision's module layout (``features.{2i}`` = stage i's blocks,
    ``features.{2i+1}`` = the patch merging after it). ``num_classes=0`` builds no classification head;
    ``gradient_checkpointing`` trades compute for memory when fine-tuning.
    """

    def __init__(
        self,
        patch_size: Sequence[int] = (2, 4, 4),
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: Sequence[int] = (8, 7, 7),
        mlp_ratio: float = 4.0,
        num_classes: int = 400,
        in_channels: int = 3,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        stochastic_depth_prob: float = 0.1,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        self.patch_size = tuple(patch_size)
        self.patch_embed = PatchEmbed3d(patch_size, in_channels, embed_dim)
        self.pos_drop = nn.Dropout(dropout)
        total, block_id = sum(depths), 0
        layers: list[nn.Module] = []
        for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = embed_dim * 2**stage
            blocks = []
            for i in range(depth):
                # stochastic depth grows linearly with the block's position in the whole network
                p = stochastic_depth_prob * block_id / max(total - 1, 1)
                shift = [0 if i % 2 == 0 else ws // 2 for ws in window_size]
                blocks.append(SwinBlock3d(dim, heads, window_size, shift, mlp_ratio, dropout, attention_dropout, p))
                block_id += 1
            layers.append(SwinStage3d(*blocks))
            layers[-1].gradient_checkpointing = gradient_checkpointing
            if stage < len(depths) - 1:
                layers.append(PatchMerging3d(dim))
        self.features = nn.ModuleList(layers)
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features, eps=1e-5)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else None

    def token_mask(self, frame_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` frame mask -> ``[B, T']`` token mask: a token is valid when its first frame is."""
        return frame_mask.bool()[:, :: self.patch_size[0]]

    def forward_features(
        self, video: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``video [B, C, T, H, W]`` -> final-norm tokens ``[B, T', H', W', D]`` and the token mask
        ``[B, T']`` (None without ``frame_mask``)."""
        time_mask = None
        if frame_mask is not None:
            video = video * frame_mask.to(video.dtype)[:, None, :, None, None]
            time_mask = self.token_mask(frame_mask)
        x = self.pos_drop(self.patch_embed(video))
        for layer in self.features:
            x = layer(x, time_mask)
        return self.norm(x), time_mask

    @staticmethod
    def pool(tokens: torch.Tensor, time_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence ``[B, T', D]`` (mean over space) and global ``[B, D]`` (mean over valid time and space)."""
        sequence = tokens.mean(dim=(2, 3))
        if time_mask is None:
            return sequence, sequence.mean(1)
        return sequence, masked_mean(sequence, time_mask)

    def forward(self, video: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``[B, num_classes]`` of the clip embedding."""
        if self.head is None:
            raise ValueError("this SwinTransformer3d has no classification head (num_classes=0)")
        tokens, time_mask = self.forward_features(video, frame_mask)
        return self.head(self.pool(tokens, time_mask)[1])


def official_to_torchvision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official Video Swin state dict (``backbone.layers.i.blocks.j...``) to torchvision's
    names (table in the module docstring). Keys already in torchvision's layout pass unchanged."""
    out = {}
    for key, value in state_dict.items():
        new = key.removeprefix("module.").removeprefix("backbone.")
        new = re.sub(r"^cls_head\.fc_cls\.", "head.", new)
        new = re.sub(r"^layers\.(\d+)\.blocks\.", lambda m: f"features.{2 * int(m.group(1))}.", new)
        new = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"features.{2 * int(m.group(1)) + 1}.", new)
        new = new.replace(".mlp.fc1.", ".mlp.0.").replace(".mlp.fc2.", ".mlp.3.")
        out[new] = value
    return out


def load_swin_state_dict(
    model: SwinTransformer3d, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
) -> None:
    """Load torchvision- or official-layout weights strictly (renaming official keys). A headless model
    ignores ``head.*``; a missing ``relative_position_index`` (a fixed buffer) keeps the model's own."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]  # mmaction checkpoints wrap the weights with meta data
    sd = official_to_torchvision(state_dict)
    if model.head is None:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    own = model.state_dict()
    for key in own:
        if key.endswith("relative_position_index") and key not in sd:
            sd[key] = own[key]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(sd[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        raise MSAError(
            f"Video Swin weights in {source} do not fit the architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} with another shape (e.g. {wrong[:3]})"
        )
    model.load_state_dict(sd, strict=True)


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The architecture a torchvision- or official-layout state dict was made with: patch size, width,
    depths and heads read from tensor shapes; the window from the bias table (``(2t-1)(2s-1)^2`` rows)
    and the index (``t s^2`` positions), assuming square spatial windows as every released model."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    sd = official_to_torchvision(state_dict)
    try:
        proj = sd["patch_embed.proj.weight"]
        stages = sorted({int(m.group(1)) for k in sd if (m := re.match(r"features\.(\d+)\.\d+\.norm1\.weight$", k))})
        depths = [
            len({k.split(".")[2] for k in sd if k.startswith(f"features.{i}.") and k.endswith(".norm1.weight")})
            for i in stages
        ]
        heads = [sd[f"features.{i}.0.attn.relative_position_bias_table"].shape[1] for i in stages]
        rows = sd["features.0.0.attn.relative_position_bias_table"].shape[0]
    except KeyError as err:
        raise MSAError(f"not a Video Swin state dict: no {err}") from None
    vol = sd.get("features.0.0.attn.relative_position_index", torch.empty(392, 392)).shape[0]
    windows = [
        (t, s, s)
        for t in range(1, 33)
        for s in range(1, 33)
        if t * s * s == vol and (2 * t - 1) * (2 * s - 1) ** 2 == rows
    ]
    if len(windows) != 1:
        raise MSAError(f"cannot tell the window size of this Video Swin state dict ({rows} bias rows, {vol} positions)")
    config = dict(
        patch_size=tuple(proj.shape[2:]),
        embed_dim=proj.shape[0],
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=windows[0],
    )
    if "head.weight" in sd:
        config["num_classes"] = sd["head.weight"].shape[0]
    return config


def _numpy_safe_globals(names: list[str]) -> list:
    """What ``torch.load(weights_only=True)`` needs for the numpy scalars a checkpoint holds: the scalar
    reconstructor it names (``numpy._core.multiarray.scalar`` in numpy 2, ``numpy.core...`` before; resolved
    from the file's own name, as the module moved), ``numpy.dtype`` and the dtype classes of
    ``numpy.dtypes``. Nothing else, nothing executable."""
    import numpy as np

    allowed = [np.dtype] + [c for c in vars(np.dtypes).values() if isinstance(c, type) and issubclass(c, np.dtype)]
    for name in names:
        module, _, attr = name.rpartition(".")
        if module.split(".", 1)[0] == "numpy" and attr == "scalar":
            with contextlib.suppress(ImportError, AttributeError):
                allowed.append(getattr(importlib.import_module(module), attr))
    return allowed


#: what `msa weights convert-swin3d` writes into its folder, and the format tag of its ``config.json``
CONVERTED_CONFIG, CONVERTED_WEIGHTS, CONVERTED_FORMAT = "config.json", "model.safetensors", "msa-video-swin/1"

#: the torchvision releases each architecture's weights come from (file names of the download)
TORCHVISION_FILES = {
    "swin3d_t": ("swin3d_t-7615ae03.pth (Swin3D_T_Weights.KINETICS400_V1)",),
    "swin3d_s": ("swin3d_s-da41c237.pth (Swin3D_S_Weights.KINETICS400_V1)",),
    "swin3d_b": (
        "swin3d_b_1k-24f7c7c6.pth (Swin3D_B_Weights.KINETICS400_V1)",
        "swin3d_b_22k-7c6ae6fa.pth (Swin3D_B_Weights.KINETICS400_IMAGENET22K_V1)",
    ),
}


def _read_converted(folder: Path) -> tuple[dict, dict]:
    """``(config, state_dict)`` of a folder written by :func:`convert_swin3d`."""
    import json

    from safetensors.torch import load_file

    config_file, weights = folder / CONVERTED_CONFIG, folder / CONVERTED_WEIGHTS
    if not config_file.is_file() or not weights.is_file():
        raise MSAError(
            f"{folder}: not a converted Video Swin folder (expected {CONVERTED_CONFIG} and {CONVERTED_WEIGHTS}, "
            f"as `msa weights convert-swin3d PATH.pth --out {folder}` writes them)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        state = load_file(str(weights))
    except Exception as err:  # a truncated or foreign file: many error types
        raise MSAError(f"cannot read the converted Video Swin folder {folder}: {type(err).__name__}: {err}") from None
    if config.get("format") != CONVERTED_FORMAT or config.get("arch") not in CONFIGS:
        raise MSAError(
            f"{config_file}: expected format {CONVERTED_FORMAT!r} and an architecture of {sorted(CONFIGS)}, "
            f"found format {config.get('format')!r}, arch {config.get('arch')!r}"
        )
    return config, state


def _read_checkpoint(checkpoint: str | Path) -> dict:
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return _read_converted(path)[1]
    if not path.is_file():
        from msa_lightning.nn.pretrained import PretrainedNotAvailable

        raise PretrainedNotAvailable(
            f"Video Swin checkpoint {str(path)!r} does not exist; download torchvision's Kinetics-400 weights "
            f"({'; '.join(f for files in TORCHVISION_FILES.values() for f in files)}) and run `msa weights "
            f"convert-swin3d FILE.pth --out {path}`, or pass the path of a .pth file"
        )
    # mmaction checkpoints keep numpy scalars in their meta data: allow the numpy reconstructors the file
    # names (found by torch's own scan), nothing executable
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        with torch.serialization.safe_globals(_numpy_safe_globals(named)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: many error types
        raise MSAError(f"cannot read Video Swin checkpoint {str(path)!r}: {type(err).__name__}: {err}") from None


def build_video_swin(
    name: str = "swin3d_t", checkpoint: str | Path | None = None, num_classes: int = 0, **overrides
) -> SwinTransformer3d:
    """A Video Swin by architecture name (:data:`CONFIGS`), with weights from ``checkpoint`` (a folder
    written by :func:`convert_swin3d`, or a torchvision or official ``.pth`` file) when given. ``tiny-swin3d``
    is random and in-process; ``auto`` reads the architecture from the checkpoint (:func:`config_from_state_dict`)."""
    if name != "auto" and name not in CONFIGS:
        raise MSAError(f"unknown Video Swin architecture {name!r}; expected 'auto' or one of {sorted(CONFIGS)}")
    state = _read_checkpoint(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and Path(checkpoint).expanduser().is_dir():
        converted = _read_converted(Path(checkpoint).expanduser())[0]["arch"]
        if name not in ("auto", converted):
            raise MSAError(
                f"the Video Swin folder {checkpoint} holds {converted} weights, but the architecture asked for "
                f"is {name!r}: set the architecture to {converted!r} (or 'auto')"
            )
        name = converted
    if name == "auto":
        if state is None:
            raise MSAError("Video Swin architecture 'auto' needs a checkpoint to read it from")
        config = {k: v for k, v in config_from_state_dict(state).items() if k != "num_classes"}
    else:
        config = CONFIGS[name]
    model = SwinTransformer3d(**{**config, "num_classes": num_classes, **overrides})
    if state is not None:
        load_swin_state_dict(model, state, source=str(checkpoint))
    return model


def matching_architecture(config: Mapping) -> str | None:
    """The name in :data:`CONFIGS` whose patch, width, depths, heads and window equal ``config``'s."""
    keys = ("patch_size", "embed_dim", "depths", "num_heads", "window_size")
    for name, known in CONFIGS.items():
        if all(tuple(known[k]) == tuple(config[k]) if k != "embed_dim" else known[k] == config[k] for k in keys):
            return name
    return None


def convert_swin3d(source: str | Path, out: str | Path, arch: str | None = None) -> dict:
    """Turn published Video Swin weights (torchvision's ``swin3d_t/s/b`` Kinetics-400 ``.pth`` files, or the
    official mmaction checkpoints through :func:`official_to_torchvision`) into the suite's format: ``out/``
    holds ``model.safetensors`` and ``config.json`` (format, architecture, classes, source file and its
    SHA-256). Every tensor is checked against the architecture (``arch``, or the one of :data:`CONFIGS` the
    shapes describe): a missing, unexpected or differently shaped key is one :class:`MSAError` naming them.
    Returns the written config."""
    import hashlib
    import json

    from safetensors.torch import save_file

    source, out = Path(source).expanduser(), Path(out).expanduser()
    if source.is_dir():
        raise MSAError(f"{source} is a folder; convert-swin3d reads a .pth state dict file")
    if not source.is_file():
        raise MSAError(
            f"{source} does not exist; convert-swin3d reads one of torchvision's Kinetics-400 state dicts "
            f"({'; '.join(f for files in TORCHVISION_FILES.values() for f in files)}) or an official Video Swin "
            f".pth checkpoint"
        )
    state = _read_checkpoint(source)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    state = official_to_torchvision(state)
    detected = config_from_state_dict(state)
    found = matching_architecture(detected)
    if arch is None:
        if found is None:
            raise MSAError(f"{source}: the weights describe no known Video Swin ({detected}); known: {sorted(CONFIGS)}")
        arch = found
    elif arch not in CONFIGS:
        raise MSAError(f"unknown Video Swin architecture {arch!r}; expected one of {sorted(CONFIGS)}")
    model = SwinTransformer3d(**{**CONFIGS[arch], "num_classes": int(detected.get("num_classes", 0))})
    load_swin_state_dict(model, state, source=f"{source} (as {arch})")  # key by key, shape by shape
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    digest = hashlib.sha256()
    with source.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    config = {
        "format": CONVERTED_FORMAT,
        "arch": arch,
        "num_classes": int(detected.get("num_classes", 0)),
        "tensors": len(weights),
        "source": source.name,
        "source_sha256": digest.hexdigest(),
    }
    tmp = out / (CONVERTED_WEIGHTS + ".tmp")
    save_file(weights, str(tmp))
    tmp.replace(out / CONVERTED_WEIGHTS)
    (out / CONVERTED_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config


#: architectures that are random by design (built in-process for tests and benchmarks, like ``tiny-bert``)
RANDOM_ARCHS = ("tiny-swin3d",)


def check_video_weights(arch: str, checkpoint: str | Path | None, random_init: bool, key: str, log=None) -> None:
    """Nothing pretrained is ever silently random: a pretrained architecture without ``checkpoint`` is one
    :class:`ConfigError` naming ``key`` and how to make the weights, unless ``random_init`` opts in (then a
    warning says so in the run's log)."""
    if checkpoint is not None or arch in RANDOM_ARCHS:
        return
    if random_init:
        if log is not None:
            log.warning(
                "Video Swin %s has RANDOM weights (%s is null, random init opted in): its features are "
                "not those of the Kinetics-400 model",
                arch,
                key,
            )
        return
    files = " or ".join(TORCHVISION_FILES.get(arch, ("the official Video Swin checkpoint",)))
    raise ConfigError(
        f"{key} is not set, so the {arch} Video Swin would be random, not the Kinetics-400 model: download "
        f"{files}, run `msa weights convert-swin3d FILE.pth --out weights/{arch}_kinetics400` and set {key} to "
        f"that folder (random weights only on purpose: set the random-init switch, video_random_init: true)"
    )


class VideoSwinEncoder(nn.Module):
    """The visual extractor (TwoStepMSA paper 3.2): uint8 frames in, Video Swin features out.

    Args:
        arch: architecture name in :data:`CONFIGS` (``tiny-swin3d`` for tests), or ``auto``: read from ``checkpoint``.
        checkpoint: a folder of :func:`convert_swin3d`, or torchvision or official Video Swin weights (a
            ``.pth`` path); None = random init (the modules that use it refuse that unless opted in:
            :func:`check_video_weights`).
        finetune: train the weights; when False the extractor is frozen (no weight gradients, eval mode).
        gradient_checkpointing: recompute block activations in the backward pass (less memory).

    ``forward(frames [B, T, C, H, W] uint8, frame_mask [B, T] bool | None)`` returns
    ``(sequence [B, T', D], sequence_mask [B, T'] bool, pooled [B, D])``: the final-norm tokens
    averaged over space (sequence) and over valid time and space (pooled); ``T' = ceil(T / 2)``.
    Frames are scaled to [0, 1] and normalised with the Kinetics statistics the checkpoints expect.
    """

    def __init__(
        self,
        arch: str = "swin3d_t",
        checkpoint: str | None = None,
        finetune: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.model = build_video_swin(arch, checkpoint, num_classes=0, gradient_checkpointing=gradient_checkpointing)
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), persistent=False)
        if not finetune:
            from msa_lightning.nn.pretrained import freeze

            freeze(self.model)

    @property
    def hidden_size(self) -> int:
        return self.model.num_features

    def forward(
        self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        video = rearrange(frames, "b t c h w -> b c t h w").float() / 255.0
        video = (video - self.mean) / self.std
        tokens, time_mask = self.model.forward_features(video, frame_mask)
        sequence, pooled = self.model.pool(tokens, time_mask)
        if time_mask is None:
            time_mask = torch.ones(sequence.shape[:2], dtype=torch.bool, device=sequence.device)
        return sequence, time_mask, pooled
