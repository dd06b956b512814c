"""Shared fixtures: small synthetic feature files (through the real generator and reader)."""

from __future__ import annotations

import os
import subprocess
import sys
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
def whisper_dir(tmp_path_factory) -> Path:
    """``tiny-whisper`` saved with ``save_pretrained``: a local Whisper model folder, as users pass one."""
    from msa_lightning.nn.pretrained import tiny_whisper

    folder = tmp_path_factory.mktemp("tiny_whisper")
    model, processor = tiny_whisper()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tok():
    """The in-process tiny word-piece tokenizer (ids fit ``tiny-bert``)."""
    from msa_lightning.nn.pretrained import load_tokenizer

    return load_tokenizer("tiny-bert")


def msa_in_process(capsys, *args, cwd: Path | None = None, env: dict | None = None):
    """``msa ARGS`` in this process, through the console script's entry point (its error boundary and exit
    status), with what it printed, as a ``CompletedProcess``: several CLI runs without paying a Python start
    each. ``cwd``/``env`` apply during the call and are restored afterwards (a run's ``PL_GLOBAL_SEED`` too).
    ``capsys`` None (a module-scoped fixture has none): the output is caught by redirecting stdout/stderr.
    An exception that the boundary lets through fails the test with its traceback."""
    import contextlib
    import io
    import subprocess

    from msa_lightning.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    if env:
        os.environ.update(env)
    os.environ.pop("MSA_DEBUG", None)
    if cwd is not None:
        os.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    if capsys is not None:
        capsys.readouterr()
    try:
        with contextlib.ExitStack() as redirected:
            if capsys is None:
                redirected.enter_context(contextlib.redirect_stdout(out))
                redirected.enter_context(contextlib.redirect_stderr(err))
            main([str(a) for a in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else int(exit_info.code is not None)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    printed = capsys.readouterr() if capsys is not None else (out.getvalue(), err.getvalue())
    return subprocess.CompletedProcess([str(a) for a in args], code, *printed)


#: what a notebook's kernel runs first in the tests: its `msa` commands through the entry point in the kernel
NOTEBOOK_PRELUDE = "from tests.conftest import route_msa_in_process\nroute_msa_in_process()"


def execute_notebook(name: str, workdir: Path, settings: dict[str, str], timeout: int = 300):
    """Run ``notebooks/<name>`` top to bottom in ``workdir`` as a user would (nbclient, a python3 kernel, figures
    saved, not shown), with the notebook's ``MSA_NOTEBOOK_*`` settings; returns the executed notebook
    (:func:`msa_lightning.experiments.notebooks.execute_notebook`, which also stores them executed).

    Its ``msa`` commands (``python -m msa_lightning.cli``, its own or a pipeline's stages) go through the entry
    point inside the kernel (:func:`route_msa_in_process`): a Python start each (6-8 s here) would cost more than
    the tiny runs. The commands as real subprocesses are the CLI tests' business; the stored notebooks
    (``scripts/run_notebooks.sh``) are executed with real subprocesses."""
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from msa_lightning.experiments.notebooks import execute_notebook as execute

    return execute(name, workdir, settings, timeout=timeout, prelude=NOTEBOOK_PRELUDE)


def route_msa_in_process() -> None:
    """``subprocess.run`` and ``subprocess.call`` of ``python -m msa_lightning.cli ARGS`` go through
    :func:`msa_in_process` from here on (their ``cwd`` and ``env`` applied; output captured for ``run``,
    passed on for ``call``); other commands run as before. For a notebook's kernel (:data:`NOTEBOOK_PRELUDE`)."""
    real_run, real_call = subprocess.run, subprocess.call

    def run(command, *args, **kwargs):
        if _msa_args(command) is None:
            return real_run(command, *args, **kwargs)
        proc = msa_in_process(None, *_msa_args(command), cwd=kwargs.get("cwd"), env=kwargs.get("env"))
        if kwargs.get("check") and proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, command, proc.stdout, proc.stderr)
        return proc

    def call(command, *args, **kwargs):
        if _msa_args(command) is None:
            return real_call(command, *args, **kwargs)
        proc = msa_in_process(None, *_msa_args(command), cwd=kwargs.get("cwd"), env=kwargs.get("env"))
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode

    subprocess.run, subprocess.call = run, call


def _msa_args(command) -> list[str] | None:
    """The ``msa`` arguments of ``[python, -m, msa_lightning.cli, *ARGS]`` (None for any other command)."""
    if isinstance(command, (list, tuple)) and [str(c) for c in command[:3]] == [
        sys.executable,
        "-m",
        "msa_lightning.cli",
    ]:
        return [str(c) for c in command[3:]]
    return None


def run_msa(*args: str, cache: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The installed ``msa`` script, as a user runs it (offline hub; ``cache`` as MSA_CACHE_DIR)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if cache is not None:
        env["MSA_CACHE_DIR"] = str(cache)
    return subprocess.run(
        [str(Path(sys.executable).parent / "msa"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kwargs,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """``msa`` ended with status 2 and one ``msa: error:`` line holding every needle, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("msa: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def stages_in_process(monkeypatch) -> list[list[str]]:
    """``run_pipeline`` runs each stage's `msa fit` / `msa test` as ``python -m msa_lightning.cli ...``; here those
    command lines go through :func:`msa_lightning.cli.main` in this process instead (the same entry point and
    error boundary: several CLI runs without paying a Python start each). What the pipeline does between the
    stages (substitutions, records, best checkpoints, tests) is unchanged; stages as real subprocesses are
    tested in test_pipeline and test_fmlmsn. Returns the stage command lines run, in order."""
    import subprocess

    ran = []
    monkeypatch.setattr(subprocess, "call", cli_calls_in_process(ran))
    return ran


def cli_calls_in_process(ran: list[list[str]]):
    """A ``subprocess.call`` that runs ``python -m msa_lightning.cli ARGS`` through :func:`msa_lightning.cli.main`
    in this process (recording ``ARGS`` in ``ran``) and any other command as a real subprocess."""
    import subprocess

    from msa_lightning.cli import main

    real_call = subprocess.call

    def call(command, *args, **kwargs):
        if _msa_args(command) is None:
            return real_call(command, *args, **kwargs)
        ran.append(_msa_args(command))
        try:
            main(_msa_args(command))
        except SystemExit as exit_info:
            return 0 if exit_info.code is None else exit_info.code
        return 0

    return call
