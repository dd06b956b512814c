"""What a process running Lightning needs, whoever started it (``msa``, ``msa seeds``, a notebook).

* :func:`quiet_known_noise`: drop the known, unactionable notices of our pinned libraries;
* :func:`wandb_never_prompts`: W&B defaults to offline instead of asking for a login;
* :func:`process_command`: the command line Lightning's DDP launcher re-runs on the other ranks;
* :data:`trainers`: the trainers built here, so an error boundary can stop the ranks they launched.

Standard library only: the ``msa`` entry point imports it before it knows whether Lightning is needed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import warnings
import weakref
from typing import Iterator

trainers: "weakref.WeakSet" = weakref.WeakSet()  # trainers built by the CLI (their DDP children, on errors)


class _DropMessages(logging.Filter):
    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.needles)


def quiet_known_noise() -> None:
    """Drop the advertising tip and the deprecation notices of our pinned libraries from the output.

    * ``lightning.pytorch.trainer.connectors.logger_connector`` logs a "try installing litlogger" tip
      (through the ``rank_zero`` logger) for every Trainer;
    * torch (2.13 here) deprecates ``isinstance(x, LeafSpec)``, which lightning's ``utilities/_pytree.py`` still
      uses on every optimizer step (a FutureWarning we cannot act on);
    * jsonargparse 4.53 warns about the methods LightningCLI 2.6 still calls (``instantiate_classes``,
      ``add_instantiator``, ``skip_none``) when Python shows DeprecationWarnings (tests, ``-W default``);
    * LightningCLI warns when both ``args`` and ``sys.argv`` are set, which :func:`process_command` does
      on purpose.
    """
    # LightningCLI 2.6 calls jsonargparse methods deprecated in 4.49 (instantiate_classes, add_instantiator)
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessages("litlogger"))
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # runs started from Python pass `args` and set sys.argv to the same command for DDP (process_command)
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")


def wandb_never_prompts() -> None:
    """W&B asks for a login on a terminal when no key is configured; default to offline instead."""
    if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
        netrc = os.path.expanduser("~/.netrc")
        if not (os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read()):
            os.environ["WANDB_MODE"] = "offline"


# ---------------------------------------------------------------------------------------------- DDP command line
_command_held = False


@contextlib.contextmanager
def process_command(argv: list[str]) -> Iterator[None]:
    """Make ``msa <argv>`` the command line Lightning's DDP launcher re-runs on ranks 1..N-1.

    Lightning's subprocess launcher starts every other rank as ``python -m <__main__.__spec__.name>
    <sys.argv[1:]>`` (or ``python <sys.argv[0]> ...`` for a script): each rank re-runs the whole program
    and meets rank 0 in the same sequence of fits. A run started from Python (tests, ``msa seeds``)
    therefore sets both to the ``msa`` command that re-creates it. The outermost caller wins: a
    multi-seed run keeps its own command while each seed's CLI is built.
    """
    global _command_held
    if _command_held:
        yield
        return
    import __main__

    saved_argv, saved_spec = sys.argv, getattr(__main__, "__spec__", None)
    sys.argv = [sys.argv[0] if sys.argv else "msa", *argv]
    __main__.__spec__ = importlib.util.find_spec("msa_lightning.cli")
    _command_held = True
    try:
        yield
    finally:
        sys.argv, __main__.__spec__ = saved_argv, saved_spec
        _command_held = False
