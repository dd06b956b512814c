#!/usr/bin/env bash
# SKESL pretraining on several nodes without SLURM: run this once on every node (torchrun starts one process
# per GPU; Lightning reads RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from torchrun's environment):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash configs/cluster/torchrun_skesl_pretrain.sh /shared/skesl/shards
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash configs/cluster/torchrun_skesl_pretrain.sh /shared/skesl/shards
# Extra arguments after the shards folder go to `msa fit` (e.g. --config configs/skesl/pretrain_bert_base.yaml
# to replace the model config, --ckpt_path runs/<run>/checkpoints/last.ckpt to resume with the same node and GPU
# counts).
# Shards: every node reads the same `msa pretrain-data build --out` folder at the same path, either on a shared
# filesystem (chunk files memory-mapped in place) or as an identical copy on each node's local disk (copy it
# there first, e.g. rsync -a /shared/skesl/shards/ /tmp/skesl_shards/, and pass /tmp/skesl_shards). Each rank
# reads a disjoint share of the clips: every clip once per epoch across all ranks of all nodes.
set -euo pipefail
SHARDS=${1:?usage: torchrun_skesl_pretrain.sh SHARDS_DIR [msa fit overrides...]}
shift
test -f "$SHARDS/manifest.json" || { echo "no shards at $SHARDS: msa pretrain-data build ... --out $SHARDS" >&2; exit 2; }
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS=${GPUS_PER_NODE:-$(nvidia-smi -L | wc -l)}
[ -n "${VIRTUAL_ENV:-}" ] || source .venv/bin/activate   # an environment already active (module, conda) is kept
torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  -m msa_lightning.cli fit --config configs/skesl/pretrain_bert.yaml --config configs/skesl/trainer_gpu_bf16.yaml \
  --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS" --data.init_args.path "$SHARDS" "$@"
