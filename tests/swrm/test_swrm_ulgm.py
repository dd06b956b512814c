"""Self-MM's ULGM: a hand-computed update, checkpoint state, and identical state across DDP ranks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from msa_lightning.nn.ulgm import ULGM


def _ulgm() -> ULGM:
    u = ULGM({"M": 2, "T": 2}, bound=3.0)
    u.init_labels(torch.tensor([1.0, -2.0, 0.5, 0.0]))
    return u


def _dist(a, b) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def test_hand_computed_update():
    u = _ulgm()
    assert u.num_samples == 4 and u.labels(torch.tensor([1]))["T"].item() == -2.0
    # step 1, epoch 1: labels stay; features of samples 0 and 1 stored; centres from labels > 0 / < 0
    u.update(
        torch.tensor([0, 1]),
        {"M": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "T": torch.tensor([[2.0, 0.0], [0.0, 2.0]])},
        epoch=1,
    )
    assert u.label("T").tolist() == [1.0, -2.0, 0.5, 0.0]
    # positive samples 0 and 2 (sample 2 still has zero features), negative sample 1 (sample 3: y = 0, neither)
    assert u.center("M").tolist() == [[0.5, 0.0], [0.0, 1.0]]
    assert u.center("T").tolist() == [[1.0, 0.0], [0.0, 2.0]]

    # step 2, epoch 2: sample 2 (y_m = 0.5) with f_M = (1, 1), f_T = (2, 1)
    f_m, f_t = (1.0, 1.0), (2.0, 1.0)
    d_p, d_n = _dist(f_m, (0.5, 0.0)), _dist(f_m, (0.0, 1.0))  # sqrt(1.25), 1
    delta_f = (d_n - d_p) / (d_p + 1e-8)  # -0.1055728
    d_p, d_n = _dist(f_t, (1.0, 0.0)), _dist(f_t, (0.0, 2.0))  # sqrt(2), sqrt(5)
    delta_t = (d_n - d_p) / (d_p + 1e-8)  # 0.5811388
    y_m = 0.5
    new = 0.5 * delta_t / (delta_f + 1e-8) * y_m + 0.5 * (
        y_m + delta_t - delta_f
    )  # -0.25 * 5.5046263 + 0.5 * 1.1867116 = -0.7828008
    expected = (2 - 1) / (2 + 1) * 0.5 + 2 / (2 + 1) * new  # 1/6 - 0.5218672 = -0.3552005
    assert expected == pytest.approx(-0.3552005, abs=1e-6)
    u.update(torch.tensor([2]), {"M": torch.tensor([f_m]), "T": torch.tensor([f_t])}, epoch=2)
    assert u.label("T")[2].item() == pytest.approx(expected, abs=1e-6)
    assert u.label("T")[[0, 1, 3]].tolist() == [1.0, -2.0, 0.0]  # other samples untouched
    assert u.label("M").tolist() == [1.0, -2.0, 0.5, 0.0]  # y_m never changes
    # centres after the step: M positives {0, 2}; T positives {0} (sample 2 turned negative), negatives {1, 2}
    assert u.center("M").tolist() == [[1.0, 0.5], [0.0, 1.0]]
    assert u.center("T").tolist() == [[2.0, 0.0], [1.0, 1.5]]
    w = u.weights(torch.tensor([2, 0]))["T"]
    assert w.tolist() == pytest.approx([math.tanh(abs(expected - 0.5)), 0.0], abs=1e-6)


def test_clamp_duplicates_and_empty_class():
    u = ULGM({"M": 1, "T": 1}, bound=1.0)
    u.init_labels(torch.tensor([2.0, 2.0]))  # no negative sample: the negative centre stays 0
    u.update(torch.tensor([0, 1]), {"M": torch.tensor([[1.0], [3.0]]), "T": torch.tensor([[5.0], [1.0]])}, epoch=1)
    assert u.center("M").tolist() == [[2.0], [0.0]]
    # index 0 twice: the first copy is written
    u.update(torch.tensor([0, 0]), {"M": torch.tensor([[4.0], [9.0]]), "T": torch.tensor([[9.0], [0.0]])}, epoch=3)
    assert u.feature("M")[0].item() == 4.0
    # delta_f = (4 - 2) / 2 = 1, delta_t = (9 - 6) / 6 = 0.5: y' = 0.5 * 0.5 * 2 + 0.5 * (2 + 0.5 - 1) = 1.25,
    # clamped to H = 1; epoch 3 keeps half of the old label: 0.5 * 2 + 0.5 * 1
    assert u.label("T")[0].item() == pytest.approx(1.5)


def test_state_dict_round_trip_resizes():
    u = _ulgm()
    u.update(torch.tensor([0, 1, 2]), {"M": torch.randn(3, 2), "T": torch.randn(3, 2)}, epoch=1)
    u.update(torch.tensor([3, 2]), {"M": torch.randn(2, 2), "T": torch.randn(2, 2)}, epoch=2)
    fresh = ULGM({"M": 2, "T": 2})  # N unknown (0) until the checkpoint is loaded
    fresh.load_state_dict(u.state_dict())
    for name, value in u.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    assert bool(fresh.initialized)
    with pytest.raises(RuntimeError, match="init_labels"):
        ULGM({"M": 2, "T": 2}).labels(torch.tensor([0]))


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    u = ULGM({"M": 3, "T": 2, "A": 2}, bound=3.0)
    u.init_labels(torch.linspace(-2, 2, 9))
    for epoch in (1, 2):
        g = torch.Generator().manual_seed(100 * epoch + rank)
        size = 3 if rank == 0 else 2  # unequal batches are fine
        index = torch.randperm(9, generator=g)[:size]
        feats = {
            "M": torch.randn(size, 3, generator=g),
            "T": torch.randn(size, 2, generator=g),
            "A": torch.randn(size, 2, generator=g),
        }
        u.update(index, feats, epoch=epoch)
    torch.save(u.state_dict(), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_ranks_hold_identical_state(tmp_path):
    """Two gloo ranks update with different batches; both end with the state a single process
    reaches on the concatenated batches."""
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    s0, s1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    single = ULGM({"M": 3, "T": 2, "A": 2}, bound=3.0)
    single.init_labels(torch.linspace(-2, 2, 9))
    for epoch in (1, 2):
        parts = []
        for rank in (0, 1):
            g = torch.Generator().manual_seed(100 * epoch + rank)
            size = 3 if rank == 0 else 2
            parts.append(
                (
                    torch.randperm(9, generator=g)[:size],
                    torch.randn(size, 3, generator=g),
                    torch.randn(size, 2, generator=g),
                    torch.randn(size, 2, generator=g),
                )
            )
        index, m, t, a = (torch.cat(x) for x in zip(*parts))
        single.update(index, {"M": m, "T": t, "A": a}, epoch=epoch)
    for name in s0:
        assert torch.equal(s0[name], s1[name]), name
        assert torch.allclose(s0[name].float(), single.state_dict()[name].float(), atol=1e-6), name
    assert not torch.equal(s0["labels_T"], s0["labels_M"])  # epoch 2 did move the labels
