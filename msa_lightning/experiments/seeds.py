"""Programmatic fit + test runs: multi-seed experiments and the synthetic quickstart."""

from __future__ import annotations

import logging
import math
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from msa_lightning.errors import MSAError
from msa_lightning.experiments.results import markdown_table, strip_prefix, write_seed_tables

log = logging.getLogger(__name__)

#: the seeds the papers average over
PAPER_SEEDS = (1111, 1112, 1113, 1114, 1115)


class SeedsFailed(MSAError):
    """Some seeds of a multi-seed run failed; the finished ones are in the tables (``table``: the summary in
    Markdown, None when no seed finished or on a rank other than 0)."""

    def __init__(self, message: str, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


@dataclass
class SeedsResult:
    """What :func:`run_seeds` wrote: ``summary`` (metric -> (mean, std)) and ``table``, the summary in Markdown
    (both empty on a rank other than 0)."""

    summary: dict
    table: str | None


@dataclass
class QuickstartResult:
    """The test metrics of :func:`quickstart`'s model next to those of the mean predictor."""

    model: str
    metrics: dict[str, float]
    baseline: dict[str, float]

    def table(self) -> str:
        return markdown_table({self.model: self.metrics, "mean predictor": self.baseline})


def fit_and_test(args: list[str], out_dir: str | Path, trainer_out: list | None = None) -> dict[str, float]:
    """Fit with LightningCLI ``args`` (config files and overrides), then test the best checkpoint.

    Logs and checkpoints go under ``out_dir``. Under a DDP trainer every rank must run this same call
    (see :func:`run_seeds`). ``trainer_out`` receives the trainer (a list to append to).
    """
    from msa_lightning.experiments.lightning_cli import make_cli

    out_dir = Path(out_dir)
    cli = make_cli(
        args + [f"--trainer.default_root_dir={out_dir}", f"--checkpoint.dirpath={out_dir / 'checkpoints'}"], run=False
    )
    if trainer_out is not None:
        trainer_out.append(cli.trainer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, verbose=False)
    return strip_prefix(results[0])


def seeds_command(
    configs: list[str],
    seeds: list[int],
    out_dir: str | Path,
    overrides: list[str] = (),
    name: str | None = None,
    force: bool = False,
) -> list[str]:
    """The ``msa seeds`` arguments that re-create this run (what DDP ranks 1..N-1 execute)."""
    argv = [
        "seeds",
        *(a for c in configs for a in ("--config", str(c))),
        "--seeds",
        *map(str, seeds),
        "--out",
        str(out_dir),
    ]
    if name:
        argv += ["--name", name]
    if force:
        argv += ["--force"]
    return argv + (["--", *overrides] if overrides else [])


# ---------------------------------------------------------------------------------------------- earlier results
#: what ``msa seeds`` records next to ``per_seed.csv``: the configs (their parsed YAML) and overrides
RECORD = "seeds.json"
TABLES = ("per_seed.csv", "summary.csv", "summary.md", RECORD)


def _is_first_process() -> bool:
    """Rank 0 of a job (before Lightning has set up the ranks: from the launchers' variables)."""
    return all(
        os.environ.get(k, "0") in ("", "0") for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
    )


def run_record(configs: list[str], overrides: list[str], name: str) -> dict:
    """What decides whether earlier seeds are results of the same experiment: each config file's parsed
    YAML (comments and layout do not matter; an unreadable file: the SHA-256 of its bytes) and the overrides."""
    import hashlib

    import yaml

    from msa_lightning.textfiles import read_text

    parsed = []
    for config in configs:
        path = Path(config)
        try:
            content = yaml.safe_load(read_text(path, "config file"))
        except (MSAError, yaml.YAMLError):
            content = "sha256:" + (hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing")
        parsed.append({"path": str(path), "yaml": content})
    return {"format": 1, "name": name, "configs": parsed, "overrides": list(overrides)}


def _differences(old, new, key: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(set(old) | set(new), key=str)
            for d in _differences(old.get(k, "<unset>"), new.get(k, "<unset>"), f"{key}.{k}" if key else str(k))
        ]
    return [] if old == new else [f"{key or 'value'}: {old!r} -> {new!r}"]


def record_differences(old: dict, new: dict) -> list[str]:
    """What differs between two :func:`run_record` records (the config paths and the name do not count)."""
    a, b = old.get("configs") or [], new.get("configs") or []
    if len(a) != len(b):
        return [f"configs {', '.join(c.get('path', '?') for c in a)} -> {', '.join(c['path'] for c in b)}"]
    found = []
    for i, (x, y) in enumerate(zip(a, b), 1):
        found += [f"config {i} ({Path(y['path']).name}) {d}" for d in _differences(x.get("yaml"), y["yaml"])]
    if list(old.get("overrides") or []) != list(new["overrides"]):
        found.append(
            f"overrides {' '.join(old.get('overrides') or []) or '(none)'} -> {' '.join(new['overrides']) or '(none)'}"
        )
    return found


def earlier_results(out_dir: Path, record: dict, seeds: list[int], force: bool) -> dict[int, dict[str, float]]:
    """The finished seeds of an earlier ``msa seeds`` run into ``out_dir`` that this run keeps.

    Kept when ``per_seed.csv`` was made by the same configs and overrides (``seeds.json``), or when it has no
    record (made before ``msa seeds`` wrote one); one line says which. Another config's results are refused
    (:class:`MSAError`) unless ``force``, which moves its tables into ``out_dir/replaced-<time>/``.
    """
    import json
    import time

    from msa_lightning.experiments.results import read_per_seed_csv

    if out_dir.exists() and not out_dir.is_dir():
        raise MSAError(
            f"--out {out_dir}: an existing file, not a folder (msa seeds writes seed<N>/, per_seed.csv, "
            "summary.csv and summary.md into it); give a folder"
        )
    table = out_dir / "per_seed.csv"
    if not table.exists():
        return {}
    earlier = read_per_seed_csv(table)
    if not earlier:
        return {}
    try:
        old = json.loads((out_dir / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        old = None
    except (OSError, ValueError) as error:
        raise MSAError(
            f"{out_dir / RECORD}: unreadable record of the run that wrote {table} ({error}); "
            "remove it or give another --out"
        ) from None
    differences = record_differences(old, record) if old is not None else []
    listed = ", ".join(map(str, sorted(earlier)))
    if differences:
        if not force:
            shown = "; ".join(differences[:5]) + (
                f"; ... ({len(differences)} differences)" if len(differences) > 5 else ""
            )
            raise MSAError(
                f"--out {out_dir}: per_seed.csv holds seeds {listed} of another config ({shown}); "
                "results of two configs are never averaged: give another --out, or --force to move "
                "those tables aside and start afresh"
            )
        if _is_first_process():
            aside = out_dir / time.strftime("replaced-%Y%m%d-%H%M%S")
            aside.mkdir(parents=True, exist_ok=True)
            for name in TABLES:
                if (out_dir / name).exists():
                    os.replace(out_dir / name, aside / name)
            log.info("msa: seeds: --force: the results of seeds %s (another config) moved to %s", listed, aside)
        return {}
    if _is_first_process():
        again = sorted(set(earlier) & set(seeds))
        log.info(
            f"msa: seeds: keeping the earlier results of seeds {listed} in {table}"
            + ("" if old is not None else " (no record of their config: written before msa seeds kept one)")
            + (
                ""
                if not again
                else f"; seed {again[0]} is run again and replaces its row"
                if len(again) == 1
                else f"; seeds {', '.join(map(str, again))} are run again and replace their rows"
            ),
        )
    return earlier


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, MSAError) else f"{type(error).__name__}: {text}"


def run_seeds(
    configs: list[str],
    seeds: list[int] = PAPER_SEEDS,
    out_dir: str | Path = "runs/seeds",
    overrides: list[str] = (),
    name: str | None = None,
    force: bool = False,
) -> SeedsResult:
    """Run ``configs`` once per seed; per-seed and mean/std tables under ``out_dir`` (rank 0 writes them).

    Each seed's logs and checkpoints go to ``out_dir/seed<N>``. The tables are rewritten as each seed
    ends, so a failing seed loses nothing already finished: the failure is logged to
    ``out_dir/seed<N>/error.log``, the remaining seeds still run (on one process; a DDP run stops, its
    ranks can no longer be trusted to meet), and :class:`SeedsFailed` names every failed seed.

    Earlier results in ``out_dir`` are never overwritten: the seeds already in ``per_seed.csv`` are kept
    (a seed run again replaces its own row once it finishes) and the summary covers every seed. They must
    come from the same configs and overrides (recorded in ``seeds.json``); another config's are refused,
    or with ``force`` moved aside (:func:`earlier_results`).

    Under a DDP trainer Lightning starts ranks 1..N-1 by re-running the program's command line: each
    rank runs this same loop, so the command line is set to the ``msa seeds`` command that re-creates it.
    """
    from msa_lightning.experiments.process import process_command

    out_dir = Path(out_dir)
    seeds = [int(s) for s in seeds]
    name = name or (Path(configs[0]).stem if configs else "run")
    base = [a for c in configs for a in ("--config", str(c))] + list(overrides)
    record = run_record(configs, list(overrides), name)
    kept = earlier_results(out_dir, record, seeds, force)
    if _is_first_process():
        import json

        from msa_lightning.store import atomic_write

        atomic_write(
            out_dir / RECORD, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        )
    per_seed: dict[int, dict[str, float]] = {}
    failed: dict[int, str] = {}
    rank_zero = True

    def tables() -> dict[int, dict[str, float]]:
        return dict(sorted({**kept, **per_seed}.items()))

    with process_command(seeds_command(configs, seeds, out_dir, overrides, name, force)):
        for seed in seeds:
            trainers: list = []
            seed_dir = out_dir / f"seed{seed}"
            try:
                metrics = fit_and_test(base + [f"--seed_everything={seed}"], seed_dir, trainers)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # noqa: BLE001 - reported per seed, the others are kept
                if os.environ.get("MSA_DEBUG", "") not in ("", "0"):
                    raise
                failed[seed] = one_line(error)
                distributed = bool(trainers) and trainers[0].world_size > 1
                rank_zero = trainers[0].is_global_zero if trainers else os.environ.get("LOCAL_RANK", "0") == "0"
                if rank_zero:
                    seed_dir.mkdir(parents=True, exist_ok=True)
                    (seed_dir / "error.log").write_text("".join(traceback.format_exception(error)))
                    log.error("seed %d failed: %s (traceback in %s)", seed, failed[seed], seed_dir / "error.log")
                if distributed:
                    break
                continue
            rank_zero = trainers[0].is_global_zero
            per_seed[seed] = metrics
            if rank_zero:
                write_seed_tables(tables(), out_dir, name)
                log.info("seed %d: %s", seed, metrics)
    summary = write_seed_tables(tables(), out_dir, name) if tables() and rank_zero else {}
    table = (out_dir / "summary.md").read_text(encoding="utf-8") if summary else None
    if failed:
        done = (
            f"results of seeds {', '.join(map(str, tables()))} are in {out_dir / 'per_seed.csv'}"
            if tables()
            else "no seed finished"
        )
        older = [s for s in failed if s in kept]
        if older:
            done += f"; the earlier results of seeds {', '.join(map(str, older))} are kept"
        skipped = [s for s in seeds if s not in per_seed and s not in failed]
        raise SeedsFailed(
            "; ".join(f"seed {s} failed: {r}" for s, r in failed.items())
            + (f"; not run: {', '.join(map(str, skipped))}" if skipped else "")
            + f" ({done})",
            table,
        )
    return SeedsResult(summary, table)


def quickstart(
    out_dir: str | Path = "runs/quickstart",
    epochs: int = 6,
    size_factor: float = 0.5,
    model: str = "TFNModule",
    seed: int = 1111,
) -> QuickstartResult:
    """Synthetic MOSI-shaped data -> fit -> test -> metrics (next to the mean predictor's)."""
    import numpy as np
    import torch

    from msa_lightning.data.reader import read_feature_file
    from msa_lightning.data.synthetic import make_synthetic
    from msa_lightning.metrics import compute_msa_metrics

    out_dir = Path(out_dir)
    data = make_synthetic("mosi", out_dir / "data" / "mosi_synthetic_unaligned.pkl", size_factor=size_factor, seed=0)
    log.info("synthetic MOSI-shaped feature file: %s", data)
    metrics = fit_and_test(
        [
            f"--model={model}",
            "--model.lr=2e-3",
            "--model.weight_decay=1e-4",
            "--data=MOSIDataModule",
            f"--data.path={data}",
            "--data.batch_size=32",
            "--data.normalize=true",
            f"--data.cache_dir={out_dir / 'cache'}",
            f"--trainer.max_epochs={epochs}",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.log_every_n_steps=10",
            f"--seed_everything={seed}",
            f"--trainer.logger.init_args.save_dir={out_dir / 'logs'}",
        ],
        out_dir / "run",
    )
    splits = read_feature_file(data)
    labels = torch.from_numpy(splits["test"].labels["M"])
    train_mean = float(np.mean(splits["train"].labels["M"]))
    baseline = {
        k: float(v) for k, v in compute_msa_metrics(torch.full_like(labels, train_mean), labels, "mosi").items()
    }
    baseline = {k: v for k, v in baseline.items() if not math.isnan(v)}
    return QuickstartResult(model, metrics, baseline)
