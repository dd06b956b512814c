"""Masks over padded sequences: the one place for building masks and reducing under them.

Conventions: a mask is ``[B, T]`` bool (or 0/1), True on valid positions; sequences are ``[B, T, D]``.
"""

from __future__ import annotations

import torch


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[B]`` lengths -> ``[B, max_len]`` bool mask, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, T, D]`` over positions where ``mask [B, T]`` is true (0 for empty rows)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def first_valid(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True of each row of ``mask [B, L]`` (0 for an all-False row)."""
    return mask.long().argmax(dim=1)


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b, p]]`` for ``x [B, T, D]`` and ``index [B, P]`` -> ``[B, P, D]``."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))
