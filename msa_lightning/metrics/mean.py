"""Epoch means of per-batch values (losses) over samples, exact under DDP with uneven shards."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class SampleMean(Metric):
    """``sum_b value_b * size_b / sum_b size_b`` over every batch of every rank.

    Lightning's ``self.log(..., sync_dist=True)`` averages the per-rank means instead, which is wrong
    when ranks hold different numbers of samples. ``update`` never reads a value on the host, so it
    costs no device sync (torchmetrics' ``MeanMetric`` checks for NaN on the host, or, with its NaN
    check disabled, ignores the weights).
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: Tensor, size: int) -> None:
        """``value``: the mean over a batch of ``size`` samples."""
        self.total += value.detach().to(self.total.dtype) * size
        self.count += size

    def compute(self) -> Tensor:
        return self.total / self.count
