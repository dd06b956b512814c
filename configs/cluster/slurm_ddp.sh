#!/usr/bin/env bash
# Multi-node DDP on SLURM: `sbatch configs/cluster/slurm_ddp.sh configs/baselines/bert_lstm_mosei.yaml`
# One task per GPU; Lightning reads ranks and the master address from SLURM's environment.
#SBATCH --job-name=msa
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --signal=USR1@120   # before the time limit: every rank saves hpc_ckpt_N.ckpt, the job is requeued and resumes
set -euo pipefail
CONFIG=${1:?usage: sbatch slurm_ddp.sh CONFIG.yaml [overrides...]}
shift
[ -n "${VIRTUAL_ENV:-}" ] || source .venv/bin/activate   # an environment already active (module, conda) is kept
# The memory-mapped feature cache is built by local rank 0 of each node (prepare_data) while the
# other ranks wait; to build it ahead of time: msa data convert /data/MOSEI/unaligned_50.pkl --dataset mosei
srun msa fit --config "$CONFIG" --config configs/trainer/ddp.yaml \
  --trainer.num_nodes "$SLURM_JOB_NUM_NODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" "$@"
