#!/usr/bin/env bash
# Fashion-MNIST on the full training set, for one CUDA GPU: plain, MRLA-B,
# MRLA-L and ELA ResNet-38 (configs/fashion_mnist_full/), seeds 0 1 2, all
# twelve runs at once, each trained on the 50,000 training images that are
# not the validation split, validated and tested once; the report goes to
# docs/results/fashion_mnist_full.md and docs/results/fashion_mnist_full/.
# It is tools/experiments/fashion_mnist.sh with EXPERIMENT=fashion_mnist_full
# and PARALLEL=1, plus what a lent GPU machine needs:
#
#   bash tools/experiments/fashion_mnist_full.sh [--smoke] [--setup WHEELS]
#       [--data SRC] [--archive FILE] [WORK_ROOT]
#
#   --setup WHEELS  the folder of shared/gpu/fetch_wheels.sh (.whl): sets up
#                   mmengine, mmpretrain and mmcv's Python code in seconds
#                   (tools/misc/device_env.sh; no mmcv build is needed)
#   --data SRC      a folder with Fashion-MNIST's four files (.gz or not),
#                   e.g. the Debian package's, carried with the tree; they
#                   are unpacked into WORK_ROOT/data (default: the configs'
#                   data/fashion_mnist)
#   --archive FILE  pack the report and the runs' logs and JSON (no
#                   checkpoints) into FILE at the end, also after a failure
#   --smoke         every method, seed 0, on 64 training images, on the CPU
#                   (the test suite runs it)
#
# On the lent machine, from the project root, with .whl and
# data/fashion_mnist_gz carried (the four .gz files, 30 MB):
#   bash tools/experiments/fashion_mnist_full.sh --setup .whl \
#       --data data/fashion_mnist_gz --archive $OUT/fashion_mnist_full.tar.gz
#
# Device time, estimated for one H200 (about 7 minutes, within 8): six
# epochs of 391 iterations at batch 128. Eager, alone, the H200 ran CIFAR
# ResNet-20 / 56 steps (batch 128) in 7.0 / 15.7 ms plain and about 2x that
# with MRLA-B or MRLA-L (docs/benchmarks/README.md), so ResNet-38 about 11 ms
# plain and 23 ms with layer attention; its profile had the GPU busy about
# half of each step. Twelve processes share the GPU's time, so a round of one
# step each costs about 3 seeds x (6 + 13 + 12 + 10) ms = 125 ms of GPU
# time: 2,346 rounds take about 5 minutes, 6.5 with 30% for switching
# between the processes, plus about 30 s to start, validate and test (the
# CPU smoke run's fixed costs: start-up 15-20 s a process, 16 cores for 12).
# TRAIN_TIMEOUT (default 480 s here) stops a run that would overrun; it
# resumes from its last epoch's checkpoint when the command is rerun.
set -euo pipefail

cd "$(dirname "$0")/../.."
smoke=0 setup='' data='' archive='' root=''
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --setup) setup=$2; shift ;;
        --data) data=$2; shift ;;
        --archive) archive=$2; shift ;;
        -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
        -*) echo "error: fashion_mnist_full.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) root=$1 ;;
    esac
    shift
done
root=${root:-work_dirs/fashion_mnist_full}
mkdir -p "$root"

if [ -n "$setup" ]; then
    WHEELS=$setup source tools/misc/device_env.sh ||
        { echo "error: fashion_mnist_full.sh: cannot set up the wheels in $setup" >&2; exit 1; }
    export PYTHON=${PYTHON:-python3}
fi
if [ -n "$data" ]; then
    FASHION_MNIST_SRC=$data bash tools/misc/prepare_fashion_mnist.sh \
        --no-apt --no-download "$root/data"
    export FASHION_MNIST_DATA=$root/data
fi

pack() {
    [ -n "$archive" ] || return 0
    local results=${RESULTS_DIR:-docs/results}
    [ "$smoke" = 1 ] && results=${RESULTS_DIR:-$root/results}
    tar czf "$archive" --exclude='*.pth' --exclude=data \
        $(ls -d "$results"/fashion_mnist_full* 2>/dev/null) "$root" \
        2>/dev/null || true
}
trap pack EXIT

export EXPERIMENT=fashion_mnist_full PARALLEL=1 ABLATION_SEEDS=''
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the GPU computes; 12 processes
if [ "$smoke" = 1 ]; then
    export FASHION_MNIST_SMOKE=1 SEEDS=${SEEDS:-0}
else
    export SAMPLES=${SAMPLES:-train=50000 val=10000 test=10000}
    export TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-480}
fi
bash tools/experiments/fashion_mnist.sh "$root"
