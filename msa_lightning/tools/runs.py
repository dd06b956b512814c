"""Programmatic fit + test runs: multi-seed experiments and the synthetic quickstart."""
from __future__ import annotations

import logging
import math
from pathlib import Path

from msa_lightning.tools.results import markdown_table, strip_prefix, write_seed_tables

log = logging.getLogger(__name__)

#: the seeds the papers average over
PAPER_SEEDS = (1111, 1112, 1113, 1114, 1115)


def fit_and_test(args: list[str], out_dir: str | Path) -> dict[str, float]:
    """Fit with LightningCLI ``args`` (config files and overrides), then test the best checkpoint."""
    from msa_lightning.cli import make_cli

    out_dir = Path(out_dir)
    cli = make_cli(args + [f"--trainer.default_root_dir={out_dir}", f"--checkpoint.dirpath={out_dir / 'checkpoints'}"],
                   run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, verbose=False)
    return strip_prefix(results[0])


def run_seeds(configs: list[str], seeds: list[int], out_dir: str | Path, overrides: list[str] = (),
              name: str | None = None) -> dict:
    """Run ``configs`` once per seed; write per-seed and mean/std tables under ``out_dir``."""
    out_dir = Path(out_dir)
    base = [a for c in configs for a in ("--config", c)] + list(overrides)
    per_seed = {}
    for seed in seeds:
        per_seed[seed] = fit_and_test(base + [f"--seed_everything={seed}"], out_dir / f"seed{seed}")
        log.info("seed %d: %s", seed, per_seed[seed])
    name = name or (Path(configs[0]).stem if configs else "run")
    summary = write_seed_tables(per_seed, out_dir, name)
    print((out_dir / "summary.md").read_text())
    return summary


def quickstart(out_dir: str | Path = "runs/quickstart", epochs: int = 6, size_factor: float = 0.5,
               model: str = "TFNModule", seed: int = 1111) -> dict[str, float]:
    """Synthetic MOSI-shaped data -> fit -> test -> metric table (next to the mean predictor's)."""
    import numpy as np

    from msa_lightning.data.reader import read_feature_file
    from msa_lightning.data.synthetic import make_synthetic
    from msa_lightning.metrics import compute_msa_metrics

    import torch

    out_dir = Path(out_dir)
    data = make_synthetic("mosi", out_dir / "data" / "mosi_synthetic_unaligned.pkl", size_factor=size_factor, seed=0)
    print(f"synthetic MOSI-shaped feature file: {data}")
    metrics = fit_and_test([
        f"--model={model}", "--model.lr=2e-3", "--model.weight_decay=1e-4",
        "--data=MOSIDataModule", f"--data.path={data}", "--data.batch_size=32", "--data.normalize=true",
        f"--data.cache_dir={out_dir / 'cache'}", f"--trainer.max_epochs={epochs}", "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--trainer.log_every_n_steps=10", f"--seed_everything={seed}",
        f"--trainer.logger.init_args.save_dir={out_dir / 'logs'}",
    ], out_dir / "run")
    splits = read_feature_file(data)
    labels = torch.from_numpy(splits["test"].labels["M"])
    train_mean = float(np.mean(splits["train"].labels["M"]))
    baseline = {k: float(v) for k, v in compute_msa_metrics(torch.full_like(labels, train_mean), labels, "mosi").items()}
    baseline = {k: v for k, v in baseline.items() if not math.isnan(v)}
    print("\nTest metrics on synthetic MOSI (acc2_has0: neg vs non-neg, all samples; acc2_non0: neg vs pos, zeros excluded)\n")
    print(markdown_table({model: metrics, "mean predictor": baseline}))
    return metrics
