"""The metrics equal the field's reference definitions (MMSA ``metricsTop.py``) to 1e-6.

The reference below transcribes MMSA's NumPy/scikit-learn code: float32 arrays (what MMSA gets
from its float32 model outputs and labels) compared with Python floats, ``np.round``,
``np.corrcoef``, ``f1_score(average="weighted")``. Two documented differences are encoded here:
empty selections give NaN (MMSA would crash), and CH-SIMS v2's ``acc2_weak`` uses the 2-class bins
on the weak samples (see the module docstring of :mod:`msa_lightning.metrics.msa`).
"""

from __future__ import annotations

import math
import os
import socket
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from msa_lightning.metrics import MSAMetrics, compute_msa_metrics

MOSI_KEYS = {"mae", "corr", "acc3", "acc5", "acc7", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0"}
SIMS_KEYS = {"mae", "corr", "acc2", "acc3", "acc5", "f1"}
NAN = float("nan")


# --------------------------------------------------------------------------- MMSA reference
def _multiclass_acc(y_pred, y_true):
    return np.sum(np.round(y_pred) == np.round(y_true)) / float(len(y_true))


def _corr(a, b):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.corrcoef(a, b)[0][1]) if len(a) else NAN


def _f1(true, pred):
    if len(true) == 0:
        return NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(true, pred, average="weighted"))


def _acc(pred, true):
    return float(accuracy_score(pred, true)) if len(true) else NAN


def ref_mosei_regression(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """MMSA ``__eval_mosei_regression`` (also used for MOSI)."""
    test_preds, test_truth = y_pred.reshape(-1), y_true.reshape(-1)
    if len(test_truth) == 0:
        return {k: NAN for k in MOSI_KEYS}
    test_preds_a7 = np.clip(test_preds, a_min=-3.0, a_max=3.0)
    test_truth_a7 = np.clip(test_truth, a_min=-3.0, a_max=3.0)
    test_preds_a5 = np.clip(test_preds, a_min=-2.0, a_max=2.0)
    test_truth_a5 = np.clip(test_truth, a_min=-2.0, a_max=2.0)
    test_preds_a3 = np.clip(test_preds, a_min=-1.0, a_max=1.0)
    test_truth_a3 = np.clip(test_truth, a_min=-1.0, a_max=1.0)

    mae = np.mean(np.absolute(test_preds - test_truth)).astype(np.float64)
    corr = _corr(test_preds, test_truth)
    mult_a7 = _multiclass_acc(test_preds_a7, test_truth_a7)
    mult_a5 = _multiclass_acc(test_preds_a5, test_truth_a5)
    mult_a3 = _multiclass_acc(test_preds_a3, test_truth_a3)

    non_zeros = np.array([i for i, e in enumerate(test_truth) if e != 0], dtype=np.int64)
    non_zeros_binary_truth = test_truth[non_zeros] > 0
    non_zeros_binary_preds = test_preds[non_zeros] > 0
    non_zeros_acc2 = _acc(non_zeros_binary_preds, non_zeros_binary_truth)
    non_zeros_f1_score = _f1(non_zeros_binary_truth, non_zeros_binary_preds)

    binary_truth = test_truth >= 0
    binary_preds = test_preds >= 0
    acc2 = _acc(binary_preds, binary_truth)
    f_score = _f1(binary_truth, binary_preds)
    return {
        "acc2_has0": acc2,
        "f1_has0": f_score,
        "acc2_non0": non_zeros_acc2,
        "f1_non0": non_zeros_f1_score,
        "acc3": mult_a3,
        "acc5": mult_a5,
        "acc7": mult_a7,
        "mae": float(mae),
        "corr": corr,
    }


def _interval_bins(x: np.ndarray, ms: list[float]) -> np.ndarray:
    """MMSA's loop: ``out[(x > ms[i]) & (x <= ms[i+1])] = i`` on a copy of ``x``."""
    out = x.copy()
    for i in range(len(ms) - 1):
        out[np.logical_and(x > ms[i], x <= ms[i + 1])] = i
    return out


def ref_sims_regression(y_pred: np.ndarray, y_true: np.ndarray, weak: bool = False) -> dict[str, float]:
    """MMSA ``__eval_sims_regression`` (+ ``acc2_weak`` of CH-SIMS v2 with the 2-class bins)."""
    test_preds = np.clip(y_pred.reshape(-1), a_min=-1.0, a_max=1.0)
    test_truth = np.clip(y_true.reshape(-1), a_min=-1.0, a_max=1.0)
    keys = SIMS_KEYS | ({"acc2_weak"} if weak else set())
    if len(test_truth) == 0:
        return {k: NAN for k in keys}
    ms_2 = [-1.01, 0.0, 1.01]
    ms_3 = [-1.01, -0.1, 0.1, 1.01]
    ms_5 = [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]
    test_preds_a2, test_truth_a2 = _interval_bins(test_preds, ms_2), _interval_bins(test_truth, ms_2)
    test_preds_a3, test_truth_a3 = _interval_bins(test_preds, ms_3), _interval_bins(test_truth, ms_3)
    test_preds_a5, test_truth_a5 = _interval_bins(test_preds, ms_5), _interval_bins(test_truth, ms_5)
    out = {
        "mae": float(np.mean(np.absolute(test_preds - test_truth)).astype(np.float64)),
        "corr": _corr(test_preds, test_truth),
        "acc2": _multiclass_acc(test_preds_a2, test_truth_a2),
        "acc3": _multiclass_acc(test_preds_a3, test_truth_a3),
        "acc5": _multiclass_acc(test_preds_a5, test_truth_a5),
        "f1": _f1(test_truth_a2, test_preds_a2),
    }
    if weak:
        weak_index_l = np.where(test_truth >= -0.4)[0]
        weak_index_r = np.where(test_truth <= 0.4)[0]
        weak_index = np.array([x for x in weak_index_l if x in weak_index_r], dtype=np.int64)
        p_weak = _interval_bins(test_preds[weak_index], ms_2)
        t_weak = _interval_bins(test_truth[weak_index], ms_2)
        out["acc2_weak"] = _multiclass_acc(p_weak, t_weak) if len(weak_index) else NAN
    return out


def reference(pred: np.ndarray, true: np.ndarray, family: str) -> dict[str, float]:
    pred, true = np.asarray(pred, dtype=np.float32), np.asarray(true, dtype=np.float32)
    if family == "mosi":
        return ref_mosei_regression(pred, true)
    return ref_sims_regression(pred, true, weak=family == "simsv2")


def ours(pred, true, family: str) -> dict[str, float]:
    out = compute_msa_metrics(
        torch.as_tensor(np.asarray(pred, dtype=np.float32)), torch.as_tensor(np.asarray(true, dtype=np.float32)), family
    )
    return {k: float(v) for k, v in out.items()}


def assert_same(got: dict, want: dict, tol: float = 1e-6) -> None:
    assert set(got) == set(want), f"keys differ: {sorted(set(got) ^ set(want))}"
    for k in want:
        g, w = float(got[k]), float(want[k])
        if math.isnan(w):
            assert math.isnan(g), f"{k}: expected NaN, got {g}"
        else:
            assert abs(g - w) <= tol * max(1.0, abs(w)), f"{k}: got {g!r}, reference {w!r}"


# --------------------------------------------------------------------------- random data
def _mosi_like(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with many exact zeros, .5 ties and values beyond [-3, 3]; predictions likewise."""
    kind = rng.integers(0, 4, size=n)
    true = np.select(
        [kind == 0, kind == 1, kind == 2],
        [np.zeros(n), rng.integers(-7, 8, size=n) * 0.5, np.round(rng.uniform(-3, 3, n) / 0.2) * 0.2],
        rng.uniform(-4, 4, n),
    )
    kind = rng.integers(0, 4, size=n)
    pred = np.select(
        [kind == 0, kind == 1, kind == 2],
        [np.zeros(n), rng.integers(-8, 8, size=n) + 0.5, rng.normal(scale=2.0, size=n)],
        rng.uniform(-5, 5, n),
    )
    return pred.astype(np.float32), true.astype(np.float32)


def _sims_like(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiples of 0.1 (every bin edge, incl. 0.1, -0.7, +-0.4), zeros, values beyond [-1, 1]."""
    kind = rng.integers(0, 3, size=n)
    true = np.select(
        [kind == 0, kind == 1], [np.zeros(n), rng.integers(-12, 13, size=n) / 10], rng.uniform(-1.3, 1.3, n)
    )
    kind = rng.integers(0, 3, size=n)
    pred = np.select(
        [kind == 0, kind == 1], [np.zeros(n), rng.integers(-12, 13, size=n) / 10], rng.uniform(-1.5, 1.5, n)
    )
    return pred.astype(np.float32), true.astype(np.float32)


@pytest.mark.parametrize("seed", range(8))
def test_mosi_matches_reference_random(seed):
    rng = np.random.default_rng(seed)
    pred, true = _mosi_like(rng, int(rng.integers(20, 400)))
    assert (true == 0).sum() > 0 and (pred == 0).sum() > 0
    assert_same(ours(pred, true, "mosi"), reference(pred, true, "mosi"))


@pytest.mark.parametrize("family", ["sims", "simsv2"])
@pytest.mark.parametrize("seed", range(8))
def test_sims_matches_reference_random(seed, family):
    rng = np.random.default_rng(100 + seed)
    pred, true = _sims_like(rng, int(rng.integers(20, 400)))
    assert_same(ours(pred, true, family), reference(pred, true, family))


@pytest.mark.parametrize("family", ["mosi", "sims", "simsv2"])
def test_float64_input_gives_the_float32_result(family):
    """``compute_msa_metrics`` on float64 tensors agrees with the reference on the float32 values
    (MSAMetrics stores float32, as MMSA's tensors are)."""
    rng = np.random.default_rng(7)
    pred, true = (_mosi_like if family == "mosi" else _sims_like)(rng, 300)
    got = compute_msa_metrics(torch.tensor(pred, dtype=torch.float64), torch.tensor(true, dtype=torch.float64), family)
    assert_same({k: float(v) for k, v in got.items()}, reference(pred, true, family))


# --------------------------------------------------------------------------- hand-computed cases
def test_mosi_hand_computed():
    true = [1.0, -1.5, 0.0, 2.4]
    pred = [0.6, 0.2, -0.3, 1.2]
    # has0 (>= 0): truth T F T T, pred T T F T -> samples 0 and 3 right.
    # f1_has0: class T (support 3): tp 2, fp 1, fn 1 -> 2/3; class F (support 1): 0 -> (3 * 2/3) / 4.
    # non0: sample 2 (label 0) dropped; truth T F T, pred (> 0) T T T -> 2/3.
    # f1_non0: class T (support 2): tp 2, fp 1 -> 4/5; class F (support 1): 0 -> 2 * 0.8 / 3.
    # acc7/acc5: round -> truth 1 -2 0 2 (2.4 clipped to 2 for acc5), pred 1 0 -0 1 -> 2/4.
    # acc3: truth clip+round 1 -1 0 1, pred 1 0 -0 1 -> 3/4.
    # corr: deviations p (.175 -.225 -.725 .775), t (.525 -1.975 -.475 1.925).
    expected = {
        "acc2_has0": 0.5,
        "f1_has0": 0.5,
        "acc2_non0": 2 / 3,
        "f1_non0": 1.6 / 3,
        "acc7": 0.5,
        "acc5": 0.5,
        "acc3": 0.75,
        "mae": (0.4 + 1.7 + 0.3 + 1.2) / 4,
        "corr": 2.3725 / math.sqrt(1.2075 * 8.1075),
    }
    assert_same(ours(pred, true, "mosi"), expected)
    assert_same(reference(np.array(pred), np.array(true), "mosi"), expected)


def test_sims_hand_computed():
    true = [-0.8, -0.1, 0.1, 0.6, 1.0]
    pred = [-1.4, 0.05, 0.02, 0.05, 0.8]  # -1.4 is clipped to -1
    # 2 classes [-1, 0], (0, 1]: truth 0 0 1 1 1, pred 0 1 1 1 1 -> 4/5.
    # f1: class 1 (support 3): tp 3, fp 1 -> 6/7; class 0 (support 2): tp 1, fn 1 -> 2/3.
    # 3 classes at -0.1, 0.1 (right-closed): truth 0 0 1 2 2 (0.1 is in (-0.1, 0.1]), pred 0 1 1 1 2 -> 3/5.
    # 5 classes at -0.7, -0.1, 0.1, 0.7: truth 0 1 2 3 4, pred 0 2 2 2 4 -> 3/5.
    expected = {
        "acc2": 0.8,
        "f1": (3 * 6 / 7 + 2 * 2 / 3) / 5,
        "acc3": 0.6,
        "acc5": 0.6,
        "mae": (0.2 + 0.15 + 0.08 + 0.55 + 0.2) / 5,
        "corr": float(np.corrcoef([-1.0, 0.05, 0.02, 0.05, 0.8], true)[0, 1]),
    }
    assert_same(ours(pred, true, "sims"), expected)
    assert_same(reference(np.array(pred), np.array(true), "sims"), expected)


def test_sims_bin_edges_are_right_closed():
    """Labels exactly on an edge belong to the lower bin: -0.7 -> [-1, -0.7], 0.1 -> (-0.1, 0.1]."""
    true = [-0.7, 0.1, 0.7, -0.1, 0.0]
    pred = [-0.9, 0.05, 0.5, -0.5, -0.05]
    got = ours(pred, true, "sims")
    assert got["acc5"] == 1.0 and got["acc3"] == 1.0 and got["acc2"] == 1.0


def test_simsv2_weak_hand_computed():
    true = [-0.4, -0.2, 0.0, 0.4, 0.6, -1.0]
    pred = [0.3, -0.5, 0.0, 0.9, -0.2, -0.9]
    # weak samples: labels in [-0.4, 0.4] (the edges included) -> the first four;
    # 2-class bins: truth 0 0 0 1, pred 1 0 0 1 -> 3/4.
    got = ours(pred, true, "simsv2")
    assert got["acc2_weak"] == pytest.approx(0.75, abs=1e-7)
    assert reference(np.array(pred), np.array(true), "simsv2")["acc2_weak"] == pytest.approx(0.75)
    assert got["acc2"] == pytest.approx(4 / 6)  # truth 0 0 0 1 1 0, pred 1 0 0 1 0 0


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("family", ["mosi", "sims", "simsv2"])
def test_constant_predictions_give_nan_corr(family):
    true = [-0.8, -0.2, 0.0, 0.4, 0.6]
    got = ours([0.3] * 5, true, family)
    assert math.isnan(got["corr"])
    assert all(math.isfinite(v) for k, v in got.items() if k != "corr")
    assert_same(got, reference(np.full(5, 0.3), np.array(true), family))


def test_zero_labels_are_excluded_from_non0():
    true = [0.0, 0.0, 1.0, -1.0]
    pred = [-5.0, 5.0, 1.0, -1.0]
    got = ours(pred, true, "mosi")
    assert got["acc2_non0"] == 1.0 and got["f1_non0"] == 1.0
    assert got["acc2_has0"] == 0.75  # label 0 counts as non-negative: pred -5 is wrong there
    assert_same(got, reference(np.array(pred), np.array(true), "mosi"))


def test_prediction_zero_is_negative_in_non0_and_non_negative_in_has0():
    got = ours([0.0, 0.0], [1.0, 2.0], "mosi")
    assert got["acc2_non0"] == 0.0 and got["acc2_has0"] == 1.0


def test_round_half_to_even():
    """np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 (equal to 0)."""
    got = ours([0.5, 1.5, 2.5, -0.5], [0.0, 2.0, 2.0, 0.0], "mosi")
    assert got["acc7"] == 1.0 and got["acc5"] == 1.0


@pytest.mark.parametrize("family", ["mosi", "sims", "simsv2"])
def test_single_sample(family):
    got = ours([0.5], [0.2], family)
    assert math.isnan(got["corr"])
    assert got["mae"] == pytest.approx(0.3)
    f1_key = "f1_has0" if family == "mosi" else "f1"
    assert got[f1_key] == 1.0  # one identical class on both sides
    assert_same(got, reference(np.array([0.5]), np.array([0.2]), family))


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric MSAMetrics was called before")
@pytest.mark.parametrize("family", ["mosi", "sims", "simsv2"])
def test_empty_split_is_all_nan(family):
    got = ours([], [], family)
    assert got and all(math.isnan(v) for v in got.values()), got
    metric = MSAMetrics(family)
    assert all(math.isnan(float(v)) for v in metric.compute().values())  # no update at all


def test_all_zero_labels_give_nan_non0():
    got = ours([0.5, -0.5, 0.0], [0.0, 0.0, 0.0], "mosi")
    assert math.isnan(got["acc2_non0"]) and math.isnan(got["f1_non0"])
    assert got["acc2_has0"] == pytest.approx(2 / 3) and math.isfinite(got["f1_has0"])
    assert math.isnan(got["corr"])  # constant labels


def test_simsv2_without_weak_samples_is_nan():
    got = ours([0.5, -0.5], [0.8, -0.9], "simsv2")
    assert math.isnan(got["acc2_weak"]) and got["acc2"] == 1.0


def test_metric_keys_per_family():
    assert set(ours([0.1, 0.2], [0.3, 0.1], "mosi")) == MOSI_KEYS
    assert set(ours([0.1, 0.2], [0.3, 0.1], "sims")) == SIMS_KEYS
    assert set(ours([0.1, 0.2], [0.3, 0.1], "simsv2")) == SIMS_KEYS | {"acc2_weak"}


# --------------------------------------------------------------------------- stateful Metric
def _compute(metric: MSAMetrics) -> dict[str, float]:
    return {k: float(v) for k, v in metric.compute().items()}


@pytest.mark.parametrize("family", ["mosi", "sims", "simsv2"])
def test_chunked_updates_equal_one_update(family):
    rng = np.random.default_rng(3)
    pred, true = (_mosi_like if family == "mosi" else _sims_like)(rng, 101)
    whole = MSAMetrics(family)
    whole.update(torch.tensor(pred), torch.tensor(true))
    chunked = MSAMetrics(family)
    for lo, hi in [(0, 7), (7, 7), (7, 50), (50, 99), (99, 101)]:  # includes an empty chunk
        chunked.update(torch.tensor(pred[lo:hi]).reshape(-1, 1), torch.tensor(true[lo:hi]))
    assert_same(_compute(chunked), _compute(whole))
    assert_same(_compute(whole), reference(pred, true, family))


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric MSAMetrics was called before")
def test_reset_and_prefix():
    rng = np.random.default_rng(4)
    pred, true = _mosi_like(rng, 60)
    metric = MSAMetrics("mosi", prefix="val/")
    metric.update(torch.tensor(pred[:30]) + 1.0, torch.tensor(true[:30]))
    metric.compute()
    metric.reset()
    assert all(math.isnan(v) for v in _compute(metric).values())
    metric.update(torch.tensor(pred), torch.tensor(true))
    got = _compute(metric)
    assert set(got) == {"val/" + k for k in MOSI_KEYS}
    assert_same({k[len("val/") :]: v for k, v in got.items()}, reference(pred, true, "mosi"))


def test_bad_family_and_shapes_raise():
    with pytest.raises(ValueError, match="unknown metric family 'mosei'"):
        MSAMetrics("mosei")
    with pytest.raises(ValueError, match="unknown metric family"):
        compute_msa_metrics(torch.zeros(3), torch.zeros(3), "iemocap")
    metric = MSAMetrics("mosi")
    with pytest.raises(ValueError, match=r"predictions \(4,\) and labels \(3,\) differ"):
        metric.update(torch.zeros(4), torch.zeros(3))
    with pytest.raises(ValueError, match="differ in size"):
        compute_msa_metrics(torch.zeros(2), torch.zeros(5), "sims")


def test_update_does_not_keep_the_graph():
    pred = torch.randn(8, requires_grad=True)
    metric = MSAMetrics("mosi")
    metric.update(pred * 2, torch.randn(8))
    assert not metric.preds[0].requires_grad


# --------------------------------------------------------------------------- DDP synchronisation
DDP_FAMILY = "simsv2"


def _ddp_data() -> tuple[np.ndarray, np.ndarray]:
    return _sims_like(np.random.default_rng(11), 77)


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import datetime

    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        pred, true = _ddp_data()
        cut = 45  # uneven halves: 45 and 32 samples
        sl = slice(0, cut) if rank == 0 else slice(cut, None)
        metric = MSAMetrics(DDP_FAMILY, prefix="test/")
        metric.update(torch.tensor(pred[sl][:20]), torch.tensor(true[sl][:20]))  # two updates per rank
        metric.update(torch.tensor(pred[sl][20:]), torch.tensor(true[sl][20:]))
        values = {k: float(v) for k, v in metric.compute().items()}
        torch.save(values, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_ddp_sync_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    pred, true = _ddp_data()
    single = MSAMetrics(DDP_FAMILY, prefix="test/")
    single.update(torch.tensor(pred), torch.tensor(true))
    want = _compute(single)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert_same(got, want)


def test_sample_mean_weights_batch_means_by_their_size():
    from msa_lightning.metrics import SampleMean

    mean = SampleMean()
    mean.update(torch.tensor(1.0), 3)  # three samples with loss 1, one with loss 5
    mean.update(torch.tensor(5.0), 1)
    assert float(mean.compute()) == pytest.approx(2.0)  # not (1 + 5) / 2
    mean.reset()
    assert not mean.update_called
