"""The field's evaluation metrics as one stateful, DDP-synchronised torchmetrics ``Metric``.

Definitions follow the reference toolkit (MMSA ``metricsTop.py``), which is what published
tables report:

MOSI / MOSEI family (``family="mosi"``), labels in [-3, 3]:

* ``acc2_has0`` / ``f1_has0``: negative (< 0) vs non-negative (>= 0), over **all** samples.
* ``acc2_non0`` / ``f1_non0``: negative vs positive, samples with a label of exactly 0
  **excluded**; as in the reference, both sides are thresholded with ``> 0`` on the remaining
  samples (a prediction of exactly 0 counts as negative). Papers that say "Acc-2 (negative/positive)" report this one.
* ``acc3``/``acc5``/``acc7``: clip to [-1, 1] / [-2, 2] / [-3, 3], round half to even, compare.
* ``mae``, ``corr`` (Pearson).

CH-SIMS family (``family="sims"``/``"simsv2"``), predictions and labels clipped to [-1, 1]:

* ``acc2``: bins [-1, 0], (0, 1]; ``f1``: weighted F1 on those bins.
* ``acc3``: [-1, -0.1], (-0.1, 0.1], (0.1, 1]; ``acc5``: [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1],
  (0.1, 0.7], (0.7, 1].
* ``mae`` (on clipped values, as the reference), ``corr``.
* ``simsv2`` adds ``acc2_weak``: the 2-class accuracy over samples whose label is in [-0.4, 0.4].
  (The reference compares unbinned predictions outside (-0.4, 0.4] with bin indices, which counts
  them wrong whatever their sign; we use the 2-class bins, as the metric's name says.)

F1 is sklearn's ``average="weighted"``: per-class F1 weighted by the class's support in the labels.
Edge cases give what NumPy/scikit-learn give: Pearson is NaN when either side is constant or there
is a single sample; every metric is NaN on an empty split (or, for ``*_non0``, when all labels are 0).
Weighted F1 is 1.0 when labels and predictions hold a single, identical class.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

FAMILIES = ("mosi", "sims", "simsv2")
SIMS_BINS = {2: (0.0,), 3: (-0.1, 0.1), 5: (-0.7, -0.1, 0.1, 0.7)}


def _accuracy(pred: Tensor, true: Tensor) -> Tensor:
    if true.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (pred == true).double().mean()


def weighted_f1(pred: Tensor, true: Tensor) -> Tensor:
    """sklearn ``f1_score(true, pred, average="weighted")`` for integer class labels."""
    if true.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    classes = torch.unique(torch.cat([true, pred]))
    onehot_p = pred[:, None] == classes[None, :]
    onehot_t = true[:, None] == classes[None, :]
    tp = (onehot_p & onehot_t).sum(0).double()
    fp = (onehot_p & ~onehot_t).sum(0).double()
    fn = (~onehot_p & onehot_t).sum(0).double()
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    support = onehot_t.sum(0).double()
    return (f1 * support).sum() / support.sum()


def pearson(x: Tensor, y: Tensor) -> Tensor:
    """``np.corrcoef(x, y)[0, 1]``: NaN for fewer than two samples or a constant side."""
    if x.numel() < 2:
        return torch.tensor(float("nan"), dtype=torch.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = torch.sqrt((xc * xc).sum() * (yc * yc).sum())
    if denom == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (xc * yc).sum() / denom


def _bins(values: Tensor, edges: tuple[float, ...]) -> Tensor:
    """Interval index with right-closed bins: (e_{i-1}, e_i] (first bin closed on the left)."""
    return torch.bucketize(values, torch.tensor(edges, dtype=values.dtype, device=values.device), right=False)


CLASS_NAMES = ("negative", "neutral", "positive")


def three_classes(pred: Tensor, family: str) -> Tensor:
    """Each score's class (0 negative, 1 neutral, 2 positive) by the family's Acc-3 rule: MOSI/MOSEI round the
    score clipped to [-1, 1]; CH-SIMS bins it at -0.1 and 0.1 (right-closed), as ``acc3`` compares them."""
    if family == "mosi":
        return (torch.round(pred.double().clamp(-1, 1)) + 1).long()
    return _bins(pred.float().clamp(-1, 1), SIMS_BINS[3])


def mosi_metrics(pred: Tensor, true: Tensor) -> dict[str, Tensor]:
    pred, true = pred.double(), true.double()
    empty = true.numel() == 0
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    out = {
        "mae": nan if empty else (pred - true).abs().mean(),
        "corr": pearson(pred, true),
    }
    for k, bound in ((3, 1.0), (5, 2.0), (7, 3.0)):
        out[f"acc{k}"] = _accuracy(torch.round(pred.clamp(-bound, bound)), torch.round(true.clamp(-bound, bound)))
    nonzero = true != 0
    p_non0, t_non0 = pred[nonzero] > 0, true[nonzero] > 0
    out["acc2_non0"] = _accuracy(p_non0, t_non0)
    out["f1_non0"] = weighted_f1(p_non0.long(), t_non0.long())
    p_has0, t_has0 = pred >= 0, true >= 0
    out["acc2_has0"] = _accuracy(p_has0, t_has0)
    out["f1_has0"] = weighted_f1(p_has0.long(), t_has0.long())
    return out


def sims_metrics(pred: Tensor, true: Tensor, weak: bool = False) -> dict[str, Tensor]:
    # Bins are assigned in float32, as the reference does (float32 arrays against Python floats):
    # in float64, float32(0.1) > 0.1 and float32(-0.4) < -0.4, which moves labels such as 0.1,
    # -0.7 or +-0.4 into the neighbouring bin (or out of the weak range).
    pred, true = pred.float().clamp(-1, 1), true.float().clamp(-1, 1)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    out = {
        "mae": nan if true.numel() == 0 else (pred.double() - true.double()).abs().mean(),
        "corr": pearson(pred.double(), true.double()),
    }
    for k, edges in SIMS_BINS.items():
        out[f"acc{k}"] = _accuracy(_bins(pred, edges), _bins(true, edges))
    out["f1"] = weighted_f1(_bins(pred, SIMS_BINS[2]), _bins(true, SIMS_BINS[2]))
    if weak:
        sel = (true >= -0.4) & (true <= 0.4)
        out["acc2_weak"] = _accuracy(_bins(pred[sel], SIMS_BINS[2]), _bins(true[sel], SIMS_BINS[2]))
    return out


def compute_msa_metrics(pred: Tensor, true: Tensor, family: str) -> dict[str, Tensor]:
    """All metrics of a dataset family from flat continuous predictions and labels."""
    pred, true = pred.reshape(-1), true.reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(true.shape)} differ in size")
    if family == "mosi":
        return mosi_metrics(pred, true)
    if family in ("sims", "simsv2"):
        return sims_metrics(pred, true, weak=family == "simsv2")
    raise ValueError(f"unknown metric family {family!r}; expected one of {FAMILIES}")


class MSAMetrics(Metric):
    """Collects predictions and labels (synchronised across DDP ranks) and computes every metric of
    the family at once; ``compute()`` returns ``{prefix + name: value}``.

    The metrics are not decomposable (Pearson, F1 over the whole split), so the exact definition
    needs all samples: states are concatenated across ranks, which for the largest dataset
    (MOSEI test, 4,659 samples) is a few kilobytes.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, family: str, prefix: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        if family not in FAMILIES:
            raise ValueError(f"unknown metric family {family!r}; expected one of {FAMILIES}")
        self.family, self.prefix = family, prefix
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        preds, target = preds.detach().reshape(-1).float(), target.detach().reshape(-1).float()
        if preds.shape != target.shape:
            raise ValueError(f"predictions {tuple(preds.shape)} and labels {tuple(target.shape)} differ in size")
        self.preds.append(preds)
        self.target.append(target)

    def compute(self) -> dict[str, Tensor]:
        preds = dim_zero_cat(self.preds) if len(self.preds) else torch.zeros(0, device=self.device)
        target = dim_zero_cat(self.target) if len(self.target) else torch.zeros(0, device=self.device)
        values = compute_msa_metrics(preds.cpu(), target.cpu(), self.family)
        return {self.prefix + k: v.float() for k, v in values.items()}
