"""The training order: reproducible from (seed, epoch), sharded across DDP ranks, resumable mid-epoch.

:class:`EpochBatchSampler` yields whole batches (lists of rows). The order of an epoch is a
permutation drawn from ``(seed, epoch)`` alone, so a resumed run sees the same order as an
uninterrupted one; Lightning calls ``set_epoch`` at every epoch start. Under DDP each rank takes a
disjoint shard of that permutation (``perm[rank::world_size]``); nothing is repeated or dropped,
and every rank gets the same number of batches (DDP steps in lockstep). A batch of one sample
never occurs when ``batch_size >= 3`` (BatchNorm in training mode fails on it): a trailing single
sample joins the previous batch, and when a smaller shard would end on one, the previous batch
gives it one sample.

Opt-in, off by default (it changes which samples share a batch): ``lengths`` groups samples of similar
length. The epoch's permutation is cut into pools of ``pool_batches`` batches (of every rank together), each
pool is sorted by length, the sorted order is cut into blocks of one batch per rank, and the full blocks are
put in a random order (the partial last block stays last, so the merging rules above still hold). It is still
a permutation drawn from ``(seed, epoch)`` alone: every sample once per epoch, the same order on resume.
Recurrent encoders run over each batch's longest sequence, so less padding is less work.

It subclasses :class:`~torch.utils.data.DistributedSampler`, so Lightning's automatic sampler
injection (``use_distributed_sampler``) recognises it as already distributed and keeps it.

:class:`ResumableDataLoader` is stateful in Lightning's sense (``state_dict``/``load_state_dict``,
stored in checkpoints under ``loops.fit_loop.state_dict.combined_loader``): the state is the epoch
and the number of batches the loop has taken from it, so a mid-epoch checkpoint resumes at the
next batch. Counting happens where the training loop takes batches (not in the sampler, which
loader workers read ahead of the loop).
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, DistributedSampler

from msa_lightning.errors import ConfigError, DataError


def batch_sizes(num_samples: int, batch_size: int, num_batches: int | None = None) -> list[int]:
    """Sizes of the batches of ``num_samples`` rows: ``batch_size`` each, the remainder last, a
    trailing single row merged into the previous batch; with ``num_batches`` given (a smaller DDP
    shard must match the largest one's count), a last batch of one borrows a row from the one before."""
    if num_batches is None:
        num_batches = count_batches(num_samples, batch_size)
    if num_batches <= 0:
        return []
    sizes = [batch_size] * (num_batches - 1)
    sizes.append(num_samples - batch_size * (num_batches - 1))
    if sizes[-1] == 1 and num_batches > 1 and sizes[-2] > 2:
        sizes[-2] -= 1
        sizes[-1] = 2
    return sizes


def count_batches(num_samples: int, batch_size: int) -> int:
    """Batches of an epoch of ``num_samples`` (``ceil``, less one when the last would hold one sample)."""
    if num_samples <= 0:
        return 0
    n = math.ceil(num_samples / batch_size)
    if n > 1 and num_samples % batch_size == 1:
        n -= 1
    return n


class EpochBatchSampler(DistributedSampler):
    """Batches of rows of a dataset of ``num_samples``; see the module docstring.

    Args:
        shuffle: a (seed, epoch) permutation; False keeps the row order (still sharded, merged).
        num_replicas, rank: DDP world size and this rank (1 and 0 outside DDP).
        lengths: ``[num_samples]`` sequence lengths: batches of similar length (module docstring); None = off.
        pool_batches: batches per sorting pool (larger: less padding, batches less random).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        lengths=None,
        pool_batches: int = 50,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"lengths has {len(lengths)} entries, the dataset {num_samples} samples")
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be >= 1, got {pool_batches}")
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.pool_batches = int(pool_batches)
        # DistributedSampler only stores these (it never reads the dataset but for its length)
        super().__init__(range(num_samples), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size, self.batch_size = num_samples, batch_size
        self.resume_skip: tuple[int, int] | None = None  # (epoch, batches to skip) after a mid-epoch resume

    def shard_size(self, rank: int) -> int:
        return len(range(rank, self.size, self.num_replicas))

    def __len__(self) -> int:
        """Batches per epoch on every rank (the largest shard's count)."""
        return count_batches(self.shard_size(0), self.batch_size)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """All rows in the order of ``epoch`` (before sharding)."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(self.size)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.size)
        if self.lengths is None:
            return order
        block = self.batch_size * self.num_replicas  # one batch of every rank (ranks take rows round-robin)
        pool = block * self.pool_batches
        order = np.concatenate(
            [
                chunk[np.argsort(self.lengths[chunk], kind="stable")]
                for chunk in np.split(order, range(pool, self.size, pool))
            ]
        )
        full = self.size // block
        blocks = order[: full * block].reshape(full, block)[rng.permutation(full)]
        return np.concatenate([blocks.reshape(-1), order[full * block :]])

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch``."""
        shard = self.order(epoch)[self.rank :: self.num_replicas]
        bounds = np.cumsum([0, *batch_sizes(len(shard), self.batch_size, len(self))])
        return [shard[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        skip = 0
        if self.resume_skip is not None:
            epoch, count = self.resume_skip
            self.resume_skip = None  # one resumed epoch only
            if epoch == self.epoch:
                skip = count
        yield from batches[skip:]


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochBatchSampler` (the sampler yields whole batches, so the
    loader's own ``batch_size`` is None) whose position Lightning saves and restores.

    Lightning re-creates a training loader with a plain sequential sampler for ``overfit_batches``;
    that sampler is then replaced by an unshuffled :class:`EpochBatchSampler` of ``rows_per_batch``.
    """

    def __init__(self, dataset, sampler=None, rows_per_batch: int | None = None, **kwargs) -> None:
        if not isinstance(sampler, EpochBatchSampler):
            if rows_per_batch is None:
                raise ValueError("ResumableDataLoader needs an EpochBatchSampler or rows_per_batch")
            sampler = EpochBatchSampler(len(dataset), rows_per_batch, shuffle=False)
        for key in ("batch_size", "batch_sampler", "shuffle", "drop_last", "sampler"):  # set by the sampler
            kwargs.pop(key, None)
        super().__init__(dataset, sampler=sampler, batch_size=None, **kwargs)
        self.rows_per_batch = sampler.batch_size
        self._taken = 0  # batches of the current epoch handed to the training loop
        self._epoch = sampler.epoch

    def __iter__(self):
        # A generator: nothing (no worker, no index) starts before the loop asks for the first
        # batch, which Lightning does after `set_epoch` of the epoch to come.
        sampler: EpochBatchSampler = self.sampler
        skip = sampler.resume_skip[1] if sampler.resume_skip and sampler.resume_skip[0] == sampler.epoch else 0
        self._epoch, self._taken = sampler.epoch, skip
        for batch in super().__iter__():
            self._taken += 1
            yield batch

    def state_dict(self) -> dict:
        sampler: EpochBatchSampler = self.sampler
        state = {
            "epoch": self._epoch,
            "batches": self._taken,
            "seed": sampler.seed,
            "num_samples": sampler.size,
            "batch_size": sampler.batch_size,
            "shuffle": sampler.shuffle,
        }
        if sampler.lengths is not None:  # only then: the states of unbucketed runs stay as they were
            state["bucketed"] = True
        return state

    def load_state_dict(self, state: dict) -> None:
        sampler: EpochBatchSampler = self.sampler
        state = {"bucketed": False, **state}
        for key in ("num_samples", "batch_size", "seed", "shuffle", "bucketed"):
            ours = {
                "num_samples": sampler.size,
                "batch_size": sampler.batch_size,
                "seed": sampler.seed,
                "shuffle": sampler.shuffle,
                "bucketed": sampler.lengths is not None,
            }[key]
            if state.get(key, ours) != ours:
                raise DataError(
                    f"the checkpoint's training loader state does not fit this run: {key} "
                    f"expected {state[key]!r} (as when it was saved), found {ours!r}; a mid-epoch "
                    "resume needs the same data, batch_size, shuffle seed and bucket_by_length"
                )
        epoch, taken = int(state["epoch"]), int(state["batches"])
        if taken >= len(sampler):  # the epoch was complete: the next one starts from its first batch
            epoch, taken = epoch + 1, 0
        sampler.set_epoch(epoch)
        sampler.resume_skip = (epoch, taken) if taken else None
        self._epoch, self._taken = epoch, taken


def id_draws(ids: Sequence[str], seed: int) -> np.ndarray:
    """One uniform number in [0, 1) per clip, from ``(seed, clip id)`` alone."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, clip in enumerate(ids):  # one hash per clip: the draw must not depend on the order of the clips
        digest = hashlib.blake2b(f"{seed}\x00{clip}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def split_global_batch(global_batch: int, world: int, max_per_device: int) -> tuple[int, int]:
    """``(per-device batch, accumulation)`` with ``per-device x world x accumulation == global_batch`` and the
    per-device batch as large as possible up to ``max_per_device`` (the fewest accumulated micro-batches).

    Ranks take rows of one shuffled order round-robin (:class:`EpochBatchSampler`), so an optimiser step of any
    world size sees the same clips as the step of one device with one batch of ``global_batch``."""
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
        raise ConfigError(f"global_batch_size: expected a positive integer, found {global_batch!r}")
    if global_batch % world:
        raise ConfigError(
            f"global_batch_size {global_batch} cannot be split evenly over {world} devices (DDP processes); "
            f"give a multiple of {world}"
        )
    per_world = global_batch // world
    accumulation = next(a for a in range(1, per_world + 1) if per_world % a == 0 and per_world // a <= max_per_device)
    return per_world // accumulation, accumulation
