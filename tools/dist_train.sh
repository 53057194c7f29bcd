#!/usr/bin/env bash
# Distributed training, as mmdet's and mmpretrain's dist_train.sh:
#
#   tools/dist_train.sh CONFIG NUM_PROCESSES [train.py flags...]
#
# e.g. `tools/dist_train.sh configs/faster_rcnn_ela_r50_fpn_1x_coco.py 8`.
# One process per GPU with NCCL; on a machine without CUDA, tools/train.py
# switches to gloo and the processes share the CPUs. Multi-node: set NNODES,
# NODE_RANK, MASTER_ADDR and PORT (default 29500) on every node. Runs the
# `python` of the current environment (an activated venv), or $PYTHON.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG NUM_PROCESSES [train.py flags...]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
TOOLS=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$TOOLS/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
