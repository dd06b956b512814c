"""Release 0.1's import paths and config class paths keep working until 0.3, with a warning that names the new home."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

from msa_lightning.deprecated import MOVED_MODULES, MSADeprecationWarning


def test_old_module_paths_warn_and_give_the_same_objects():
    sys.modules.pop("msa_lightning.models.swrm", None)
    with pytest.warns(MSADeprecationWarning, match=r"msa_lightning\.models\.swrm moved to msa_lightning\.papers\.swrm"):
        old = importlib.import_module("msa_lightning.models.swrm")
    from msa_lightning.papers.swrm.module import SWRMModule
    from msa_lightning.papers.swrm.net import SWRMNet

    assert old.SWRMModule is SWRMModule and old.SWRMNet is SWRMNet  # names of both new homes
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        old.NoSuchName  # noqa: B018


@pytest.mark.parametrize("old", sorted(m for m, targets in MOVED_MODULES.items() if targets))
def test_every_old_module_imports_and_every_home_exists(old):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MSADeprecationWarning)
        module = importlib.import_module(old)
    for target in MOVED_MODULES[old]:
        importlib.import_module(target)
    assert module.__name__ == old


def test_old_names_of_the_cli_module_warn():
    import msa_lightning.cli as cli
    from msa_lightning.experiments.lightning_cli import make_cli

    with pytest.warns(MSADeprecationWarning, match="msa_lightning.experiments.lightning_cli.make_cli"):
        assert cli.make_cli is make_cli


def test_a_users_yaml_with_an_old_class_path_still_fits(tmp_path, synthetic_mosi):
    config = tmp_path / "old.yaml"
    config.write_text(
        "model:\n  class_path: msa_lightning.models.baselines.LFDNNModule\n  init_args:\n    hidden: 8\n"
        f"data:\n  class_path: msa_lightning.data.MOSIDataModule\n  init_args:\n    path: {synthetic_mosi}\n"
        "    batch_size: 16\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "msa_lightning.cli",
            "fit",
            "--config",
            str(config),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
            "--trainer.enable_progress_bar=false",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**__import__("os").environ, "MSA_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "msa_lightning.models.baselines moved to msa_lightning.papers.baselines" in proc.stderr
    assert list((tmp_path / "runs").rglob("*.ckpt"))
