#!/usr/bin/env python3
"""A stand-in for SLURM's ``sbatch``, ``srun`` and ``scontrol requeue`` on one machine (tests only; called by the
name of a link to this file). It sets the variables a SLURM job's tasks see, for several "nodes" on localhost:

* ``sbatch [--nodes N] [--ntasks-per-node T] SCRIPT ARGS``: the ``#SBATCH`` lines of SCRIPT, overridden by the
  options given, become ``SLURM_JOB_ID``, ``SLURM_JOB_NUM_NODES``, ``SLURM_NTASKS_PER_NODE``, ``SLURM_NTASKS``,
  ``SLURM_CPUS_PER_TASK``, ``SLURM_JOB_NAME``, ``SLURM_NODELIST=localhost``; SCRIPT runs under bash. A job that
  ``scontrol requeue`` asked for runs again (``SLURM_RESTART_COUNT`` 1, 2, ...); sbatch ends with its last exit status.
* ``srun CMD``: ``SLURM_NTASKS`` copies of CMD with ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID``; SIGUSR1
  sent to srun reaches every task (SLURM's ``--signal=USR1@...``); SIGTERM ends the tasks as SLURM does (SIGTERM,
  then SIGKILL after ``KillWait``, 3 s here).
* ``scontrol requeue JOBID``: marks the job for a rerun and ends its running step (SIGTERM to srun).

State lives in ``$FAKE_SLURM_DIR``: ``srun.pid`` (the running step) and ``requeue`` (a pending rerun).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake_slurm"))
KILL_WAIT_S = 3.0


def sbatch(argv: list[str]) -> int:
    options: dict[str, str] = {}
    while argv and argv[0].startswith("--"):
        key, _, value = argv.pop(0)[2:].partition("=")
        options[key] = value
    script, args = argv[0], argv[1:]
    directives = {}
    for line in Path(script).read_text().splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)=(\S+)", line)
        if match:
            directives[match.group(1)] = match.group(2)
    directives.update(options)
    nodes, per_node = int(directives.get("nodes", 1)), int(directives.get("ntasks-per-node", 1))
    env = {
        **os.environ,
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": directives.get("job-name", Path(script).name),
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NNODES": str(nodes),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_NTASKS": str(nodes * per_node),
        "SLURM_CPUS_PER_TASK": directives.get("cpus-per-task", "1"),
        "SLURM_NODELIST": "localhost",
    }
    STATE.mkdir(parents=True, exist_ok=True)
    restarts = 0
    while True:
        code = subprocess.call(["bash", script, *args], env={**env, "SLURM_RESTART_COUNT": str(restarts)})
        if not (STATE / "requeue").exists():
            return code
        (STATE / "requeue").unlink()
        restarts += 1
        print(f"fake sbatch: job 4242 requeued, run {restarts + 1}", file=sys.stderr, flush=True)


def srun(argv: list[str]) -> int:
    ntasks, per_node = int(os.environ["SLURM_NTASKS"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
    tasks = [
        subprocess.Popen(
            argv,
            env={
                **os.environ,
                "SLURM_PROCID": str(i),
                "SLURM_LOCALID": str(i % per_node),
                "SLURM_NODEID": str(i // per_node),
            },
        )
        for i in range(ntasks)
    ]

    def forward(signum, frame) -> None:
        for task in tasks:
            if task.poll() is None:
                task.send_signal(signum)

    def end_step(signum, frame) -> None:  # SLURM ends a step: SIGTERM, KillWait, SIGKILL
        forward(signal.SIGTERM, frame)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline and any(t.poll() is None for t in tasks):
            time.sleep(0.05)
        for task in tasks:
            if task.poll() is None:
                task.kill()

    signal.signal(signal.SIGUSR1, forward)
    signal.signal(signal.SIGTERM, end_step)
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "srun.pid").write_text(str(os.getpid()))
    codes = [task.wait() for task in tasks]
    (STATE / "srun.pid").unlink(missing_ok=True)
    return next((c for c in codes if c), 0)


def scontrol(argv: list[str]) -> int:
    if argv[:1] != ["requeue"]:
        print(f"fake scontrol: only `requeue JOBID`, not {argv}", file=sys.stderr)
        return 1
    (STATE / "requeue").write_text(argv[1])
    pid = STATE / "srun.pid"
    if pid.exists():
        os.kill(int(pid.read_text()), signal.SIGTERM)
    return 0


if __name__ == "__main__":
    name = Path(sys.argv[0]).name
    sys.exit({"sbatch": sbatch, "srun": srun, "scontrol": scontrol}[name](sys.argv[1:]))
