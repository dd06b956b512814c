"""Foundation benchmarks: model train-step throughput/memory and data-loading throughput/memory.

Run ``python benchmarks/foundation.py --help``. Everything runs on synthetic feature files written
to ``--workdir`` (a temporary folder by default), so no dataset is needed. Prints Markdown tables;
nothing is asserted.

(a) ``models``: train steps (forward, loss, backward, optimizer step) of LF-DNN, TFN and BERT+LSTM
    on MOSI-shaped batches. Each model runs in its own fresh process so peak memory is its own:
    CPU = peak RSS during the steps minus RSS before them (``VmHWM`` reset through
    ``/proc/self/clear_refs``); CUDA = ``torch.cuda.max_memory_allocated`` over the steps.
(b) ``data``: one epoch over the train split, (1) unpickling + validating the feature file
    (``read_feature_file``) every time, vs (2) opening the memory-mapped cache (``load_cached``);
    each in a fresh process, reporting open time, time to the first batch, samples/s and the
    process's memory growth. Then ``--ranks`` processes open the data at once (as DDP ranks do,
    each iterating its shard) and the sum of their anonymous (private, unreclaimable) memory and of
    their PSS is reported: with pickles every rank holds a copy, with the cache they share the
    page cache of one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import _KB, measure_steps, rss

# ----------------------------------------------------------------------------- process memory


def smaps() -> dict[str, int]:
    """``/proc/self/smaps_rollup`` in bytes (Rss, Pss, Anonymous, Private_Dirty, ...); {} elsewhere."""
    out = {}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            out[key.strip()] = int(value.split()[0]) * _KB
    except OSError:
        pass
    return out


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:,.1f}"


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- (a) models
def _build_model(name: str, text_model: str):
    from msa_lightning.papers.baselines.module import BertLSTMModule, LFDNNModule, TFNModule
    from msa_lightning.papers.baselines.net import mlp

    note = ""
    if name == "lfdnn":
        return LFDNNModule(audio_dim=5, vision_dim=20), note
    if name == "tfn":
        return TFNModule(audio_dim=5, vision_dim=20), note
    if name != "bertlstm":
        raise ValueError(f"unknown model {name!r}")
    from msa_lightning.nn.pretrained import PretrainedNotAvailable

    try:
        return BertLSTMModule(audio_dim=5, vision_dim=20, text_model=text_model), note
    except PretrainedNotAvailable:
        if text_model != "bert-base-uncased":
            raise
    # Offline: the same architecture and size with random weights (throughput/memory are identical).
    from transformers import BertConfig, BertModel

    module = BertLSTMModule(audio_dim=5, vision_dim=20, text_model="tiny-bert")
    net = module.net
    other = net.head[0].in_features - net.text_encoder.hidden_size  # audio + vision LSTM outputs
    net.text_encoder.model = BertModel(BertConfig())  # bert-base-uncased's configuration
    net.head = mlp(net.text_encoder.hidden_size + other, module.hparams.fusion_dim, 1, module.hparams.dropout)
    return module, "BERT-base shape, random weights (hub unreachable)"


def _model_worker(name: str, args: argparse.Namespace, queue) -> None:
    import torch

    from msa_lightning.data.datamodule import MOSIDataModule

    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        device = torch.device(args.device)
        dm = MOSIDataModule(str(args.model_data), batch_size=args.batch_size, cache_dir=str(args.workdir / "cache"))
        dm.setup()
        batches = [b for b in dm.train_dataloader() if len(b) == args.batch_size][:2]
        model, note = _build_model(name, args.text_model)
        model.to(device).train()
        batches = [model.transfer_batch_to_device(b, device, 0) for b in batches]
        optimizer = model.configure_optimizers()
        params = sum(p.numel() for p in model.parameters())

        def step(i: int) -> None:
            batch = batches[i % len(batches)]
            outputs = model(batch)
            loss, _ = model.compute_loss(outputs, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        r = measure_steps(step, args.warmup, args.steps, device)
        median, mem, exact = r["median_s"], r["mem"], r["exact"]
        queue.put(
            {
                "model": name,
                "params": params,
                "samples_s": args.batch_size / median,
                "step_ms": 1000 * median,
                "min_ms": 1000 * r["min_s"],
                "mem": mem,
                "exact": exact,
                "note": note,
                "seq": f"{tuple(batches[0].audio.shape[1:2])[0]}/{tuple(batches[0].vision.shape[1:2])[0]}",
            }
        )
    except Exception as err:  # report, do not hang the parent
        queue.put({"model": name, "error": f"{type(err).__name__}: {err}"})


def bench_models(args: argparse.Namespace, ctx) -> str:
    from msa_lightning.data.synthetic import make_synthetic

    args.model_data = make_synthetic("mosi", args.workdir / "mosi_models.pkl", size_factor=0.05, seed=0)
    rows = []
    for name in args.models:
        queue = ctx.Queue()
        proc = ctx.Process(target=_model_worker, args=(name, args, queue))
        proc.start()
        res = queue.get()
        proc.join()
        label = {"lfdnn": "LF-DNN (bag)", "tfn": "TFN (bag)", "bertlstm": f"BERT+LSTM ({args.text_model})"}[name]
        if "error" in res:
            rows.append([label, "-", "-", "-", "-", res["error"]])
            continue
        mem_kind = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS delta"
        rows.append(
            [
                label,
                f"{res['params'] / 1e6:.2f} M",
                f"{res['step_ms']:.1f} ({res['min_ms']:.1f})",
                f"{res['samples_s']:,.0f}",
                mib(res["mem"]) + ("" if res["exact"] else " (ru_maxrss)"),
                "; ".join(x for x in (res["note"], f"frames in batch (A/V): {res['seq']}", mem_kind) if x),
            ]
        )
    header = ["model", "params", "ms/step median (min)", "samples/s (median)", "memory (MiB)", "notes"]
    return (
        f"### Train step, batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
        f"device {args.device}\n\n" + table(header, rows)
    )


# ----------------------------------------------------------------------------- (b) data
def _open(mode: str, path: Path, dataset: str, cache_dir: Path):
    from msa_lightning.data.cache import ensure_cache, load_cached
    from msa_lightning.data.reader import read_feature_file
    from msa_lightning.data.specs import get_spec

    spec = get_spec(dataset)
    if mode == "pickle":
        return read_feature_file(path, spec)
    return load_cached(ensure_cache(path, spec, cache_dir))


def _epoch(splits, batch_size: int, num_workers: int, shard: tuple[int, int] | None = None):
    """Iterate the train split once; returns (seconds to the first batch, total seconds, samples)."""
    import numpy as np
    from torch.utils.data import DataLoader

    from msa_lightning.data.dataset import MSADataset, collate_batch

    train = splits["train"]
    ds = MSADataset(train, train.text_bert)
    if shard is not None:
        rank, world = shard
        ds = _Shard(ds, np.arange(rank, len(ds), world))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers, collate_fn=collate_batch)
    t0 = time.perf_counter()
    first, n = None, 0
    for batch in loader:
        n += len(batch)
        if first is None:
            first = time.perf_counter() - t0
        _ = batch.audio.numpy().sum() + batch.vision.numpy().sum()  # touch the data (no torch threads)
    return first, time.perf_counter() - t0, n


class _Shard:
    """A rank's share of a dataset that keeps ``__getitems__`` (batched reads)."""

    def __init__(self, ds, indices) -> None:
        self.ds, self.indices = ds, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, idx):
        return self.ds.__getitems__([int(self.indices[i]) for i in idx])

    def __getitem__(self, i):
        return self.__getitems__([i])


def _data_worker(
    mode: str,
    path: str,
    dataset: str,
    cache_dir: str,
    batch_size: int,
    num_workers: int,
    queue,
    shard=None,
    barrier=None,
    repeats: int = 1,
) -> None:
    try:
        import torch  # (imported before the baseline so it is not counted)

        from msa_lightning.data.dataset import MSADataset  # noqa: F401

        torch.set_num_threads(1)  # reading needs no intra-op threads (as in DataLoader workers)

        before = smaps()
        rss0 = rss()
        runs = []
        for _ in range(repeats):  # open + one epoch, as a fresh run would (medians are reported)
            splits = None  # drop the previous copy first
            t0 = time.perf_counter()
            splits = _open(mode, Path(path), dataset, Path(cache_dir))
            t_open = time.perf_counter() - t0
            first, t_epoch, n = _epoch(splits, batch_size, num_workers, shard)
            runs.append((t_open, first, t_epoch))
        t_open, first, t_epoch = (statistics.median(r[i] for r in runs) for i in range(3))
        if barrier is not None:
            barrier.wait()  # every rank holds its data now
        after = smaps()
        res = {"open": t_open, "first": t_open + first, "epoch": t_epoch, "n": n, "rss": rss() - rss0}
        for key in ("Pss", "Anonymous", "Private_Clean", "Private_Dirty", "Rss"):
            if key in after:
                res[key] = after[key] - before.get(key, 0)
        queue.put(res)
        if barrier is not None:
            barrier.wait()  # keep the mapping alive until every rank has measured
    except Exception as err:
        queue.put({"error": f"{type(err).__name__}: {err}"})
        if barrier is not None:
            barrier.abort()


def _data_rows(label: str, path: Path, dataset: str, args, ctx) -> tuple[list, list, tuple[int, float]]:
    from msa_lightning.data.cache import ensure_cache
    from msa_lightning.data.specs import get_spec

    t0 = time.perf_counter()
    ensure_cache(path, get_spec(dataset), args.workdir / "cache")  # one-off conversion (warm page cache after)
    t_convert = time.perf_counter() - t0
    single, multi = [], []
    size = path.stat().st_size
    for mode in ("pickle", "mmap"):
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_data_worker,
            args=(
                mode,
                str(path),
                dataset,
                str(args.workdir / "cache"),
                args.batch_size,
                args.num_workers,
                queue,
                None,
                None,
                args.repeats,
            ),
        )
        proc.start()
        r = queue.get()
        proc.join()
        name = "read_feature_file (unpickle + validate)" if mode == "pickle" else "memory-mapped cache"
        if "error" in r:
            single.append([label, name] + ["-"] * 5 + [r["error"]])
            continue
        single.append(
            [
                label,
                name,
                f"{r['open']:.2f}",
                f"{r['first']:.2f}",
                f"{r['epoch']:.2f}",
                f"{r['n'] / (r['open'] + r['epoch']):,.0f}",
                f"{r['n'] / r['epoch']:,.0f}",
                f"{mib(r.get('Anonymous'))} / {mib(r['rss'])}",
            ]
        )
    for mode in ("pickle", "mmap"):
        queue, barrier = ctx.Queue(), ctx.Barrier(args.ranks)
        procs = [
            ctx.Process(
                target=_data_worker,
                args=(
                    mode,
                    str(path),
                    dataset,
                    str(args.workdir / "cache"),
                    args.batch_size,
                    0,
                    queue,
                    (r, args.ranks),
                    barrier,
                ),
            )
            for r in range(args.ranks)
        ]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        errors = [r["error"] for r in results if "error" in r]
        name = "pickle per rank" if mode == "pickle" else "shared mmap cache"
        if errors:
            multi.append([label, name] + ["-"] * 4 + [errors[0]])
            continue
        multi.append(
            [
                label,
                name,
                str(args.ranks),
                f"{max(r['first'] for r in results):.2f}",
                mib(sum(r.get("Anonymous", 0) for r in results)),
                mib(sum(r.get("Pss", 0) for r in results)),
                mib(sum(r["rss"] for r in results)),
            ]
        )
    print(f"[{label}] file {mib(size)} MiB, one-off cache conversion {t_convert:.2f} s", file=sys.stderr)
    return single, multi, (size, t_convert)


def bench_data(args: argparse.Namespace, ctx) -> str:
    from msa_lightning.data.synthetic import make_synthetic

    sets = [("MOSI", "mosi", args.data_factor)]
    if args.mosei_factor > 0:
        sets.append(("MOSEI", "mosei", args.mosei_factor))
    single, multi, files = [], [], []
    for name, dataset, factor in sets:
        path = args.workdir / f"{dataset}_{factor:g}.pkl"
        if not path.is_file():
            make_synthetic(dataset, path, size_factor=factor, seed=0)
        label = f"{name} x{factor:g}"
        s, m, (size, convert) = _data_rows(label, path, dataset, args, ctx)
        single += s
        multi += m
        files.append([label, mib(size), f"{convert:.2f}"])
    out = [
        "### Feature files\n",
        table(["data", "pickle size (MiB)", "one-off cache conversion (s)"], files),
        f"\n### One process, open + one epoch over train (batch {args.batch_size}, num_workers "
        f"{args.num_workers}; median of {args.repeats})\n",
        table(
            [
                "data",
                "read through",
                "open (s)",
                "first batch (s)",
                "epoch after open (s)",
                "samples/s incl. open",
                "samples/s iteration",
                "memory growth: anonymous / RSS (MiB)",
            ],
            single,
        ),
        f"\n### {args.ranks} processes at once (DDP-like ranks, each reads its 1/{args.ranks} shard)\n",
        table(
            [
                "data",
                "read through",
                "ranks",
                "max time to first batch (s)",
                "sum anonymous (MiB)",
                "sum PSS (MiB)",
                "sum RSS growth (MiB)",
            ],
            multi,
        ),
    ]
    return "\n".join(out)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--what", choices=["all", "models", "data"], default="all", help="which benchmark to run")
    p.add_argument("--models", nargs="+", default=["lfdnn", "tfn", "bertlstm"], choices=["lfdnn", "tfn", "bertlstm"])
    p.add_argument(
        "--text-model",
        default="tiny-bert",
        help="BERT+LSTM text encoder: tiny-bert or bert-base-uncased (random BERT-base weights "
        "if the hub is unreachable; set HF_HUB_OFFLINE=1 to skip the retries)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=10, help="timed train steps")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    p.add_argument("--data-factor", type=float, default=1.0, help="MOSI size factor of the data benchmark")
    p.add_argument("--mosei-factor", type=float, default=0.0, help="also a MOSEI-shaped file at this factor (0 = skip)")
    p.add_argument("--ranks", type=int, default=4, help="processes opening the data at once")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers in the one-process epoch")
    p.add_argument("--repeats", type=int, default=3, help="open + epoch repetitions in the one-process data run")
    p.add_argument("--workdir", type=Path, default=None, help="where synthetic files and caches go (default: temp)")
    args = p.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="msa_bench_")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    # the cache's hash memo lives in $MSA_CACHE_DIR: keep it in the work folder (set before importing)
    os.environ.setdefault("MSA_CACHE_DIR", str(args.workdir / "cache"))
    import multiprocessing as mp

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = mp.get_context("spawn")  # fresh processes: memory figures are not inherited
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "none"
    print(
        f"## msa_lightning foundation benchmark\n\nmachine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), GPU: {gpu}, "
        f"load average at start: {_load()} (other processes on the machine slow every figure)\n"
    )
    try:
        if args.what in ("all", "models"):
            print(bench_models(args, ctx) + "\n", flush=True)
        if args.what in ("all", "data"):
            print(bench_data(args, ctx), flush=True)
        print(f"\nload average at end: {_load()}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
