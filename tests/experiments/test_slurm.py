"""The shipped SLURM template (``configs/cluster/slurm_ddp.sh``) run through a fake ``sbatch``/``srun``/``scontrol``
(:mod:`fake_slurm`): 2 tasks as 2 nodes on localhost, so Lightning's SLURM environment takes ranks and the master
address from SLURM's variables as on a cluster. SIGUSR1 mid-run (SLURM's ``--signal=USR1@...`` before the time
limit, ``auto_requeue``): every rank stops after the same step, ``hpc_ckpt_1.ckpt`` is saved and the job is
requeued (``ExactResume``; Lightning's own handler would save inside the signal handler and deadlock on a collective
until the timeout); the requeued job resumes from that checkpoint and finishes with every epoch validated once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.experiments.hold_callback import HOLD_ENV, HoldAtSecondEpoch

FAKE = Path(__file__).resolve().parent / "fake_slurm.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_slurm_template_runs_two_tasks_and_requeues_on_sigusr1(synthetic_mosi, cache_dir, tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    for name in ("sbatch", "srun", "scontrol"):
        (bin_dir / name).symlink_to(FAKE)
    history, root, release = tmp_path / "history.jsonl", tmp_path / "run", tmp_path / "release"
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
        "FAKE_SLURM_DIR": str(state),
        "MASTER_PORT": str(_free_port()),
        "MSA_CACHE_DIR": str(cache_dir),
        "MSA_METRICS_HISTORY": str(history),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(REPO),  # the tasks import the test's callback below
        HOLD_ENV: str(release),
    }
    command = [
        "sbatch",
        "--nodes=2",
        "--ntasks-per-node=1",
        "configs/cluster/slurm_ddp.sh",
        "configs/baselines/lf_dnn_mosi.yaml",
        # ddp.yaml's GPU settings replaced for CPU processes
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--trainer.sync_batchnorm=false",
        "--trainer.strategy.init_args.process_group_backend=gloo",
        "--trainer.strategy.init_args.timeout=0:01:00",
        f"--data.path={synthetic_mosi}",
        "--data.num_workers=0",
        "--trainer.max_epochs=4",
        # no early stop; every task holds at the start of its second epoch until the signal has reached it
        f"--trainer.callbacks=[{HoldAtSecondEpoch.__module__}.HoldAtSecondEpoch]",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
    ]
    log = tmp_path / "job.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    start = time.monotonic()

    def wait_for(condition) -> None:
        while not condition():
            assert proc.poll() is None and time.monotonic() - start < 300, log.read_text()[-4000:]
            time.sleep(0.05)

    wait_for(Path(f"{release}.held").exists)  # epoch 0 validated; the tasks wait before epoch 1
    os.kill(int((state / "srun.pid").read_text()), signal.SIGUSR1)  # SLURM's warning signal to every task
    wait_for(lambda: log.read_text().count("msa: SLURM signal") == 2)  # both ranks have it: no race with the epochs
    release.touch()
    proc.wait(timeout=300)
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    assert "msa: global batch 32 = 16 per device x 2 device(s) x 1" in output  # ddp.yaml: the config's 32 over 2
    hpc = root / "hpc_ckpt_1.ckpt"
    assert f"msa: SLURM job 4242: saved {hpc}, which the requeued job resumes from; requeueing" in output, output[
        -4000:
    ]
    assert "fake sbatch: job 4242 requeued, run 2" in output
    assert hpc.is_file()
    assert f"Restored all states from the checkpoint at {hpc}" in output  # Lightning's SLURM auto-resume
    assert f"msa: resuming {hpc} at epoch" in output
    assert "msa: error" not in output and "Traceback" not in output
    epochs = [json.loads(line)["epoch"] for line in history.read_text().splitlines()]
    assert sorted(set(epochs)) == list(range(4))  # every epoch validated, before or after the requeue
