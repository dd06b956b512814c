"""Fusion operators shared across models."""

from __future__ import annotations

import torch
from einops import rearrange


def tensor_fusion(*vectors: torch.Tensor) -> torch.Tensor:
    """TFN's fusion (Zadeh et al., 2017, Eq. 3): the outer product of ``[h; 1]`` vectors, flattened.

    For inputs ``[B, d_1] ... [B, d_m]`` returns ``[B, prod(d_i + 1)]``; the appended 1 keeps the
    unimodal and bimodal terms inside the trimodal product.
    """
    out = None
    for v in vectors:
        v1 = torch.cat([v, v.new_ones(v.shape[0], 1)], dim=-1)
        out = v1 if out is None else rearrange(out[:, :, None] * v1[:, None, :], "b i j -> b (i j)")
    return out
