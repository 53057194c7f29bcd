#!/usr/bin/env bash
# Distributed testing, as mmdet's and mmpretrain's dist_test.sh:
#
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py flags...]
#
# NCCL on GPUs, gloo without CUDA (tools/test.py picks it). Multi-node: set
# NNODES, NODE_RANK, MASTER_ADDR and PORT (default 29500) on every node. Runs
# the `python` of the current environment (an activated venv), or $PYTHON.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT NUM_PROCESSES [test.py flags...]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
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
    "$TOOLS/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
