"""Shared fixtures: small synthetic feature files (through the real generator and reader)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores; one thread each (tiny models) instead of N x cores threads
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the checkout; tests using it skip cleanly on users' machines."""
    if not (SHARED / "data" / "mosi").is_dir():
        pytest.skip("../shared/data/mosi is not available")
    return SHARED


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def synthetic_mosi(data_dir) -> Path:
    """Unaligned MOSI-shaped file at 5% of the real size (64/11/34 samples)."""
    from msa_lightning.data.synthetic import make_synthetic

    return make_synthetic("mosi", data_dir / "mosi_unaligned.pkl", size_factor=0.05, seed=0)


@pytest.fixture(scope="session")
def synthetic_mosi_aligned(data_dir) -> Path:
    from msa_lightning.data.synthetic import make_synthetic

    return make_synthetic("mosi", data_dir / "mosi_aligned.pkl", size_factor=0.05, aligned=True, seed=1)


@pytest.fixture(scope="session")
def synthetic_sims(data_dir) -> Path:
    from msa_lightning.data.synthetic import make_synthetic

    return make_synthetic("sims", data_dir / "sims_unaligned.pkl", size_factor=0.05, seed=2)


@pytest.fixture(scope="session")
def tok():
    """The in-process tiny word-piece tokenizer (ids fit ``tiny-bert``)."""
    from msa_lightning.nn.pretrained import load_tokenizer

    return load_tokenizer("tiny-bert")
