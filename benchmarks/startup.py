"""Start-up time of the ``msa`` command: median wall time of ``python -c "import torch"`` (the floor
every command pays), ``msa --help`` and ``msa data inspect FILE`` on a small synthetic MOSI file.

    python benchmarks/startup.py --repeats 7

Each command runs in a fresh process ``--repeats`` times (after one untimed run that warms the
page cache); the table shows the median and the minimum, and which heavy libraries the command
imported (``-X importtime`` of one more run: lightning, transformers, litdata, librosa, av).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("lightning", "transformers", "litdata", "librosa", "av")


def msa_command() -> list[str]:
    script = Path(sys.executable).with_name("msa")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "msa_lightning.cli"]


def timed(command: list[str], repeats: int, env: dict) -> list[float]:
    subprocess.run(command, env=env, capture_output=True, check=False)  # warm the page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return times


def heavy_imports(command: list[str], env: dict) -> list[str]:
    """The top-level HEAVY packages the command imports (from ``-X importtime``'s report on stderr)."""
    if Path(command[0]).name == "msa":  # the console script: run its entry point under the same interpreter
        command = [
            sys.executable,
            "-c",
            "import sys; from msa_lightning.cli import main; sys.argv[0] = 'msa'; main()",
            *command[1:],
        ]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *command[1:]], env=env, capture_output=True, text=True, check=False
    )
    found = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name.split(".")[0] in HEAVY:
                found.add(name.split(".")[0])
    return sorted(found)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", help="where the synthetic file goes (default: a temporary folder)")
    args = p.parse_args()

    from msa_lightning.data.synthetic import make_synthetic

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="msa_startup_"))
    workdir.mkdir(parents=True, exist_ok=True)
    feature_file = make_synthetic("mosi", workdir / "mosi.pkl", size_factor=0.05, seed=0)
    env = {**os.environ, "MSA_CACHE_DIR": str(workdir / "cache"), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    msa = msa_command()
    commands = {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "msa --help": [*msa, "--help"],
        "msa data inspect FILE": [*msa, "data", "inspect", str(feature_file)],
    }
    print(f"{args.repeats} runs each, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| command | median (s) | min (s) | heavy libraries imported |")
    print("|---|---|---|---|")
    for label, command in commands.items():
        times = timed(command, args.repeats, env)
        heavy = [] if label.startswith("python") else heavy_imports(command, env)
        print(
            f"| `{label}` | {statistics.median(times):.2f} | {min(times):.2f} | {', '.join(heavy) or 'none'} |",
            flush=True,
        )
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
