"""Callbacks that make a run resumable exactly (registered by the ``msa`` CLI for every fit).

* :class:`MSACheckpoint` — Lightning's ``ModelCheckpoint`` with one change: ``last.ckpt`` is written
  at the end of *every* epoch. Lightning 2.x writes ``last`` only in a step where a top-k file was
  saved (``ModelCheckpoint.on_validation_end``: "Only save last checkpoint if a checkpoint was
  actually saved in this step"), so with ``monitor: val/mae`` it holds the last *improvement*.
* :class:`ExactResume` — stores what a checkpoint lacks for a bit-identical continuation: the random
  number generators (python, numpy, torch CPU and CUDA, per rank), the run folder (so a resumed run
  logs into the same place) and the CSV log written so far; and turns Ctrl-C into "finish this
  step, save ``interrupted.ckpt``, exit".

Where the random state is put back (Lightning 2.6 order, ``Trainer._run``): callbacks'
``load_state_dict`` runs in ``_restore_modules_and_callbacks``, before the sanity check (which runs
under ``isolate_rng`` anyway) and before ``FitLoop.setup_data`` creates the training iterator
(``iter()`` of a ``DataLoader`` without its own generator draws its base seed from torch's global
generator). A checkpoint taken at an epoch end is followed, in the uninterrupted run, by exactly that
``iter()``: its states are restored at load time. A checkpoint taken between two training steps of
one epoch is followed directly by the next step: its states are restored in the first
``on_train_batch_start`` after the resume.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.states import TrainerFn

from msa_lightning.checkpoints import INTERRUPTED_NAME


class MSACheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the state at the end of the latest epoch, always.

    Top-k files (``best-*.ckpt``) follow ``monitor``/``mode`` as usual; ``save_last: link`` is
    treated like ``true`` at epochs without a top-k save.
    """

    @property
    def state_key(self) -> str:
        # the same key as ModelCheckpoint's: checkpoints of either class restore into the other
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def _end_of_epoch_save(self, trainer: L.Trainer) -> None:
        if (
            not self.save_last
            or trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or trainer.fast_dev_run
        ):
            return
        if self._last_saved_at_step == trainer.global_step:  # the parent class saved it already
            return
        candidates = self._monitor_candidates(trainer)
        if self.save_last != "link":
            self._save_last_checkpoint(trainer, candidates)
            return
        # "link" points last.ckpt at the latest top-k file, which is older than this epoch: write a real
        # file instead (removing the link first, so the save does not overwrite the file it points to)
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        if trainer.is_global_zero and os.path.islink(filepath):
            os.remove(filepath)
        trainer.strategy.barrier()
        self.last_model_path = filepath
        self._save_checkpoint(trainer, filepath)
        self._last_saved_at_step = trainer.global_step

    _last_saved_at_step = -1

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved_at_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        # validation that ends a training epoch (not a mid-epoch `val_check_interval` run)
        if not self._should_save_on_train_epoch_end(trainer) and _after_last_batch(trainer):
            self._end_of_epoch_save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._end_of_epoch_save(trainer)


def _after_last_batch(trainer: L.Trainer) -> bool:
    loop = trainer.fit_loop.epoch_loop
    return (
        bool(loop.batch_progress.is_last_batch) or loop.batch_progress.current.completed >= trainer.num_training_batches
    )


def collect_rng_states() -> dict[str, Any]:
    """Every generator's state as tensors and plain values (loadable with ``torch.load(weights_only=True)``,
    which Lightning uses to resume)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(L.Callback):
    """Random-number state, run folder, CSV log and Ctrl-C handling for exact resumes.

    Args:
        save_on_interrupt: on the first Ctrl-C (SIGINT), finish the running training step, save
            ``interrupted.ckpt`` next to ``last.ckpt`` and exit with code 130; a second Ctrl-C stops
            at once.
    """

    def __init__(self, save_on_interrupt: bool = True) -> None:
        self.save_on_interrupt = save_on_interrupt
        self._pending_rng: dict | None = None  # states to put back at the next training step
        self._interrupt_requested = False
        self._previous_handler = None
        self._resumed_from: dict | None = None

    # ------------------------------------------------------------------ saving
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if (
            stage == "fit"
            and isinstance(environment, SLURMEnvironment)
            and environment.auto_requeue
            and threading.current_thread() is threading.main_thread()
        ):
            # installed before the trainer registers its own (it keeps a handler that is already there)
            signal.signal(environment.requeue_signal or signal.SIGUSR1, self._on_requeue_signal)

    def state_dict(self) -> dict[str, Any]:
        # Lightning collects callback states (on every rank) before `on_save_checkpoint` hooks run
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        states = collect_rng_states()
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            per_rank = [None] * trainer.world_size
            torch.distributed.all_gather_object(per_rank, states)
        else:
            per_rank = [states]
        return {
            "rng": per_rank,
            "mid_epoch": not _after_last_batch(trainer),
            "epoch_end_row": _pending_epoch_row(trainer),
            "loggers": [_logger_record(lg, trainer.is_global_zero) for lg in trainer.loggers],
            "ckpt_dir": getattr(trainer.checkpoint_callback, "dirpath", None),
        }

    # ------------------------------------------------------------------ restoring
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self._resumed_from = state_dict
        rank = _global_rank()
        per_rank = state_dict["rng"]
        states = per_rank[rank] if rank < len(per_rank) else per_rank[0]
        if state_dict.get("mid_epoch"):
            self._pending_rng = states
        else:
            set_rng_states(states)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        record = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if not record or not trainer.is_global_zero:
            return
        for logger, saved in zip(trainer.loggers, record.get("loggers", [])):
            if isinstance(logger, CSVLogger) and saved and saved.get("csv_rows") is not None:
                _continue_csv_log(logger, saved)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._resumed_from is not None and trainer.is_global_zero:
            where = [f"logs -> {lg.log_dir}" for lg in trainer.loggers if getattr(lg, "log_dir", None)]
            ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
            if ckpt_dir:
                where.append(f"checkpoints -> {ckpt_dir}")
            print(
                f"msa: resuming {trainer.ckpt_path} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                + "; ".join(where),
                flush=True,
            )
        row = (self._resumed_from or {}).get("epoch_end_row")
        if row:  # logged by the checkpointed run after the checkpoint was written: log it again
            for logger in trainer.loggers:
                logger.log_metrics(row["metrics"], step=row["step"])
                logger.save()
        if self.save_on_interrupt and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None

    # ------------------------------------------------------------------ SLURM's requeue signal
    _requeue = False

    def _on_requeue_signal(self, signum, frame) -> None:
        """SLURM's warning before the time limit (``auto_requeue``). Lightning's own handler saves a checkpoint
        inside the handler, where a rank may be in another collective (a deadlock until the timeout); here, as for
        Ctrl-C, every rank stops after the same training step, saves ``hpc_ckpt_N.ckpt`` in ``default_root_dir``
        (which Lightning resumes a SLURM job from) and rank 0 asks ``scontrol requeue``."""
        self._requeue = self._interrupt_requested = True
        print(f"msa: SLURM signal {signum}: saving a checkpoint after this training step, then requeueing", flush=True)

    def _requeue_job(self, trainer: L.Trainer, path: str) -> None:
        job = os.environ.get("SLURM_JOB_ID", "")
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if trainer.is_global_zero:
            print(f"msa: SLURM job {job}: saved {path}, which the requeued job resumes from; requeueing", flush=True)
            # SLURM ends the job's tasks with SIGTERM once it is requeued: no handler (Lightning's would broadcast
            # to ranks that are gone)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = subprocess.call(["scontrol", "requeue", job])
            if code != 0:
                print(f"msa: SLURM job {job} was not requeued (scontrol exited with {code})", flush=True)
        raise SystemExit(0)

    # ------------------------------------------------------------------ Ctrl-C
    def _on_sigint(self, signum, frame) -> None:
        if self._interrupt_requested:  # second Ctrl-C: stop now
            self._restore_handler()
            raise KeyboardInterrupt
        self._interrupt_requested = True
        print(
            "\nmsa: Ctrl-C: saving a resumable checkpoint after this training step "
            "(press Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        requested = self._interrupt_requested
        if trainer.world_size > 1:  # every rank must save (a collective) and stop at the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested:
            return
        if _after_last_batch(trainer):
            # the epoch's own validation and last.ckpt follow; stop after them (on_train_end)
            trainer.should_stop = True
            self._stop_after_epoch = True
            return
        # this step's metrics, which Lightning logs right after this hook, belong to the saved state
        trainer._logger_connector.update_train_step_metrics()
        path = self._interrupt_path(trainer)
        trainer.save_checkpoint(path)
        self._exit(trainer, path)

    _stop_after_epoch = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after ModelCheckpoint wrote this epoch's last.ckpt (it saves in its own on_train_epoch_end,
        # which Lightning calls after ours)
        if self._stop_after_epoch:
            cb = trainer.checkpoint_callback
            path = None if self._requeue else getattr(cb, "last_model_path", "") or None
            if not path:
                path = self._interrupt_path(trainer)
                trainer.save_checkpoint(path)
            self._exit(trainer, path)

    def _interrupt_path(self, trainer: L.Trainer) -> str:
        if self._requeue:  # the name and place Lightning resumes a SLURM job from
            taken = [
                int(m.group(1))
                for p in Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")
                if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))
            ]
            return os.path.join(trainer.default_root_dir, f"hpc_ckpt_{max(taken, default=0) + 1}.ckpt")
        folder = getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        return os.path.join(folder, INTERRUPTED_NAME)

    def _exit(self, trainer: L.Trainer, path: str) -> None:
        self._restore_handler()
        for logger in trainer.loggers:
            logger.save()
        if self._requeue:
            self._requeue_job(trainer, path)
        if trainer.is_global_zero:
            print(
                f"msa: interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                f"resume with --ckpt_path {path}",
                file=sys.stderr,
                flush=True,
            )
        raise SystemExit(130)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handler()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()


def _pending_epoch_row(trainer: L.Trainer) -> dict | None:
    """The epoch-mean training metrics of a checkpoint written in ``on_train_epoch_end``.

    Lightning logs them after the callbacks' ``on_train_epoch_end`` (``_FitLoop.on_advance_end`` ->
    ``update_train_epoch_metrics``), so they happen after the checkpoint; a run resumed from it starts
    with the next epoch and would never log them. Same values and step as Lightning's call.
    """
    progress = trainer.fit_loop.epoch_progress.current
    if progress.processed != progress.completed + 1 or trainer.sanity_checking or not trainer.loggers:
        return None
    from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars

    metrics = convert_tensors_to_scalars(trainer._logger_connector.metrics["log"])
    if not metrics:
        return None
    step = metrics.pop("step", None)
    if step is None:
        metrics.setdefault("epoch", trainer.current_epoch)
        step = trainer.fit_loop.epoch_loop._batches_that_stepped - 1
    return {
        "metrics": {k: v if isinstance(v, (int, float)) else float(v) for k, v in metrics.items()},
        "step": int(step),
    }


def _global_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", 0))


def _logger_record(logger, is_global_zero: bool) -> dict | None:
    """Where a logger writes, and for a CSV log how many rows were on disk when the checkpoint was saved."""
    record = {
        "class": type(logger).__name__,
        "version": _plain(getattr(logger, "version", None)),
        "log_dir": getattr(logger, "log_dir", None),
    }
    if isinstance(logger, CSVLogger) and is_global_zero:
        logger.save()  # flush: rows logged so far belong to the checkpointed state
        path = Path(logger.experiment.metrics_file_path)
        record["csv_rows"] = _count_rows(path) if path.is_file() else 0
    return record


def _plain(value):
    return value if isinstance(value, (str, int)) or value is None else str(value)


def _count_rows(path: Path) -> int:
    with open(path, newline="") as f:
        return max(sum(1 for _ in csv.reader(f)) - 1, 0)


_KEPT_CSV = "metrics.before_resume.csv"


def _keep_csv_rows(log_dir: str, rows_in_checkpoint: int) -> None:
    """Before a resumed run builds its CSV logger (Lightning's writer deletes an existing
    ``metrics.csv`` in ``Trainer._run`` -> ``_call_setup_hook``), copy the rows the checkpointed run
    had written aside; rows logged after the checkpoint are left out, the resumed run logs them again."""
    path = Path(log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    kept = Path(log_dir) / _KEPT_CSV
    with open(kept, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=header)
        out.writeheader()
        out.writerows(rows[:rows_in_checkpoint])


def _continue_csv_log(logger: CSVLogger, saved: dict) -> None:
    """Put the rows kept by :func:`_keep_csv_rows` back in front of the resumed run's log."""
    kept = Path(logger.log_dir) / _KEPT_CSV
    if not kept.is_file():
        return
    writer = logger.experiment
    with open(kept, newline="") as f:
        header = list(csv.DictReader(f).fieldnames or [])
    os.replace(kept, writer.metrics_file_path)
    writer.metrics_keys = sorted(header)


def _is_rank_zero_process() -> bool:
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def continue_in_run_folder(config) -> None:
    """For ``msa fit --ckpt_path C``: log and checkpoint into the folders of the run that wrote ``C``.

    ``config`` is the fit subcommand's parsed namespace. Settings given explicitly (a logger
    ``version``, ``checkpoint.dirpath``) win; otherwise they are taken from ``ExactResume``'s record in
    the checkpoint, so Lightning keeps the best score (``ModelCheckpoint`` reloads it only when its
    ``dirpath`` is unchanged) and the CSV log continues instead of starting a new ``version_N``.
    """
    ckpt_path = config.get("ckpt_path")
    if not ckpt_path or not os.path.isfile(str(ckpt_path)):
        return
    state = torch.load(str(ckpt_path), map_location="cpu", weights_only=False, mmap=True)
    callbacks = state.get("callbacks") or {}
    record = next((v for k, v in callbacks.items() if k.startswith("ExactResume") and v), None)
    ckpt_dir = next((v.get("dirpath") for k, v in callbacks.items() if k.startswith("ModelCheckpoint")), None)
    if config.get("checkpoint") is not None and config.get("checkpoint.dirpath") is None:
        if ckpt_dir and os.path.isdir(ckpt_dir):
            config["checkpoint.dirpath"] = ckpt_dir
    if not record:
        return
    loggers = config.get("trainer.logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    for logger, saved in zip(loggers, record.get("loggers", [])):
        if not saved or saved.get("version") is None or not hasattr(logger, "get"):
            continue
        init_args = logger.get("init_args")
        cls = str(logger.get("class_path", "")).rsplit(".", 1)[-1]
        if init_args is None or saved["class"] != cls or cls not in ("CSVLogger", "TensorBoardLogger"):
            continue
        version = saved["version"] if init_args.get("version") is None else init_args.get("version")
        folder = os.path.join(
            str(init_args.get("save_dir") or "."),
            str(init_args.get("name") or ""),
            version if isinstance(version, str) else f"version_{version}",
        )
        if not saved.get("log_dir") or os.path.abspath(folder) != os.path.abspath(saved["log_dir"]):
            continue  # this run logs elsewhere (another save_dir, name or version): a new log
        init_args["version"] = version
        if cls == "CSVLogger" and saved.get("csv_rows") is not None and _is_rank_zero_process():
            _keep_csv_rows(saved["log_dir"], saved["csv_rows"])


class MetricsHistory(L.Callback):
    """One JSON line per validation (``{"epoch", "step", <metric>: value, ...}``) appended to ``path``, whatever
    the logger: a sweep runner reads its trials' objective and learning curves (hyperband) from it while they run.

    Rank 0 writes; the sanity check is skipped. A resumed run appends after the rows it had written: a reader keeps
    the last row of each epoch (:func:`~msa_lightning.checkpoints.read_metrics_history`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                row[name] = float(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as file:
            file.write(json.dumps(row) + "\n")
            file.flush()
