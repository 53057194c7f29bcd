#!/usr/bin/env bash
# The choices behind the Fashion-MNIST experiment, made on the validation
# split only (the test split is never read here), one resumable command:
#
#   bash tools/experiments/fashion_mnist_tune.sh [WORK_ROOT]   # default work_dirs/fashion_mnist_tune
#
# 1. lr grid: every method at lr 0.025, 0.05 and 0.1 (batch 32, seed 0),
#    the same grid for each; the configs keep plain's 0.05 unless a
#    method's best is better by more than the seed-to-seed spread;
# 2. MRLA-B's deficit: MRLA-B at its best lr with the layer-attention norm
#    starting at weight 0 instead of 1, and without the ReLU after its norm
#    (tools/experiments/fashion_mnist_variants.py);
# 3. windows, fixed before looking at any result: ELA at the configs' lr
#    0.05 with its first window moved to epoch 4 (windows 4 and 7), and with
#    one window only (epoch 7), seeds 0 1 2, against the configs' windows 1,
#    4 and 7 (whose seed-to-seed spread is the yardstick of the lr rule).
# Then tools/experiments/summarize_fashion_mnist_tune.py writes
# docs/results/fashion_mnist_tune.md and docs/results/fashion_mnist_tune.json.
#
# Environment (as fashion_mnist.sh): FASHION_MNIST_DATA, PYTHON,
# OMP_NUM_THREADS, FASHION_MNIST_SMOKE=1 (tiny, for tests), RESULTS_DIR,
# PHASES (default "grid variants windows"), JOBS (runs at once, default 1;
# the results are validation accuracies, so runs may share the machine).
set -euo pipefail

HERE=$(cd "$(dirname "$0")/../.." && pwd)
cd "$HERE"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
SMOKE=${FASHION_MNIST_SMOKE:-0}
ROOT=${1:-work_dirs/fashion_mnist_tune}
DATA=${FASHION_MNIST_DATA:-data/fashion_mnist}
PHASES=${PHASES:-grid variants windows}
JOBS=${JOBS:-1}
LRS=${LRS:-0.025 0.05 0.1}
METHODS=${METHODS:-plain mrla_base mrla_light ela}
WINDOW_SEEDS=${WINDOW_SEEDS:-0 1 2}
if [ "$SMOKE" = 1 ]; then
    RESULTS_DIR=${RESULTS_DIR:-$ROOT/results}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    RESULTS_DIR=${RESULTS_DIR:-docs/results}
fi
CONFIGS=configs/fashion_mnist

die() {
    echo "error: $*" >&2
    exit 1
}

DATA_OPTS=(train_dataloader.dataset.data_root="$DATA"
           val_dataloader.dataset.data_root="$DATA")
if [ "$SMOKE" = 1 ]; then
    DATA_OPTS+=(train_dataloader.dataset.indices=64
                train_dataloader.batch_size=16
                val_dataloader.dataset.indices=-16)
fi
mkdir -p "$ROOT"
echo "$(date -u +%FT%TZ) start (smoke=$SMOKE, jobs=$JOBS)" >> "$ROOT/progress.log"

# train NAME METHOD|CONFIG SEED [--cfg-options ...]: tools/train.py into
# ROOT/NAME, validated at the end, resumed if interrupted, skipped once done.
train() {
    local name=$1 config=$2 seed=$3 wd=$ROOT/$1 resume=()
    shift 3
    [ -f "$config" ] || config=$CONFIGS/resnet38_${config}_fashion_mnist.py
    if [ -f "$wd/train.done" ]; then
        echo "[$name] trained already"
        return
    fi
    mkdir -p "$wd"
    [ -f "$wd/last_checkpoint" ] && resume=(--resume)
    [ -f "$wd/provenance.json" ] || \
        "$PYTHON" -m mmela.utils.provenance "$wd/provenance.json"
    echo "[$name] training ${resume[*]:+${resume[*]} }(log: $wd/train.log)"
    PYTHONPATH=tools/experiments${PYTHONPATH:+:$PYTHONPATH} \
        "$PYTHON" tools/train.py "$config" \
        --work-dir "$wd" "${resume[@]}" --cfg-options randomness.seed="$seed" \
        "${DATA_OPTS[@]}" "$@" >> "$wd/train.log" 2>&1 || {
        tail -n 5 "$wd/train.log" >&2
        die "[$name] tools/train.py failed; see $wd/train.log and rerun to resume"
    }
    echo "$seed" > "$wd/seed"
    touch "$wd/train.done"
}

# Up to JOBS runs at once.
running=0
spawn() {
    if [ "$JOBS" -le 1 ]; then
        "$@"
        return
    fi
    "$@" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || die "a run failed"
        running=$((running - 1))
    fi
}
drain() {
    while [ "$running" -gt 0 ]; do
        wait -n || die "a run failed"
        running=$((running - 1))
    done
}

# variant NAME SETTINGS: a config in ROOT/configs: MRLA-B's with
# LayerAttentionVariant(SETTINGS) (tools/experiments/fashion_mnist_variants.py).
variant() {
    mkdir -p "$ROOT/configs"
    cat > "$ROOT/configs/$1.py" <<END
_base_ = '$HERE/$CONFIGS/resnet38_mrla_base_fashion_mnist.py'
custom_imports = dict(imports=['mmela', 'fashion_mnist_variants'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='SplitSizeHook'),
                dict(type='LayerAttentionVariant', $2)]
END
    echo "$ROOT/configs/$1.py"
}

if [[ " $PHASES " == *" grid "* ]]; then
    for m in $METHODS; do
        for lr in $LRS; do
            spawn train "${m}_lr${lr}" "$m" 0 optim_wrapper.optimizer.lr="$lr"
        done
    done
    drain
fi

best_lr() {  # the grid's best validation lr of method $1
    "$PYTHON" tools/experiments/summarize_fashion_mnist_tune.py "$ROOT" \
        --best-lr "$1" --lrs $LRS
}

if [[ " $PHASES " == *" variants "* ]]; then
    lr=$(best_lr mrla_base)
    spawn train "mrla_base_norm0_lr${lr}" "$(variant norm0 norm_init=0.0)" 0 \
        optim_wrapper.optimizer.lr="$lr"
    spawn train "mrla_base_norelu_lr${lr}" "$(variant norelu relu=False)" 0 \
        optim_wrapper.optimizer.lr="$lr"
    drain
fi

if [[ " $PHASES " == *" windows "* ]]; then
    lr=0.05  # the configs' lr, fixed in advance like the settings
    for seed in $WINDOW_SEEDS; do
        for setting in "1,4,7" "4,7" "7"; do
            spawn train "ela_windows${setting//,/-}_lr${lr}_seed${seed}" ela "$seed" \
                optim_wrapper.optimizer.lr="$lr" \
                "custom_hooks.0.windows=[${setting}]"
        done
    done
    drain
fi

"$PYTHON" tools/experiments/summarize_fashion_mnist_tune.py "$ROOT" \
    --lrs $LRS --methods $METHODS --window-seeds $WINDOW_SEEDS \
    --out-dir "$RESULTS_DIR" $([ "$SMOKE" = 1 ] && echo --smoke)
echo "$(date -u +%FT%TZ) summarized into $RESULTS_DIR" >> "$ROOT/progress.log"
