"""SKESL streaming loader throughput against the model step: does the reader outrun the model?

Writes paper-shaped shards once (litdata ``optimize``; clips of ~12 words, audio [<=400, 33], vision [<=55, 709],
the builder's item format), then measures, on training batches of ``--batch-size``:

* ``loader, 1 process``: one epoch of ``SKESLStreamDataModule.train_dataloader()`` (reading, padding, masking,
  batching; no model), for each ``--workers`` value;
* ``loader, 2 ranks (gloo)``: the same on two processes joined by a gloo process group, each reading its own
  share (samples/s = all clips / the slower rank's time);
* ``model step``: ``SKESLPretrain`` at tiny size (``tiny-bert``, 4 blocks) forward + backward + Adam on
  batches taken from the loader (median step time).

    python benchmarks/skesl_loader.py --clips 512 --workers 0 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import measure_steps  # noqa: E402

WORDS = (
    "good great horrible bad sad love hate the a movie was we went home today and then it really just "
    "story actor think so this i table"
).split()


def _clip(args) -> dict:
    i, audio_frames, vision_frames = args
    rng = np.random.default_rng(i)
    return {
        "id": f"id1{i % 97:04d}/yt{i:06d}/00001",
        "text": " ".join(rng.choice(WORDS, size=8 + i % 9)),
        "audio": rng.normal(size=(int(rng.integers(audio_frames // 2, audio_frames + 1)), 33)).astype(np.float32),
        "vision": rng.normal(size=(int(rng.integers(vision_frames // 2, vision_frames + 1)), 709)).astype(np.float32),
    }


def write_shards(out: Path, clips: int, audio_frames: int, vision_frames: int) -> Path:
    from litdata import optimize

    for split, rows in (("train", range(clips)), ("valid", range(10**6, 10**6 + 8))):
        optimize(
            fn=_clip,
            inputs=[(i, audio_frames, vision_frames) for i in rows],
            output_dir=str(out / split),
            chunk_bytes="64MB",
            num_workers=1,
            verbose=False,
            mode="overwrite",
            start_method="fork",
        )
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "format": "msa-skesl-shards/1",
                "finished": True,
                "audio_dim": 33,
                "vision_dim": 709,
                "audio_frames": audio_frames,
                "vision_frames": vision_frames,
                "splits": {"train": clips, "valid": 8},
            }
        )
    )
    return out


def _datamodule(shards: Path, batch_size: int, workers: int, world: int = 1, rank: int = 0):
    from msa_lightning.papers.skesl.data import SKESLStreamDataModule

    dm = SKESLStreamDataModule(
        str(shards), tokenizer="tiny-bert", batch_size=batch_size, num_workers=workers, shuffle_seed=0
    )
    dm.trainer = SimpleNamespace(world_size=world, global_rank=rank, lightning_module=None, strategy=None)
    dm.setup("fit")
    return dm


def loader_epoch(shards: Path, batch_size: int, workers: int, world: int = 1, rank: int = 0) -> tuple[int, float]:
    """Clips and seconds of one training epoch of this rank's loader."""
    dm = _datamodule(shards, batch_size, workers, world, rank)
    dm.tokenizer  # noqa: B018  (loaded before the clock starts: a one-off cost, not throughput)
    loader = dm.train_dataloader()
    start = time.perf_counter()
    clips = sum(len(batch) for batch in loader)
    return clips, time.perf_counter() - start


def _rank(rank: int, world: int, init_file: str, shards: str, batch_size: int, workers: int, out: str) -> None:
    import multiprocessing

    import torch
    import torch.distributed as dist

    # loader workers forked as under `msa fit` DDP (Lightning's launcher and torchrun start ranks as fresh
    # processes, whose default is fork); mp.spawn's children would spawn each worker as a new interpreter
    multiprocessing.set_start_method("fork", force=True)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    dist.barrier()
    clips, seconds = loader_epoch(Path(shards), batch_size, workers, world, rank)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"clips": clips, "seconds": seconds}))
    dist.barrier()
    dist.destroy_process_group()


def two_ranks(shards: Path, batch_size: int, workers: int, tmp: Path) -> tuple[int, float]:
    import torch.multiprocessing as mp

    out = tmp / f"ranks_w{workers}"
    out.mkdir()
    mp.spawn(
        _rank, args=(2, str(tmp / f"init_w{workers}"), str(shards), batch_size, workers, str(out)), nprocs=2, join=True
    )
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return sum(r["clips"] for r in results), max(r["seconds"] for r in results)


def model_step(shards: Path, batch_size: int, steps: int, warmup: int) -> float:
    """Median seconds of a tiny SKESLPretrain training step (forward, backward, Adam)."""
    import torch

    from msa_lightning.papers.skesl.module import SKESLPretrain

    torch.manual_seed(0)
    batches = []
    for batch in _datamodule(shards, batch_size, 0).train_dataloader():
        batches.append(batch)
        if len(batches) == warmup + steps:
            break
    model = SKESLPretrain(text_model="tiny-bert", audio_dim=33, vision_dim=709, metric_family="mosi")
    model.setup("fit")
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(i: int) -> None:
        batch = batches[i % len(batches)]
        loss, _ = model.compute_loss(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return measure_steps(step, warmup, steps, "cpu")["median_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--audio-frames", type=int, default=400)
    parser.add_argument("--vision-frames", type=int, default=55)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        start = time.perf_counter()
        shards = write_shards(tmp / "shards", args.clips, args.audio_frames, args.vision_frames)
        size = sum(p.stat().st_size for p in (shards / "train").iterdir())
        print(
            f"shards: {args.clips} clips, {size / 2**20:.1f} MiB, written in {time.perf_counter() - start:.1f} s; "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        rows = []
        for workers in args.workers:
            clips, seconds = loader_epoch(shards, args.batch_size, workers)
            rows.append(("loader, 1 process", workers, clips / seconds, os.getloadavg()[0]))
            print(rows[-1], flush=True)
            clips, seconds = two_ranks(shards, args.batch_size, workers, tmp)
            rows.append(("loader, 2 ranks (gloo)", workers, clips / seconds, os.getloadavg()[0]))
            print(rows[-1], flush=True)
        median = model_step(shards, args.batch_size, args.steps, args.warmup)
        rows.append(("model step, tiny SKESLPretrain", "-", args.batch_size / median, os.getloadavg()[0]))
    print("\n| what | loader workers per rank | samples/s | `uptime` load (1 min) |\n|---|---:|---:|---:|")
    for what, workers, rate, load in rows:
        print(f"| {what} | {workers} | {rate:,.0f} | {load:.1f} |")


if __name__ == "__main__":
    main()
