"""Executes the example notebooks (``notebooks/*.ipynb``) top to bottom, as a user would, with tiny sizes.

``bash scripts/run_notebooks.sh [NAME ...]`` (:func:`store_executed`) re-executes them in place, each in a fresh
temporary folder, so the committed notebooks hold the outputs of one tiny run: every code cell's output, each paper
notebook ending with its paper's table (``msa report --paper``). Machine-specific paths in the outputs (that folder,
the checkout, the Python environment) are replaced by ``<workdir>``, ``<repo>`` and ``<python>``. The tests run
:func:`execute_notebook` on some of them with their own settings. Needs the ``dev`` extras (nbclient, nbformat,
ipykernel).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from msa_lightning.errors import MSAError

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"

#: the ``MSA_NOTEBOOK_*`` settings of each notebook for the stored run: tiny data, 1-2 epochs, two seeds
TINY = {
    "quickstart.ipynb": {"SIZE": "0.05", "EPOCHS": "2"},
    "custom_dataset.ipynb": {"EPOCHS": "2"},
    "skesl.ipynb": {"CLIPS": "16", "EPOCHS": "2", "SEEDS": "1111 1112"},
    "fmlmsn.ipynb": {"SIZE": "0.05", "EPOCHS": "2", "SEEDS": "1111 1112"},
    "twostep.ipynb": {"CLIPS": "12", "EPOCHS": "1", "FRAME_SIZE": "16", "SEEDS": "1111 1112"},
    "swrm.ipynb": {"SIZE": "0.05", "EPOCHS": "2", "SEEDS": "1111 1112"},
    "hybrid_shift.ipynb": {"SIZE": "0.05", "EPOCHS": "2", "SEEDS": "1111 1112"},
}


@contextmanager
def _environment(values: dict[str, str]):
    """``os.environ`` with ``values`` while the kernel starts (it inherits them), restored afterwards."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def execute_notebook(
    name: str,
    workdir: Path,
    settings: dict[str, str],
    timeout: int = 600,
    plots: str = "Agg",
    prelude: str | None = None,
):
    """Run ``notebooks/<name>`` top to bottom in ``workdir`` (nbclient, a python3 kernel) with its ``MSA_NOTEBOOK_*``
    ``settings`` (full variable names), no hub, one thread (tiny ops: one beats two on a shared machine) and the
    matplotlib backend ``plots`` (``Agg``: figures only saved; the inline backend keeps them in the notebook);
    returns the executed notebook. ``prelude``: code the kernel runs before the first cell, not kept in the
    returned notebook (the tests use it). A cell that raises ends it with nbclient's CellExecutionError."""
    import nbclient
    import nbformat

    env = {
        "MSA_NOTEBOOK_DIR": str(workdir),
        "MPLBACKEND": plots,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **settings,
    }
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if prelude:
        nb.cells.insert(0, nbformat.v4.new_code_cell(prelude))
    with _environment(env):
        client = nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
        )
        try:
            client.execute()
        finally:
            if prelude:
                nb.cells.pop(0)
    return nb


def _without_machine_paths(nb, workdir: Path) -> None:
    """Outputs as anyone's machine would show them: the run folder, the checkout and the environment by name."""
    names = [(str(workdir.resolve()), "<workdir>"), (str(workdir), "<workdir>"), (str(REPO), "<repo>")]
    names += [(sys.prefix, "<python>"), (sys.base_prefix, "<python>")]

    def clean(text):
        if isinstance(text, list):
            text = "".join(text)
        for path, name in names:
            text = text.replace(path, name)
        return text

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = clean(output["text"])
            for kind, value in output.get("data", {}).items():
                if not kind.startswith("image/"):  # text, Markdown, HTML (rich's tables)
                    output["data"][kind] = clean(value)


def store_executed(names: Sequence[str] = ()) -> dict[str, float]:
    """Execute each of ``names`` (default: every notebook of :data:`TINY`) with its tiny settings in a fresh folder
    and write it back with its outputs (figures inline); returns the seconds each took. An unknown name is an
    MSAError before anything runs."""
    names = list(names) or list(TINY)
    unknown = [n for n in names if n not in TINY]
    if unknown:
        raise MSAError(f"unknown notebook(s) {', '.join(unknown)}: expected some of {', '.join(TINY)}")
    import nbformat

    seconds = {}
    for name in names:
        log.info("%s: executing", name)
        settings = {f"MSA_NOTEBOOK_{key}": value for key, value in TINY[name].items()}
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="msa_notebook_") as folder:
            nb = execute_notebook(name, Path(folder), settings, plots="module://matplotlib_inline.backend_inline")
            _without_machine_paths(nb, Path(folder))
        nbformat.write(nb, NOTEBOOKS / name)
        seconds[name] = time.perf_counter() - start
        log.info("%s: stored executed (%.0f s)", name, seconds[name])
    return seconds
