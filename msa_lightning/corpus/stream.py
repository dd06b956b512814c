"""SKESL pretraining batches streamed from litdata shards (issue 8, section 3: VoxCeleb scale, multi-node DDP).

``msa pretrain-data build ... --out OUT`` writes ``OUT/manifest.json`` and two litdata ``optimize``
outputs, ``OUT/train`` and ``OUT/valid``, whose items are ``{"id", "text", "audio" [Ta, 33], "vision"
[Tv, 709]}`` cut to the manifest's ``audio_frames``/``vision_frames``. :class:`SKESLStreamDataModule`
reads them and serves exactly the batches
:class:`~msa_lightning.papers.skesl.masking.SKESLMaskedDataModule` serves (masked transcript ids, frames
padded to the manifest's lengths with their lengths, empty ``labels``, ``extras["skesl_target"]`` and
``extras["skesl_label"]``), so ``SKESLPretrain`` reads either.

**litdata's public API only.** The shards are read item by item with ``litdata.StreamingDataset(dir)[i]``
(documented random access; local chunks are memory-mapped in place), the number of clips per chunk comes
from the shards' ``index.json``; the order of an epoch, the shares of ranks and workers and the resume
position are this module's (a torch ``DataLoader`` over a map-style :class:`ShardClips` with the rows of
the epoch as its sampler), not litdata's shuffler, distributed environment or loader state, so a litdata
release that changes those internals changes nothing here.

**Masking** happens here, per batch, with :func:`~msa_lightning.papers.skesl.masking.mask_sentiment_words`
(one tokenizer call per batch; the random fallback is drawn from ``(mask_seed, clip id)``): a clip gets
the same masked word on every rank, worker, epoch and resume, and the shards do not depend on the
tokenizer.

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
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataset
from torch.utils.data import DataLoader, Dataset, Sampler

from msa_lightning.batch import INPUT_FIELDS, MSABatch
from msa_lightning.data.datamodule import TEXT_ID_FIELDS, attached_world, pins_memory, resolve_inputs
from msa_lightning.data.sampling import batch_sizes, count_batches
from msa_lightning.papers.skesl.masking import LABEL_BOUND, _fast_tokenizer, load_intensity_lexicon, mask_sentiment_words
from msa_lightning.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: per-item decoding where this litdata has ``batch_decode`` (else it decodes a window of items around each read)
_PER_ITEM_DECODE = {"batch_decode": 0} if "batch_decode" in inspect.signature(StreamingDataset).parameters else {}
FORMAT = "msa-skesl-shards/1"
SPLITS = ("train", "valid")
#: manifest keys the reader needs
_REQUIRED = ("audio_dim", "vision_dim", "audio_frames", "vision_frames", "splits")


def _build_hint(path: Path) -> str:
    return f"build them with `msa pretrain-data build ... --out {path}` (see configs/skesl/README.md)"


def read_manifest(path: str | Path) -> dict:
    """The validated manifest of the shards folder ``path`` (one DataError naming the folder otherwise)."""
    root = Path(path).expanduser()
    file = root / MANIFEST
    if not file.is_file():
        what = "does not exist" if not root.exists() else f"has no {MANIFEST}"
        raise DataError(f"{root}: no SKESL pretraining shards here (the folder {what}); {_build_hint(root)}")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: unreadable manifest ({err}); {_build_hint(root)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{file}: expected format {FORMAT!r}, found {found!r}")
    if manifest.get("finished") is not True:
        raise DataError(f"{root}: the shard build did not finish (manifest.json has finished: "
                        f"{json.dumps(manifest.get('finished'))}); run `msa pretrain-data build ... --out {root}` "
                        f"again to complete it (finished work is kept)")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise DataError(f"{file}: missing {missing} (written by `msa pretrain-data build`)")
    for split in SPLITS:
        index = root / split / "index.json"
        if not index.is_file():
            raise DataError(f"{root / split}: no litdata index.json; {_build_hint(root)}")
        count = sum(chunk_sizes(root / split))
        expected = manifest["splits"].get(split)
        if expected != count:
            raise DataError(f"{root / split}: the shards hold {count} clips but manifest.json says {expected} "
                            f"(shards and manifest are from different builds); {_build_hint(root)}")
    return manifest


# ---------------------------------------------------------------------------------------------- sharding
def chunk_sizes(folder: str | Path) -> list[int]:
    """Clips per chunk of the litdata shards in ``folder``, in the order of their ``index.json`` (the order of the
    global item indices ``StreamingDataset`` serves by ``dataset[i]``)."""
    index = Path(folder) / "index.json"
    try:
        return [int(c["chunk_size"]) for c in json.loads(index.read_text())["chunks"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{index}: unreadable litdata index ({type(err).__name__}: {err})") from None


def rank_shares(total: int, world_size: int) -> list[int]:
    """Clips per rank: ``total // world_size``, one more for the first ``total % world_size`` ranks."""
    base, extra = divmod(total, world_size)
    return [base + (r < extra) for r in range(world_size)]


def epoch_shares(sizes: Sequence[int], seed: int, epoch: int, shuffle: bool, world_size: int,
                 num_workers: int) -> list[np.ndarray]:
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

    def __init__(self, input_dir: str, audio_frames: int, vision_frames: int, audio_dim: int,
                 vision_dim: int) -> None:
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
                raise DataError(f"{self.input_dir}: clip {out['id']!r} has {key} of shape {tuple(x.shape)}; "
                                f"the manifest promises [at most {limit}, {dim}]")
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

    def __init__(self, clips: ShardClips, batch_size: int, collate, equal_batches: bool = True,
                 num_workers: int = 0, pin_memory: bool = False, shuffle: bool = False, seed: int = 0,
                 world_size: int = 1, rank: int = 0) -> None:
        self.clips, self.clips_per_batch, self.collate = clips, int(batch_size), collate
        self.equal_batches = equal_batches
        self.num_workers, self.pin_batches = int(num_workers), pin_memory
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.world_size, self.rank = int(world_size), int(rank)
        self._rows = _Rows()
        self._loader = DataLoader(clips, batch_size=None, sampler=self._rows, num_workers=self.num_workers,
                                  collate_fn=_as_is)
        self.current_epoch = 0  # the epoch of the last iteration (the next one draws the order of epoch + 1)
        self._restoring = False  # the next iteration continues current_epoch (after a mid-epoch resume)
        self._taken = 0  # batches of the current epoch handed to the training loop
        self._skip = 0  # batches to leave out of the next epoch's iteration (after a mid-epoch resume)

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
        return interleave(shares[self.rank * workers:(self.rank + 1) * workers])

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[MSABatch]:
        # a generator: nothing (no epoch counted, no worker started) before the first batch is asked for
        if not self._restoring:
            self.current_epoch += 1
        self._restoring = False
        plan = self.plan()
        skip, self._skip = self._skip, 0
        self._rows.rows = self.rows(self.current_epoch)[sum(plan[:skip]):]
        clips = iter(self._loader)
        self._taken = skip
        for number, size in enumerate(plan[skip:], start=skip + 1):
            group = list(itertools.islice(clips, size))
            if len(group) < size:
                raise RuntimeError(f"the shard loader ran out of clips after {len(group)} of a batch of {size} "
                                   f"(plan {plan}); this is a bug")
            if number == len(plan):
                # finish the DataLoader's iteration (its workers stop): Lightning takes no batch beyond the length
                for clip in clips:
                    raise RuntimeError(f"the shard loader has clips beyond its plan ({clip['id']!r}); this is a bug")
            batch = self.collate(group)
            self._taken += 1
            yield batch.pin_memory() if self.pin_batches else batch

    # ------------------------------------------------------------------ resume
    def _settings(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "num_workers": self.num_workers, "batch_size": self.clips_per_batch,
                "clips": self.dataset_total(), "seed": self.seed, "shuffle": self.shuffle}

    def state_dict(self) -> dict[str, Any]:
        return {"current_epoch": self.current_epoch,
                "msa": {"batches": self._taken, "epoch_batches": len(self), **self._settings()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ours = state.get("msa")
        if ours is None:
            raise DataError("the checkpoint's training loader state was not written by SKESLStreamLoader "
                            "(another DataModule?); resume with the data it was trained on")
        taken = int(ours["batches"])
        if taken >= int(ours.get("epoch_batches", taken)):
            taken = 0  # the epoch was complete: the next one starts from its first batch, whatever the settings
        differ = [f"{k}: checkpoint {ours.get(k)!r}, now {v!r}" for k, v in self._settings().items()
                  if ours.get(k) != v]
        if differ and taken:
            raise DataError(f"{self.clips.input_dir}: a mid-epoch resume of the streamed shards needs the "
                            f"same setting as when the checkpoint was written ({'; '.join(differ)}); or resume "
                            f"from a checkpoint written at the end of an epoch (last.ckpt)")
        # the state is rank 0's; each rank recomputes its own clips from the batch count (last batches differ)
        self.current_epoch = int(state["current_epoch"])
        self._restoring = taken > 0  # else the next iteration starts the next epoch afresh
        self._skip = self._taken = taken


# ---------------------------------------------------------------------------------------------- data module
class SKESLStreamDataModule(L.LightningDataModule):
    """SKESL pretraining data from the shards ``msa pretrain-data build`` writes (module docstring).

    Args:
        path: the build's ``--out`` folder (``manifest.json``, ``train/``, ``valid/``), on a shared
            filesystem or copied to the same path on every node.
        tokenizer: the model's tokenizer (name or path; a fast tokenizer with a mask token).
        text_max_length: tokens per transcript (the authors' pretraining used 39).
        lexicon: ``vader`` or a VADER-format file.
        mask_seed: seed of the random-word fallback (drawn per clip id).
        batch_size: training clips per batch (per rank); ``eval_batch_size`` for validation.
        num_workers: loader worker processes per rank (they read and pad clips; batches are masked in
            the main process).
        shuffle: draw the chunk order and the order inside each chunk anew every epoch from
            ``(shuffle_seed, epoch)``; False keeps the shards' order.
        shuffle_seed: None = the global seed of ``seed_everything`` (``PL_GLOBAL_SEED``), else 0.
        trim_text: cut each batch's trailing token padding (exact, as the feature-file DataModules do).
        inputs: batch fields to load (None: what the model declares in ``required_inputs``).
    """

    token_extras = ("skesl_target",)

    def __init__(self, path: str, tokenizer: str = "bert-base-uncased", text_max_length: int = 39,
                 lexicon: str = "vader", mask_seed: int = 0, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 0, shuffle: bool = True, shuffle_seed: int | None = None, trim_text: bool = True,
                 inputs: list[str] | None = None) -> None:
        super().__init__()
        for key, value, low in (("batch_size", batch_size, 2), ("eval_batch_size", eval_batch_size, 1),
                                ("num_workers", num_workers, 0), ("text_max_length", text_max_length, 3)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"data.init_args.{key}: expected an integer >= {low}, found {value!r}"
                                  + (" (a training batch of one clip is not formed)" if key == "batch_size" else ""))
        if inputs is not None and set(inputs) - set(INPUT_FIELDS):
            raise ConfigError(f"data.init_args.inputs: unknown fields {sorted(set(inputs) - set(INPUT_FIELDS))}")
        self.path = Path(path).expanduser()
        self.tokenizer_name, self.text_max_length = tokenizer, text_max_length
        self.lexicon, self.mask_seed = lexicon, int(mask_seed)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.shuffle, self.shuffle_seed = num_workers, bool(shuffle), shuffle_seed
        self.trim_text = bool(trim_text)
        self.inputs = set(inputs) if inputs is not None else None
        self._manifest: dict | None = None
        self._tokenizer = None

    # ------------------------------------------------------------------ facts
    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = read_manifest(self.path)
        return self._manifest

    @property
    def feature_file(self) -> Path:  # how messages name the data (the CLI's data facts, errors)
        return self.path

    metric_family = "mosi"

    def data_facts(self) -> dict:
        """Feature sizes from the manifest; the masked words' intensities are bounded by 3 (Section 4.3)."""
        m = self.manifest
        return {"audio_dim": int(m["audio_dim"]), "vision_dim": int(m["vision_dim"]), "label_bound": LABEL_BOUND,
                "metric_family": self.metric_family, "num_train_samples": int(m["splits"]["train"])}

    def num_train_samples(self) -> int:
        return int(self.manifest["splits"]["train"])

    def train_labels(self, key: str = "M") -> np.ndarray:
        raise DataError(f"{self.path}: {type(self).__name__} serves unlabeled clips (no labels {key!r})")

    @property
    def train_seed(self) -> int:
        if self.shuffle_seed is not None:
            return int(self.shuffle_seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        read_manifest(self.path)

    def setup(self, stage: str | None = None) -> None:
        self.manifest  # noqa: B018  (validates before any loader is built)
        self._loaded_inputs = resolve_inputs(self, self.inputs)

    def _fields(self) -> set[str] | None:
        return getattr(self, "_loaded_inputs", None)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = _fast_tokenizer(self.tokenizer_name)
            load_intensity_lexicon(self.lexicon)  # a bad lexicon fails before the first batch
        return self._tokenizer

    # ------------------------------------------------------------------ batches
    def collate(self, clips: Sequence[dict], split: str = "train") -> MSABatch:
        """Clips (padded by the loader workers) -> one masked batch, as SKESLMaskedDataModule's."""
        fields = self._fields()
        ids = [c["id"] for c in clips]
        texts = [c["text"] for c in clips]
        masked = mask_sentiment_words(texts, self.tokenizer, self.text_max_length, self.lexicon, ids, self.mask_seed,
                                      where=f"{self.path / split}")
        text = torch.from_numpy(masked.ids)
        target = torch.from_numpy(masked.target)
        if self.trim_text:  # the longest text of the batch decides the width (exact: padding is never attended)
            width = int(text[:, 1].sum(1).max())
            text, target = text[..., :width], target[:, :width]
        batch = MSABatch(index=torch.tensor([c["row"] for c in clips], dtype=torch.long), ids=ids, raw_text=texts,
                         labels={}, extras={"skesl_target": target,
                                            "skesl_label": torch.from_numpy(masked.label)})
        if fields is None or set(TEXT_ID_FIELDS) & fields:
            batch.text_ids, batch.text_mask, batch.text_segment = text[:, 0], text[:, 1], text[:, 2]
        for key in ("audio", "vision"):
            if fields is None or key in fields or f"{key}_lengths" in fields:
                setattr(batch, key, torch.from_numpy(np.stack([c[key] for c in clips])))
                setattr(batch, f"{key}_lengths", torch.tensor([c[f"{key}_length"] for c in clips], dtype=torch.long))
        return batch

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        return attached_world(self)

    def _pin_memory(self) -> bool:
        return pins_memory(self)

    def _loader(self, split: str, train: bool) -> SKESLStreamLoader:
        m = self.manifest
        world, rank = self._world()
        total = int(m["splits"][split])
        if train and total < world:
            raise DataError(f"{self.path / split}: {total} clips, fewer than the {world} DDP processes")
        if total == 0:
            raise DataError(f"{self.path / split}: the split has no clips (build the shards with a valid share > 0 "
                            f"to validate)")
        clips = ShardClips(str(self.path / split), m["audio_frames"], m["vision_frames"], m["audio_dim"],
                           m["vision_dim"])
        size = self.batch_size if train else self.eval_batch_size
        loader = SKESLStreamLoader(clips, size, lambda group: self.collate(group, split), equal_batches=train,
                                   num_workers=self.num_workers, pin_memory=self._pin_memory(),
                                   shuffle=self.shuffle and train, seed=self.train_seed, world_size=world, rank=rank)
        if train:
            # the loader counts its epochs from here (it draws epoch e's order at its e-th iteration): a loader
            # built anew for a later epoch (reload_dataloaders_every_n_epochs) continues the count
            loader.current_epoch = int(getattr(getattr(self, "trainer", None), "current_epoch", 0) or 0)
        if train and rank == 0:
            shares = loader.shares()
            log.info("%s: %d training clips over %d rank(s) (%s per rank), %d batches of up to %d per rank and "
                     "epoch; none dropped or repeated", self.path / split, total, world,
                     "/".join(map(str, sorted(set(shares)))), len(loader), size)
        return loader

    def train_dataloader(self) -> SKESLStreamLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> SKESLStreamLoader:
        return self._loader("valid", train=False)

    def predict_dataloader(self) -> SKESLStreamLoader:
        """The held-out clips in shard order (``msa predict``: predicted and lexicon intensity per clip)."""
        return self._loader("valid", train=False)
