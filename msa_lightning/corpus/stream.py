"""SKESL pretraining batches streamed from litdata shards (VoxCeleb scale, multi-node DDP).

``msa pretrain-data build ... --out OUT`` writes ``OUT/manifest.json`` and two litdata ``optimize``
outputs, ``OUT/train`` and ``OUT/valid``, whose items are ``{"id", "text", "audio" [Ta, 33], "vision"
[Tv, 709]}`` cut to the manifest's ``audio_frames``/``vision_frames``. :class:`SKESLStreamDataModule`
reads them and serves exactly the batches
:class:`~msa_lightning.papers.skesl.data.SKESLMaskedDataModule` serves (masked transcript ids, frames
padded to the manifest's lengths with their lengths, empty ``labels``, ``extras["skesl_target"]`` and
``extras["skesl_label"]``), so ``SKESLPretrain`` reads either.

**litdata's public API only.** The shards are read item by item with ``litdata.StreamingDataset(dir)[i]``
(documented random access; local chunks are memory-mapped in place), the number of clips per chunk comes
from the shards' ``index.json``; the order of an epoch, the shares of ranks and workers and the resume
position are this module's (a torch ``DataLoader`` over a map-style :class:`ShardClips` with the rows of
the epoch as its sampler), not litdata's shuffler, distributed environment or loader state, so a litdata
release that changes those internals changes nothing here.

**Masking** happens here, per batch, with :func:`~msa_lightning.papers.skesl.masking.mask_sentiment_words`
(one tokenizer call per batch; the random fallback is drawn from ``(mask_seed, epoch, clip id)``): a clip gets
the same masked word on every rank, worker and resume (a word without lexicon entry another one each
training epoch, as the released code draws it), and the shards do not depend on the tokenizer.

**Sharding across ranks and workers.** litdata's own assignment gives every rank the same number of
*full* batches and then either drops the rest (``drop_last``, its default under DDP) or hands it to the
last rank (which then takes more steps than the others: DDP hangs). Neither is acceptable here, so the
loader makes its own (:func:`epoch_shares`, the order litdata's ``EvenSplit`` shuffler of earlier
versions of this module produced, batch for batch):

* each epoch the chunks are put in an order drawn from ``(seed, epoch)`` (not shuffled: file order),
  and the items of that sequence are cut into contiguous shares, one per (rank, worker): rank ``r``
  gets ``N // W`` items, plus one for the first ``N % W`` ranks; a rank's share is split the same way
  among its loader workers. Shares are disjoint and cover every clip exactly once: nothing is
  dropped, nothing repeated; items inside a chunk are permuted by ``(seed, epoch, chunk)``;
* a batch mixes the clips of the chunks its rank (worker) reads at that moment, as with litdata's own
  shuffle: the randomness of batches is that of the chunk order plus the order inside chunks. Shards
  written in clip-id order hold one VoxCeleb speaker's clips together; a batch then mixes as many
  chunks as the rank has loader workers (the rank takes one clip of each worker's share in turn,
  :func:`interleave`; the DataLoader hands the rows to its workers round-robin, so each worker reads
  one share, chunk by chunk);
* the loader workers hand over single clips (padded there); the main process groups them into
  batches of ``batch_size`` and masks them. Every rank takes the same number of training batches
  (DDP steps in lockstep) by the suite's rule (:mod:`msa_lightning.data.sampling`): a trailing single
  clip joins the previous batch, and a rank with one clip fewer lets its last two batches share
  the rest. So the remainder of ``N`` over ranks and batches never needs equalising by repeats or drops.

Nodes read the same ``OUT`` either on a shared filesystem (every rank opens the chunk files in place,
memory-mapped) or from an identical copy at the same path on each node's local disk; a resumed run
must name the same path.

**Resume.** The training loader (:class:`SKESLStreamLoader`) is stateful in Lightning's sense (Lightning
2.6 stores its ``state_dict`` in checkpoints under ``loops.fit_loop.state_dict.combined_loader`` and
loads it before the first batch of a resumed run; it fetches no batch ahead of the step for a loader
with a length, so the state is exactly the batches trained on): the epoch and the batches taken in it.
On resume each rank recomputes its own clips from the batch count (only rank 0's loader state is in
the checkpoint, and ranks' last batches can differ in size) and serves the rest of that epoch's order.
A run resumed mid-epoch sees exactly the clips its epoch had not served yet. A resume needs the same
number of ranks, loader workers, batch size, seed and shards; anything else is one DataError (a
checkpoint from the end of an epoch resumes with any of them changed). The state keeps the keys the
earlier litdata-based loader wrote (``current_epoch``, ``msa``), so its checkpoints resume too.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
from typing import Any, Iterator, Sequence

import numpy as np
from litdata import StreamingDataset
from torch.utils.data import DataLoader, Dataset, Sampler

from msa_lightning.batch import MSABatch
from msa_lightning.corpus.format import chunk_sizes
from msa_lightning.data.sampling import batch_sizes, count_batches
from msa_lightning.errors import DataError

log = logging.getLogger(__name__)

#: per-item decoding where this litdata has ``batch_decode`` (else it decodes a window of items around each read)
_PER_ITEM_DECODE = {"batch_decode": 0} if "batch_decode" in inspect.signature(StreamingDataset).parameters else {}


# ---------------------------------------------------------------------------------------------- sharding
def rank_shares(total: int, world_size: int) -> list[int]:
    """Clips per rank: ``total // world_size``, one more for the first ``total % world_size`` ranks."""
    base, extra = divmod(total, world_size)
    return [base + (r < extra) for r in range(world_size)]


def epoch_shares(
    sizes: Sequence[int], seed: int, epoch: int, shuffle: bool, world_size: int, num_workers: int
) -> list[np.ndarray]:
    """The rows (global item indices) of every (rank, loader worker) share of ``epoch``, rank-major (module
    docstring): chunks in an order drawn from ``(seed, epoch)``, the sequence of their items cut into contiguous
    shares of :func:`rank_shares` sizes per rank and then per worker, the rows of each piece of a chunk permuted
    by ``(seed, epoch, chunk)``. Without ``shuffle``: the shards' order."""
    offsets = np.cumsum([0, *sizes])
    workers = max(int(num_workers), 1)
    counts = [n for share in rank_shares(int(offsets[-1]), world_size) for n in rank_shares(share, workers)]
    pieces: list[list[np.ndarray]] = [[] for _ in counts]
    order = np.random.RandomState([seed, epoch]).permutation(len(sizes)) if shuffle else np.arange(len(sizes))
    share, left = 0, counts[0] if counts else 0
    for chunk in order.tolist():
        begin, end = int(offsets[chunk]), int(offsets[chunk + 1])
        while begin < end:
            while left == 0:  # the next share that still takes items
                share += 1
                left = counts[share]
            take = min(left, end - begin)
            rows = np.arange(begin, begin + take)
            if shuffle:
                rows = np.random.RandomState([seed, epoch, chunk]).permutation(rows)
            pieces[share].append(rows)
            begin += take
            left -= take
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in pieces]


def interleave(shares: Sequence[np.ndarray]) -> np.ndarray:
    """One rank's clips in the order its loader hands them over: the workers' shares in turn (one clip of each
    worker's share, then the next of each), as a DataLoader takes items from its workers round-robin."""
    if len(shares) == 1:
        return shares[0]
    width = max(len(s) for s in shares)
    table = np.full((len(shares), width), -1, dtype=np.int64)
    for w, rows in enumerate(shares):
        table[w, : len(rows)] = rows
    flat = table.T.reshape(-1)
    return flat[flat >= 0]


class ShardClips(Dataset):
    """A split of the shards as a map-style dataset: row ``i`` is the shards' item ``i`` (read with litdata's
    public ``StreamingDataset(...)[i]``, opened once per process), padded to the manifest's frame counts where it
    is read (in the loader worker), with its lengths and its row."""

    def __init__(self, input_dir: str, audio_frames: int, vision_frames: int, audio_dim: int, vision_dim: int) -> None:
        self.input_dir = str(input_dir)
        self.sizes = chunk_sizes(input_dir)
        self.frames = {"audio": int(audio_frames), "vision": int(vision_frames)}
        self.dims = {"audio": int(audio_dim), "vision": int(vision_dim)}
        self._shards, self._pid = None, None

    def __len__(self) -> int:
        return int(sum(self.sizes))

    def __getstate__(self) -> dict:  # a loader worker started by spawn opens its own reader
        return {**self.__dict__, "_shards": None, "_pid": None}

    def shards(self) -> StreamingDataset:
        """This process's reader (a forked loader worker opens its own rather than share the parent's)."""
        if self._shards is None or self._pid != os.getpid():
            # shuffle=False: the order is ours (the rows asked for); batch_decode=0: decode the clip that is read,
            # not a window around it (clips are read permuted inside a chunk: windows would be decoded again and
            # again; 50-70 times slower per clip here with litdata 0.2.76's "auto")
            self._shards = StreamingDataset(self.input_dir, shuffle=False, **_PER_ITEM_DECODE)
            self._pid = os.getpid()
        return self._shards

    def __getitem__(self, row: int) -> dict:
        row = int(row)
        item = self.shards()[row]
        out = {"id": str(item["id"]), "text": str(item["text"]), "row": row}
        for key in ("audio", "vision"):
            x = np.asarray(item[key], dtype=np.float32)
            limit, dim = self.frames[key], self.dims[key]
            if x.ndim != 2 or x.shape[1] != dim or x.shape[0] > limit:
                raise DataError(
                    f"{self.input_dir}: clip {out['id']!r} has {key} of shape {tuple(x.shape)}; "
                    f"the manifest promises [at most {limit}, {dim}]"
                )
            padded = np.zeros((limit, dim), dtype=np.float32)
            padded[: len(x)] = x
            out[key], out[f"{key}_length"] = padded, len(x)
        return out


class _Rows(Sampler):
    """The rows the loader's DataLoader reads next (set by :class:`SKESLStreamLoader` before each iteration)."""

    def __init__(self) -> None:
        self.rows = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[int]:
        return iter(self.rows.tolist())


def _as_is(clip: dict) -> dict:
    """The DataLoader's collate: the workers hand over one padded clip at a time (batches are formed in the main
    process)."""
    return clip


class SKESLStreamLoader:
    """Single clips of this rank's share (a torch ``DataLoader`` over :class:`ShardClips`), grouped into masked
    :class:`MSABatch` es by a fixed plan; stateful in Lightning's sense (``state_dict``/``load_state_dict``).

    Not a ``DataLoader`` itself: Lightning then leaves it as it is (no sampler injected under DDP, no loader
    re-created for ``predict``), and the order is this class's alone.

    Args:
        clips: a :class:`ShardClips`.
        batch_size: clips per batch.
        collate: turns a list of clips into a batch (:meth:`SKESLStreamDataModule.collate`).
        equal_batches: training: every rank takes the same number of batches (module docstring);
            evaluation: plain batches of ``batch_size`` over this rank's share.
        shuffle, seed: the epoch order (:func:`epoch_shares`).
        world_size, rank: the DDP ranks (1 and 0 without DDP).
    """

    def __init__(
        self,
        clips: ShardClips,
        batch_size: int,
        collate,
        equal_batches: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        self.clips, self.clips_per_batch, self.collate = clips, int(batch_size), collate
        self.equal_batches = equal_batches
        self.num_workers, self.pin_batches = int(num_workers), pin_memory
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.world_size, self.rank = int(world_size), int(rank)
        self._rows = _Rows()
        self._loader = DataLoader(
            clips, batch_size=None, sampler=self._rows, num_workers=self.num_workers, collate_fn=_as_is
        )
        self.current_epoch = 0  # the epoch of the last iteration (the next one draws the order of epoch + 1)
        self._restoring = False  # the next iteration continues current_epoch (after a mid-epoch resume)
        self._taken = 0  # batches of the current epoch handed to the training loop
        self._skip = 0  # batches to leave out of the next epoch's iteration (after a mid-epoch resume)

    # ------------------------------------------------------------------ Lightning's epoch
    #: no batch sampler: Lightning's checks of a loader's order look at ``sampler`` alone
    batch_sampler = None

    @property
    def sampler(self) -> SKESLStreamLoader:
        """Lightning calls ``set_epoch`` on a loader's ``sampler`` at the start of every epoch: this loader's own."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """The next iteration serves the trainer's epoch ``epoch`` (the order of loader epoch ``epoch + 1``), also
        after a resume from a checkpoint written at an epoch end, which Lightning restores without the loader's
        state. A mid-epoch resume keeps the restored epoch."""
        if not self._restoring:
            self.current_epoch = int(epoch)

    # ------------------------------------------------------------------ the plan
    def shares(self) -> list[int]:
        return rank_shares(self.dataset_total(), self.world_size)

    def dataset_total(self) -> int:
        """Clips in the split (all ranks)."""
        return len(self.clips)

    def plan(self, rank: int | None = None) -> list[int]:
        """Batch sizes of ``rank`` (default: this process's) in every epoch."""
        shares = self.shares()
        share = shares[self.rank if rank is None else rank]
        if not self.equal_batches:
            full, rest = divmod(share, self.clips_per_batch)
            return [self.clips_per_batch] * full + ([rest] if rest else [])
        return batch_sizes(share, self.clips_per_batch, count_batches(max(shares), self.clips_per_batch))

    def rows(self, epoch: int) -> np.ndarray:
        """This rank's clips of ``epoch`` in the order they are served."""
        workers = max(self.num_workers, 1)
        shares = epoch_shares(self.clips.sizes, self.seed, epoch, self.shuffle, self.world_size, workers)
        return interleave(shares[self.rank * workers : (self.rank + 1) * workers])

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[MSABatch]:
        # a generator: nothing (no epoch counted, no worker started) before the first batch is asked for
        if not self._restoring:
            self.current_epoch += 1
        self._restoring = False
        plan = self.plan()
        skip, self._skip = self._skip, 0
        self._rows.rows = self.rows(self.current_epoch)[sum(plan[:skip]) :]
        clips = iter(self._loader)
        self._taken = skip
        for number, size in enumerate(plan[skip:], start=skip + 1):
            group = list(itertools.islice(clips, size))
            if len(group) < size:
                raise RuntimeError(
                    f"the shard loader ran out of clips after {len(group)} of a batch of {size} "
                    f"(plan {plan}); this is a bug"
                )
            if number == len(plan):
                # finish the DataLoader's iteration (its workers stop): Lightning takes no batch beyond the length
                for clip in clips:
                    raise RuntimeError(f"the shard loader has clips beyond its plan ({clip['id']!r}); this is a bug")
            batch = self.collate(group)
            self._taken += 1
            yield batch.pin_memory() if self.pin_batches else batch

    # ------------------------------------------------------------------ resume
    def _settings(self) -> dict[str, Any]:
        return {
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "batch_size": self.clips_per_batch,
            "clips": self.dataset_total(),
            "seed": self.seed,
            "shuffle": self.shuffle,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "current_epoch": self.current_epoch,
            "msa": {"batches": self._taken, "epoch_batches": len(self), **self._settings()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ours = state.get("msa")
        if ours is None:
            raise DataError(
                "the checkpoint's training loader state was not written by SKESLStreamLoader "
                "(another DataModule?); resume with the data it was trained on"
            )
        taken = int(ours["batches"])
        if taken >= int(ours.get("epoch_batches", taken)):
            taken = 0  # the epoch was complete: the next one starts from its first batch, whatever the settings
        differ = [
            f"{k}: checkpoint {ours.get(k)!r}, now {v!r}" for k, v in self._settings().items() if ours.get(k) != v
        ]
        if differ and taken:
            raise DataError(
                f"{self.clips.input_dir}: a mid-epoch resume of the streamed shards needs the "
                f"same setting as when the checkpoint was written ({'; '.join(differ)}); or resume "
                f"from a checkpoint written at the end of an epoch (last.ckpt)"
            )
        # the state is rank 0's; each rank recomputes its own clips from the batch count (last batches differ)
        self.current_epoch = int(state["current_epoch"])
        self._restoring = taken > 0  # else the next iteration starts the next epoch afresh
        self._skip = self._taken = taken
