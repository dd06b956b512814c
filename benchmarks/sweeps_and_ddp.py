"""Sweep overhead and SKESL pretraining on 1 vs 2 processes. Prints Markdown tables; asserts nothing.

``python benchmarks/sweeps_and_ddp.py --what overhead``: per trial, what ``msa sweep`` costs beyond a plain
``msa fit`` of the same command (LF-DNN on a synthetic MOSI file at ``--size-factor``, ``--epochs`` epochs, W&B
offline as the shipped sweep logs). ``--trials`` plain fits run first (wall seconds of the process), then one
``msa sweep --count N`` of a random sweep whose trials run that command: its wall time, the trials' own process
time (from ``sweep.json``, start to exit as the runner polls it), and the runner's time outside its trials (its
start, the definition's check: one ``msa fit --print_config``, the engine, polling, the report). The engine alone:
``sweeps.next_run`` per proposal (random and bayes), timed in-process over the finished sweep.

``python benchmarks/sweeps_and_ddp.py --what scaling``: SKESL pretraining
(``configs/skesl/pretrain_bert_base.yaml`` with the in-process ``tiny-bert`` and 1 block) on shards built by
``msa pretrain-data synth`` + ``build`` (``--clips``), ``--epochs`` epochs, on 1 process and on 2 gloo processes
(``--trainer.strategy=ddp --trainer.devices=2``), each rank with ``OMP_NUM_THREADS=1``. A callback
(:class:`Throughput`) times each rank's training batches (from the first batch of an epoch to the end of its
last) after the first epoch: samples/s per rank and in total.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


def _msa(args: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "msa_lightning.cli", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(f"msa {' '.join(map(str, args[:3]))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, proc


# ---------------------------------------------------------------------------------------------- overhead
def overhead(work: Path, trials: int, epochs: int, size_factor: float) -> None:
    import yaml

    from msa_lightning.data.synthetic import make_synthetic
    from msa_lightning.experiments import sweep as sweeps_lib

    data = make_synthetic("mosi", work / "mosi.pkl", size_factor=size_factor, seed=0)
    env = {"MSA_CACHE_DIR": str(work / "cache")}
    base = ["--config", "configs/baselines/lf_dnn_mosi.yaml", "--config", "configs/loggers/wandb.yaml"]
    overrides = [f"--data.path={data}", f"--trainer.max_epochs={epochs}", "--data.num_workers=0"]
    overrides += ["--trainer.enable_progress_bar=false", "--trainer.callbacks=[]"]
    plain = []
    for i in range(trials):
        seconds, _ = _msa(
            ["fit", *base, "--model.lr=0.001", *overrides, f"--trainer.default_root_dir={work / f'plain{i}'}"], env
        )
        plain.append(seconds)
    definition = {
        "program": "msa",
        "method": "random",
        "metric": {"name": "val/mae", "goal": "minimize"},
        "parameters": {"model.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}},
        "command": ["${program}", "fit", *base, "${args}"],
    }
    (work / "sweep.yaml").write_text(yaml.safe_dump(definition))
    sweep_seconds, _ = _msa(
        ["sweep", work / "sweep.yaml", "--count", trials, "--out", work / "sweep", "--", *overrides], env
    )
    sweep = sweeps_lib.read_sweep(work / "sweep")
    trial_seconds = [t.seconds for t in sweep.trials]
    sweeps_lib.propose(sweep)  # imports the engine (scipy, scikit-learn) before the timed proposals
    for method in ("random", "bayes"):  # one proposal given the finished trials
        sweep.definition = {**definition, "method": method}
        start = time.perf_counter()
        sweeps_lib.propose(sweep)
        engine = (time.perf_counter() - start) * 1000
        print(f"engine proposal ({method}, {len(sweep.trials)} finished trials): {engine:.1f} ms")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    rest = sweep_seconds - sum(trial_seconds)
    print(f"\n| {trials} trials, LF-DNN, {epochs} epochs | seconds |\n|---|---|")
    print(f"| plain `msa fit`, mean per run | {mean(plain):.2f} |")
    print(f"| `msa sweep` trial process, mean | {mean(trial_seconds):.2f} |")
    print(f"| `msa sweep` wall, total | {sweep_seconds:.2f} |")
    print(
        f"| runner outside its trials (start, the definition's `msa fit --print_config`, engine, polling, report) | "
        f"{rest:.2f} ({rest / trials:.2f} per trial) |"
    )


# ---------------------------------------------------------------------------------------------- scaling
def scaling(work: Path, clips: int, epochs: int) -> None:
    corpus, shards = work / "corpus", work / "shards"
    if not (shards / "manifest.json").is_file():
        _msa(["pretrain-data", "synth", corpus, "--clips", clips])
        _msa(
            [
                "pretrain-data",
                "build",
                "--transcripts",
                corpus / "transcripts.tsv",
                "--audio",
                corpus / "audio",
                "--visual",
                corpus / "openface",
                "--out",
                shards,
                "--f0",
                "zcr",
            ]
        )
    args = [
        "fit",
        "--config",
        "configs/skesl/pretrain_bert_base.yaml",
        f"--data.init_args.path={shards}",
        "--data.init_args.tokenizer=tiny-bert",
        "--model.init_args.text_model=tiny-bert",
        "--model.init_args.num_blocks=1",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=0",
    ]
    rows = []
    for world in (1, 2):
        out = work / f"world{world}"
        callback = json.dumps(
            {"class_path": "sweeps_and_ddp.Throughput", "init_args": {"path": str(out / "throughput.jsonl")}}
        )
        ddp = ["--trainer.strategy=ddp", f"--trainer.devices={world}"] if world > 1 else []
        env = {
            "OMP_NUM_THREADS": "1",
            "MSA_CACHE_DIR": str(work / "cache"),
            "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        seconds, _ = _msa([*args, *ddp, f"--trainer.default_root_dir={out}", f"--trainer.callbacks+={callback}"], env)
        records = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
        timed = [r for r in records if r["epoch"] > 0] or records
        per_rank = {}
        for r in timed:
            clips_, secs = per_rank.get(r["rank"], (0, 0.0))
            per_rank[r["rank"]] = (clips_ + r["samples"], secs + r["seconds"])
        total = sum(c for c, _ in per_rank.values()) / max(s for _, s in per_rank.values())
        shares = ", ".join(f"rank {k}: {c} clips, {c / s:.0f}/s" for k, (c, s) in sorted(per_rank.items()))
        rows.append((world, total, shares, seconds))
    print(f"\n| processes | samples/s (all ranks) | per rank (epochs 2-{epochs}) | process wall s |\n|---|---|---|---|")
    for world, total, shares, seconds in rows:
        print(f"| {world} | {total:.0f} | {shares} | {seconds:.1f} |")


class Throughput(L.Callback):
    """Imported by ``msa fit`` through ``--trainer.callbacks+=``: per rank and epoch, the samples of its training
    batches and the seconds from its first batch's start to its last batch's end."""

    def __init__(self, path: str) -> None:
        self.path, self.start, self.end, self.samples = Path(path), None, None, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start, self.samples = None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch.ids)
        self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {"rank": trainer.global_rank, "epoch": trainer.current_epoch, "samples": self.samples}
        row["seconds"] = self.end - self.start
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=["overhead", "scaling", "all"], default="all")
    p.add_argument("--workdir", help="keep files here (default: a temporary folder)")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--size-factor", type=float, default=0.1, help="synthetic MOSI size for --what overhead")
    p.add_argument("--clips", type=int, default=96, help="synthetic corpus size for --what scaling")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"# {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
        if args.what in ("overhead", "all"):
            overhead(work / "overhead", args.trials, args.epochs, args.size_factor)
        if args.what in ("scaling", "all"):
            scaling(work / "scaling", args.clips, args.epochs)


if __name__ == "__main__":
    main()
