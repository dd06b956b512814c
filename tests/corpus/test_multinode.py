"""Multi-node SKESL pretraining on one machine: two ``torchrun --nnodes 2 --node_rank {0,1} --nproc_per_node 1
--master_addr 127.0.0.1`` launches of the shipped ``configs/cluster/torchrun_skesl_pretrain.sh`` (gloo, a tiny model
on the shards of :mod:`test_skesl_stream`). One launch pair where node 1 is killed (-9) at the start of epoch 1,
then one resuming both nodes from ``last.ckpt``; the checks share them:

* every clip is trained on exactly once per epoch across the nodes, in the order the sampler plans per rank;
* the kill of one node ends both launches soon (the gloo peer is gone; the strategy's ``timeout`` bounds a hang)
  with one ``msa: error:`` line, not a hang or a traceback from ``msa``;
* the resumed job continues exactly: epoch 1's clips per rank are the planned ones, its steps follow on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from conftest import REPO
from test_skesl_stream import TINY_MODEL, TRAIN_IDS, _dm, _epoch_ids, _records, write_shards

TESTS = Path(__file__).resolve().parent
SCRIPT = REPO / "configs" / "cluster" / "torchrun_skesl_pretrain.sh"
SEED = 666  # configs/skesl/pretrain_bert.yaml's seed_everything: the shuffle seed of the training order


class KillRankAt(L.Callback):
    """kill -9 the process of global rank ``rank`` at the start of training step ``step``."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _callback(module: str, cls: str, **init_args) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": f"{module}.{cls}", "init_args": init_args})


def _two_nodes(shards: Path, tmp: Path, extra: list[str], timeout: float = 300) -> list[dict]:
    """Both nodes' launches of the shipped script (started together, as two cluster nodes would be): for each, its
    exit status, output and the seconds it ran."""
    env = {
        **os.environ,
        "NNODES": "2",
        "GPUS_PER_NODE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "MSA_CACHE_DIR": str(tmp / "cache"),
    }
    args = [
        # the CPU and gloo in place of the GPU preset's devices and NCCL; a short collective timeout
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--trainer.strategy.init_args.process_group_backend=gloo",
        "--trainer.strategy.init_args.timeout=0:01:00",
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.num_workers=0",
        *TINY_MODEL,
        "--global_batch_size=8",  # 4 clips per node and step: 12 and 11 clips per rank, 3 steps an epoch
        "--data.init_args.batch_size=4",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp / 'runs'}",
        f"--checkpoint.dirpath={tmp / 'ckpt'}",
        _callback("test_skesl_stream", "RecordIds", folder=str(tmp / "ids")),
        *extra,
    ]
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            ["bash", str(SCRIPT), str(shards), *args],
            cwd=REPO,
            env={**env, "NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    nodes = []
    for proc in procs:
        output, _ = proc.communicate(timeout=timeout)
        nodes.append({"code": proc.returncode, "output": output, "seconds": time.monotonic() - start})
    return nodes


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("multinode")
    shards = write_shards(tmp / "shards")
    killed = _two_nodes(shards, tmp, [_callback("test_multinode", "KillRankAt", rank=1, step=4)])
    before = [_records(tmp / "ids", rank) for rank in (0, 1)]
    for rank in (0, 1):
        (tmp / "ids" / f"ids_rank{rank}.jsonl").unlink(missing_ok=True)
    resumed = _two_nodes(shards, tmp, [f"--ckpt_path={tmp / 'ckpt' / 'last.ckpt'}"])
    after = [_records(tmp / "ids", rank) for rank in (0, 1)]
    # the order each rank's sampler plans for epochs 0 and 1 (what an uninterrupted job trains on)
    plan = []
    for rank in (0, 1):
        loader = _dm(shards, 2, rank, batch_size=4, shuffle_seed=SEED).train_dataloader()
        plan.append([[i for b in loader for i in b.ids] for _ in range(2)])
    return {"killed": killed, "resumed": resumed, "before": before, "after": after, "plan": plan, "tmp": tmp}


@pytest.mark.slow
def test_kill_of_one_node_ends_both_with_a_clear_message(runs):
    node0, node1 = runs["killed"]
    assert node1["code"] != 0 and "SIGKILL" in node1["output"], node1["output"][-3000:]
    assert node0["code"] != 0, node0["output"][-3000:]
    assert node0["seconds"] < 60 + 120  # ended by the lost peer (at worst the 1-minute timeout), never a hang
    lines = [line for line in node0["output"].splitlines() if line.startswith("msa: error:")]
    assert len(lines) == 1, node0["output"][-3000:]
    assert "rank 0 of 2 lost another process of the job" in lines[0]
    assert f"resume with --ckpt_path {runs['tmp'] / 'ckpt' / 'last.ckpt'}" in lines[0]
    assert "[rank0]: Traceback" not in node0["output"]


@pytest.mark.slow
def test_every_clip_once_per_epoch_across_nodes_and_exact_resume(runs):
    assert all(node["code"] == 0 for node in runs["resumed"]), runs["resumed"][0]["output"][-3000:]
    before, after, plan = runs["before"], runs["after"], runs["plan"]
    for epoch, records in ((0, before), (1, after)):
        per_rank = [_epoch_ids(records[rank], epoch) for rank in (0, 1)]
        assert sorted(per_rank[0] + per_rank[1]) == TRAIN_IDS, epoch  # every clip once, across the nodes
        assert per_rank == [plan[0][epoch], plan[1][epoch]], epoch  # each rank: the planned clips, in order
    steps = [[r["step"] for r in records] for records in after]
    assert steps == [[4, 5, 6], [4, 5, 6]]  # the resumed job goes on from step 3's checkpoint
