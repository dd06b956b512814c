"""FmlMSN benchmark: a full pipeline (three stage learners, their exports, the meta-learner) against a
meta-learner-only rerun on the saved stage features (the paper's FmlMSN vs FmlMSN-L, Table 9), and
the size of the feature-store entries the pipeline leaves.

Run ``python benchmarks/fmlmsn.py --help``. Prints Markdown tables; nothing is asserted.

Everything goes through the real command, ``msa pipeline`` on the shipped
``configs/fmlmsn/sims_pipeline.yaml`` (Table 3 widths, batch 64), with a synthetic CH-SIMS file with
bimodal labels (``--size-factor`` of the real 2,281 clips) and ``--text-model`` (default the
in-process ``tiny-bert``; ``bert-base-chinese`` needs the model locally) for the frozen BERT token
features. Measured:

1. ``cold``: the first run, which also computes the frozen BERT token features into the store.
2. ``FmlMSN``: ``--force``: every stage and the meta-learner trained again (token features reused).
3. ``FmlMSN-L``: ``--only meta --force``, ``--repeats`` times (median): the meta-learner on the saved
   ``features.H`` of the three stages.

Times are wall-clock of the ``msa pipeline`` process; each stage is its own ``msa fit`` process, so
every stage pays the interpreter and library start-up (also reported, from ``msa --help``-like
imports). The store table lists each entry's arrays, the bytes they take in memory when loaded
(``nbytes``) and on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _env(workdir: Path) -> dict:
    return {**os.environ, "MSA_CACHE_DIR": str(workdir / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def _timed(args: list[str], workdir: Path, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "a") as out:
        code = subprocess.call(
            [sys.executable, "-m", "msa_lightning.cli", *args],
            cwd=workdir,
            env=_env(workdir),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    took = time.perf_counter() - start
    if code != 0:
        sys.exit(f"benchmark: `msa {' '.join(args)}` failed with exit code {code}; see {log}")
    return took


def _startup(workdir: Path) -> float:
    """Seconds a fresh process needs to import what an `msa fit` imports (torch, lightning, the suite)."""
    code = (
        "import lightning, transformers, msa_lightning.cli, msa_lightning.papers.fmlmsn.module, "
        "msa_lightning.papers.fmlmsn.data"
    )
    start = time.perf_counter()
    subprocess.check_call([sys.executable, "-c", code], cwd=workdir, env=_env(workdir))
    return time.perf_counter() - start


def _pipeline_file(workdir: Path, data: Path, args) -> Path:
    spec = yaml.safe_load((REPO / "configs" / "fmlmsn" / "sims_pipeline.yaml").read_text())
    common = [
        f"--data.init_args.path={data}",
        "--data.init_args.num_workers=0",
        f"--trainer.max_epochs={args.epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    for stage in spec["stages"]:
        stage["args"][1] = str(REPO / stage["args"][1])
        if stage["name"] != "meta":
            stage["args"] += [
                f"--data.init_args.text_model={args.text_model}",
                f"--model.init_args.text_dim={args.text_dim}",
            ]
        stage["args"] += common
    spec["out"] = str(workdir / "runs")
    path = workdir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _entry_row(entry) -> dict:
    import numpy as np

    arrays = entry.arrays(mmap=True)
    disk = sum(p.stat().st_size for p in Path(entry.path).rglob("*") if p.is_file())
    shapes = ", ".join(f"{name} {tuple(a.shape)} {a.dtype}" for name, a in sorted(arrays.items()))
    return {
        "path": Path(entry.path).name,
        "arrays": shapes,
        "memory": int(sum(np.asarray(a).nbytes for a in arrays.values())),
        "disk": disk,
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="folder for data, runs and the store (default: a temporary folder)")
    p.add_argument("--size-factor", type=float, default=0.3, help="fraction of CH-SIMS's 2,281 clips (default 0.3)")
    p.add_argument("--epochs", type=int, default=10, help="max_epochs of every stage and the meta-learner")
    p.add_argument("--repeats", type=int, default=3, help="FmlMSN-L reruns (median reported)")
    p.add_argument("--text-model", default="tiny-bert", help="frozen BERT for the token features")
    p.add_argument("--text-dim", type=int, default=32, help="its hidden size (768 for bert-base-chinese)")
    args = p.parse_args()

    from msa_lightning.data.synthetic import make_synthetic

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fmlmsn_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "benchmark.log"
    data = make_synthetic(
        "sims", workdir / "sims_bimodal.pkl", size_factor=args.size_factor, seed=0, bimodal_labels=True
    )
    pipeline = _pipeline_file(workdir, data, args)
    startup = min(_startup(workdir) for _ in range(2))

    cold = _timed(["pipeline", str(pipeline)], workdir, log)
    full = _timed(["pipeline", str(pipeline), "--force"], workdir, log)
    meta_only = [
        _timed(["pipeline", str(pipeline), "--only", "meta", "--force"], workdir, log) for _ in range(args.repeats)
    ]
    skipped = _timed(["pipeline", str(pipeline)], workdir, log)
    median = statistics.median(meta_only)

    records = {
        s: json.loads((workdir / "runs" / s / "stage.json").read_text())
        for s in ("stage_av", "stage_at", "stage_vt", "meta")
    }
    eq8 = [json.loads(f.read_text()) for f in (workdir / "runs" / "meta").rglob("eq8.json")]

    print(
        f"# FmlMSN pipeline timing ({platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()})\n"
    )
    print(
        f"synthetic CH-SIMS x {args.size_factor} ({data.name}), {args.epochs} epochs per stage and for the "
        f"meta-learner, Table 3 widths, batch 64, text features from {args.text_model}\n"
    )
    print("| run | what | wall (s) |")
    print("|---|---|---|")
    print(f"| cold | 3 stages + exports + meta-learner, token features computed | {cold:.1f} |")
    print(f"| FmlMSN | `--force`: 3 stages + exports + meta-learner | {full:.1f} |")
    print(
        f"| FmlMSN-L | `--only meta --force` (median of {args.repeats}: "
        f"{', '.join(f'{t:.1f}' for t in meta_only)}) | {median:.1f} |"
    )
    print(f"| rerun | nothing changed: every stage skipped | {skipped:.1f} |")
    print(
        f"\nFmlMSN / FmlMSN-L = {full / median:.1f}x (paper, Table 9: 4.897 s / 0.879 s = 5.6x); process start-up "
        f"(imports of one `msa fit`) {startup:.1f} s, paid once per stage; without it "
        f"{(full - 4 * startup) / max(median - startup, 1e-9):.1f}x"
    )
    if eq8:
        print(f"Eq. 8 of the last meta-learner: p = {eq8[0]['p']:.3f} -> {eq8[0]['decision']}")

    from msa_lightning.store import Store

    store = Store(workdir / "cache")
    print("\n# Feature store entries\n")
    print("| entry | kind | arrays | in memory (MiB) | on disk (MiB) |")
    print("|---|---|---|---|---|")
    total = {"export": [0, 0], "frozen_features": [0, 0]}
    exports = {Path(r["export"]).name: s for s, r in records.items() if r.get("export")}
    for kind in ("export", "frozen_features"):
        for entry in sorted(store.entries(kind), key=lambda e: str(e.path)):
            row = _entry_row(entry)
            if kind == "export" and row["path"] not in exports:
                continue  # an export of an earlier (replaced) checkpoint
            name = exports.get(row["path"], row["path"][:12])
            total[kind][0] += row["memory"]
            total[kind][1] += row["disk"]
            print(f"| {name} | {kind} | {row['arrays']} | {_mib(row['memory'])} | {_mib(row['disk'])} |")
    n = sum(1 for _ in store.entries("export"))
    print(
        f"\nsaved stage features (3 current exports): {_mib(total['export'][0])} MiB in memory, "
        f"{_mib(total['export'][1])} MiB on disk; frozen token features: {_mib(total['frozen_features'][0])} MiB "
        f"in memory, {_mib(total['frozen_features'][1])} MiB on disk; {n} export entries in the store "
        "(a retrained stage adds one)"
    )
    print(f"\nlogs: {log}; runs: {workdir / 'runs'}")


if __name__ == "__main__":
    main()
