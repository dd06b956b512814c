#!/usr/bin/env bash
# SKESL pretraining on several nodes with SLURM (one task per GPU; Lightning reads ranks and the master address
# from SLURM's environment):
#   sbatch configs/cluster/slurm_skesl_pretrain.sh /shared/skesl/shards [configs/skesl/pretrain_bert.yaml] [overrides...]
# Shards: every node must read the same `msa pretrain-data build --out` folder at the same path: a shared
# filesystem (NFS, Lustre, GPFS: the chunk files are memory-mapped in place, nothing is copied), or a copy on each
# node's local disk (uncomment the rsync below; it runs once per node before training). Each rank reads a disjoint
# share of the clips (every clip once per epoch across all ranks of all nodes).
# Resume a killed job with the same node and GPU counts: append --ckpt_path runs/<run>/checkpoints/last.ckpt
# (or the folder of the run); the loader continues mid-epoch where the checkpoint was written.
#SBATCH --job-name=skesl-pretrain
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --signal=USR1@120   # before the time limit: every rank saves hpc_ckpt_N.ckpt, the job is requeued and resumes
set -euo pipefail
SHARDS=${1:?usage: sbatch slurm_skesl_pretrain.sh SHARDS_DIR [CONFIG.yaml] [overrides...]}
CONFIG=${2:-configs/skesl/pretrain_bert.yaml}
shift $(( $# >= 2 ? 2 : 1 ))
test -f "$SHARDS/manifest.json" || { echo "no shards at $SHARDS: msa pretrain-data build ... --out $SHARDS" >&2; exit 2; }
[ -n "${VIRTUAL_ENV:-}" ] || source .venv/bin/activate   # an environment already active (module, conda) is kept
# node-local copy instead of a shared filesystem (same path on every node):
# LOCAL=/tmp/$USER/skesl_shards
# srun --ntasks-per-node=1 rsync -a --delete "$SHARDS/" "$LOCAL/" && SHARDS=$LOCAL
# clips per optimiser step: trainer_gpu_bf16.yaml's global_batch_size 32 whatever the GPU count (at most 8 per GPU,
# accumulation for the rest); more than 16 GPUs: --global_batch_size 64 (or more) after the config
srun msa fit --config "$CONFIG" --config configs/skesl/trainer_gpu_bf16.yaml \
  --trainer.num_nodes "$SLURM_JOB_NUM_NODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" \
  --data.init_args.path "$SHARDS" --data.init_args.num_workers "$(( SLURM_CPUS_PER_TASK - 2 ))" "$@"
