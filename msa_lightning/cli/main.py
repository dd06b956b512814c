"""The ``msa`` command.

* ``msa fit|validate|test|predict --config CONFIG.yaml`` — LightningCLI; model and data are chosen by
  class name (``model.class_path: TFNModule``), every hyper-parameter is a typed ``__init__`` argument,
  ``--print_config`` shows the resolved config. Settings that follow the data (feature sizes, label
  bound, metric family, training-set size) are filled into the model from the DataModule.
  ``--ckpt_path`` takes a checkpoint file or a run folder (its best checkpoint; ``RUN/last`` for the last).
* the suite's own subcommands (``msa data``, ``seeds``, ``report``, ``quickstart``, ``plot``, ``export``,
  ``pipeline``, ``transcribe``, ``pretrain-data``, ``features``, ``infer``, ``sweep``): one module each, registered in
  :data:`msa_lightning.cli.commands.COMMANDS` and run by :func:`~msa_lightning.cli.commands.run_command`.

Expected failures (:class:`msa_lightning.errors.MSAError`, and a multi-process run that lost another rank:
:func:`lost_peer`) end as one ``msa: error: ...`` message and exit status 2; ``--debug`` anywhere on the
command line (or ``MSA_DEBUG=1``) shows the traceback.

This module is the entry point and stays light: ``msa`` and ``msa --help`` print the overview below,
and the suite's own subcommands import what they use. Lightning, the model registry and the
DataModules are imported only for the LightningCLI subcommands, from
:mod:`msa_lightning.experiments.lightning_cli`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time

from msa_lightning.cli.commands import COMMANDS, run_command
from msa_lightning.errors import MSAError
from msa_lightning.experiments.process import process_command, quiet_known_noise, trainers

#: LightningCLI's subcommands (they build the CLI: Lightning, every model and DataModule)
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
#: the suite's own subcommands (:data:`msa_lightning.cli.commands.COMMANDS`)
EXTRA_COMMANDS = tuple(COMMANDS)

OVERVIEW = """\
usage: msa <command> [options]        (`msa <command> --help` lists the options of one)

msa_lightning: multimodal sentiment analysis with PyTorch Lightning.

training (LightningCLI: --config CONFIG.yaml, --model.*, --data.*, --trainer.*, --print_config):
  msa fit            train a model; --ckpt_path RUN/last resumes a run
  msa validate       validate a checkpoint (--ckpt_path: a .ckpt file or a run folder: its best)
  msa test           test a checkpoint: its metrics (--ckpt_path as for validate)
  msa predict        a checkpoint's predictions as a CSV file (id, score, label)

suite commands:
  msa data           feature files: msa data {synth,convert,inspect,wer}
  msa seeds          fit + test a config over several seeds; mean ± std tables
  msa report         compare multi-seed runs; paired t-test; a paper's table (--paper)
  msa quickstart     synthetic MOSI -> fit -> test -> metric table
  msa plot           paper analyses: msa plot hybrid-shift
  msa export         model outputs per split into the store, from a checkpoint
  msa pipeline       multi-stage experiments from a pipeline YAML
  msa sweep          a W&B sweep YAML run locally and offline (grid, random, bayes); msa report DIR ranks it
  msa transcribe     ASR transcripts of audio clips (a Whisper model)
  msa pretrain-data  SKESL pretraining corpus: msa pretrain-data {synth,build,inspect}
  msa features       feature files from your own videos: msa features extract --raw DIR --out FILE.pkl
  msa infer          score new videos with a trained model: msa infer VIDEO... --ckpt RUN
  msa weights        pretrained weights: msa weights convert-swin3d FILE.pth --out DIR

Errors in the input end as one `msa: error:` line and exit status 2; add --debug (or set
MSA_DEBUG=1) for the traceback.
"""


def _launched_child_rank() -> int:
    """Rank (on its node) of a process started by Lightning's DDP launcher; 0 for rank 0, and for ranks
    that torchrun or SLURM started (their parent is not rank 0)."""
    if os.environ.get("LOCAL_RANK", "0") == "0" or "TORCHELASTIC_RUN_ID" in os.environ or "SLURM_PROCID" in os.environ:
        return 0
    return int(os.environ["LOCAL_RANK"])


def _stop_children() -> None:
    """Rank 0 stops the DDP processes it launched, which may be waiting for it in a collective.

    The strategy's ``launcher`` (public) of a subprocess-launched run keeps the ``Popen`` objects of the
    ranks it started in ``procs``; any launcher without them (spawn, torchrun, SLURM) is left alone."""
    for trainer in list(trainers):
        launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
        for proc in getattr(launcher, "procs", None) or ():
            if callable(getattr(proc, "poll", None)) and proc.poll() is None:
                proc.kill()


def _wait_for_parent(limit_s: float = 30.0) -> bool:
    """Wait (up to ``limit_s``) for rank 0, the parent of a launched rank, to end; True if it did.
    A launched rank must not exit with an error first: rank 0's process observer would kill rank 0."""
    parent, start = os.getppid(), time.monotonic()
    while os.getppid() == parent and time.monotonic() - start < limit_s:
        time.sleep(0.1)
    return os.getppid() != parent


# ---------------------------------------------------------------------------------------------- entry point
def _debug_requested(args: list[str]) -> tuple[list[str], bool]:
    debug = "--debug" in args or os.environ.get("MSA_DEBUG", "") not in ("", "0")
    if debug:
        os.environ["MSA_DEBUG"] = "1"  # DDP ranks inherit it
        os.environ.setdefault("JSONARGPARSE_DEBUG", "true")  # parse errors with their traceback too
    return [a for a in args if a != "--debug"], debug


def main(argv: list[str] | None = None) -> None:
    """The ``msa`` command: one error boundary around LightningCLI and the suite's own subcommands."""
    from_command_line = argv is None
    args, debug = _debug_requested(list(sys.argv[1:] if from_command_line else argv))
    if from_command_line:
        sys.argv = [sys.argv[0], *args]  # what DDP re-runs on the other ranks
    if not args or args[0] in ("-h", "--help"):  # the suite's overview, without building LightningCLI
        print(OVERVIEW, end="")
        sys.exit(0 if args else 2)
    quiet_known_noise()
    code = 0
    try:
        if args[0] in EXTRA_COMMANDS:
            with process_command(args) if not from_command_line else contextlib.nullcontext():
                code = run_command(args)
        else:
            from msa_lightning.experiments.lightning_cli import make_cli

            make_cli(None if from_command_line else args)
    except Exception as error:
        expected = expected_error(error) or lost_peer(error)
        if expected is None or debug:
            raise
        report_error(expected)
        sys.exit(2)
    sys.exit(code)


def expected_error(error: BaseException) -> MSAError | None:
    """The MSAError behind ``error``: itself, or its direct cause (jsonargparse re-raises an error of a
    class's ``__init__`` as a ValueError ``from`` it when the argument's type is a Union)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, MSAError):
            return error
        error, seen = error.__cause__, seen + 1
    return None


#: what torch's gloo/NCCL transports say when another process of the job died or stopped answering
_PEER_LOST = re.compile(r"Connection (closed|reset) by peer|[Tt]imed out|Socket Timeout|NCCL communicator was aborted")


def lost_peer(error: BaseException) -> MSAError | None:
    """A collective of a multi-process run failed because another rank (or its node) crashed, was killed or hung
    past the strategy's ``timeout``: one line saying so and how to resume, instead of torch's traceback."""
    running = [t for t in trainers if getattr(t, "world_size", 1) > 1]
    if not running or not isinstance(error, RuntimeError) or not _PEER_LOST.search(str(error)):
        return None
    trainer = running[0]
    first = str(error).strip().splitlines()[0]
    first = re.sub(r"^\[[^\]]*pair\.cc:\d+\] ", "", first)  # gloo's source location
    folder = getattr(trainer.checkpoint_callback, "dirpath", None)
    resume = f"; resume with --ckpt_path {os.path.join(folder, 'last.ckpt')}" if folder else ""
    return MSAError(
        f"rank {trainer.global_rank} of {trainer.world_size} lost another process of the job (it crashed, was "
        f"killed, or its node failed or hung): {first}{resume}"
    )


def without_worker_traceback(error: BaseException) -> str:
    """The error's message. An error raised in a DataLoader worker is re-raised by torch with the worker's
    traceback inside its message; keep the original message and say which worker it came from."""
    message = str(error).strip() or type(error).__name__
    where = re.match(r"Caught \w+ (in DataLoader worker process \d+)\.\nOriginal Traceback", message)
    if where is None:
        return message
    cls = type(error)
    for name in (f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__):
        head, sep, original = message.rpartition(f"\n{name}: ")
        if sep:
            return f"{original.strip()} ({where.group(1)})"
    return message


def report_error(error: BaseException) -> None:
    """``msa: error: <message>`` on stderr. Under DDP rank 0 speaks and stops the ranks it launched; a
    launched rank waits for rank 0 (which meets the same error) and speaks only if rank 0 does not end."""
    rank = _launched_child_rank()
    message = without_worker_traceback(error)
    if rank:
        if not _wait_for_parent():
            print(f"msa: error: [rank {rank}] {message}", file=sys.stderr, flush=True)
        return
    print(f"msa: error: {message}", file=sys.stderr, flush=True)
    _stop_children()
