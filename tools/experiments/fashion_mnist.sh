#!/usr/bin/env bash
# The Fashion-MNIST experiment, one resumable command:
#
#   bash tools/misc/prepare_fashion_mnist.sh      # once: data/fashion_mnist/
#   bash tools/experiments/fashion_mnist.sh [WORK_ROOT]   # default work_dirs/fashion_mnist
#
# 1. trains plain, MRLA-B, MRLA-L and ELA ResNet-38 (configs/fashion_mnist/)
#    with seeds 0 1 2 through tools/train.py, as any user run, and tests each
#    final checkpoint on the test split with tools/test.py;
# 2. checks with tools/analysis/rethreshold.py --check that the offline
#    re-threshold reproduces the masks the hook applied in every ELA run;
# 3. the Table 4 mask-stability ablation: seeds 3 and 4 are trained through
#    the first window only (the ELA runs of seeds 0-2 hold the same first
#    window), and summarize_fashion_mnist.py applies EBQM, the raw threshold
#    and the fixed count to each seed's first-window divergences offline;
# 4. writes docs/results/fashion_mnist.md, docs/results/fashion_mnist/*.json
#    (one per run) and docs/results/fashion_mnist.png.
# A run whose train.done / test.json exists is skipped; an interrupted run
# resumes from its last checkpoint (--resume). Rerun the command after an
# interruption; delete WORK_ROOT/<run> to redo one run.
#
# Schedule (configs/_base_/fashion_mnist_ela_resnet.py, where the choice is
# explained): ResNet-38, 12 epochs of the first 2,560 training images; the
# whole experiment took 66 min on the 2-core CPU, which it had to itself.
#
# Environment:
#   FASHION_MNIST_SMOKE=1  tiny version for tests: 64 training images,
#                          batch 16, results under WORK_ROOT/results
#   FASHION_MNIST_DATA     data_root (default data/fashion_mnist)
#   METHODS, SEEDS, ABLATION_SEEDS   override the runs (space-separated)
#   RESULTS_DIR            where the report goes (default docs/results)
#   EXPERIMENT             the configs (configs/EXPERIMENT/) and the report's
#                          name (default fashion_mnist; fashion_mnist_full is
#                          the full training set, see fashion_mnist_full.sh)
#   SAMPLES                the sample count each split must hold (default:
#                          train=2560 val=10000 test=10000, or the smoke's)
#   PARALLEL=1             train (then test) every run at once, one process
#                          each (for a GPU; timings then share the machine)
#   TRAIN_TIMEOUT          seconds after which a training run is stopped (it
#                          resumes from its last checkpoint when rerun)
#   PYTHON                 interpreter (default .venv/bin/python if present)
#   OMP_NUM_THREADS        torch threads per run (default: all cores; 1 in
#                          the smoke version). On a machine other jobs share,
#                          2 threads on 2 cores were 10x slower than 1 here
#                          (OpenMP threads wait for each other's time slice).
set -euo pipefail

HERE=$(cd "$(dirname "$0")/../.." && pwd)
cd "$HERE"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
SMOKE=${FASHION_MNIST_SMOKE:-0}
ROOT=${1:-work_dirs/fashion_mnist}
DATA=${FASHION_MNIST_DATA:-data/fashion_mnist}
METHODS=${METHODS:-plain mrla_base mrla_light ela}
SEEDS=${SEEDS:-0 1 2}
ABLATION_SEEDS=${ABLATION_SEEDS-3 4}  # set and empty: none
if [ "$SMOKE" = 1 ]; then
    RESULTS_DIR=${RESULTS_DIR:-$ROOT/results}
else
    RESULTS_DIR=${RESULTS_DIR:-docs/results}
fi
EXPERIMENT=${EXPERIMENT:-fashion_mnist}
CONFIGS=configs/$EXPERIMENT
DEPTH=38
PARALLEL=${PARALLEL:-0}
if [ "$SMOKE" = 1 ]; then
    SAMPLES=${SAMPLES:-train=64 val=16 test=64}
else
    SAMPLES=${SAMPLES:-train=2560 val=10000 test=10000}
fi

die() {
    echo "error: $*" >&2
    exit 1
}

for m in $METHODS; do
    [ -f "$CONFIGS/resnet${DEPTH}_${m}_${EXPERIMENT}.py" ] || \
        die "METHODS: no config $CONFIGS/resnet${DEPTH}_${m}_${EXPERIMENT}.py (methods: plain mrla_base mrla_light ela)"
done
for s in $SEEDS $ABLATION_SEEDS; do
    [[ "$s" =~ ^[0-9]+$ ]] || die "SEEDS / ABLATION_SEEDS: '$s' is not a non-negative integer"
done

# Every run reads the same data_root; the smoke version shrinks the splits
# (64 training images, the last 16 for validation, 64 test images).
DATA_OPTS=(train_dataloader.dataset.data_root="$DATA"
           val_dataloader.dataset.data_root="$DATA"
           test_dataloader.dataset.data_root="$DATA")
if [ "$SMOKE" = 1 ]; then
    DATA_OPTS+=(train_dataloader.dataset.indices=64
                train_dataloader.batch_size=16
                val_dataloader.dataset.indices=-16
                test_dataloader.dataset.indices=64)
fi

CORES=$(env -u OMP_NUM_THREADS nproc)  # nproc itself obeys OMP_NUM_THREADS
if [ "$SMOKE" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CORES}
fi

mkdir -p "$ROOT"
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
echo "$(date -u +%FT%TZ) start (smoke=$SMOKE, OMP_NUM_THREADS=$OMP_NUM_THREADS, load average $load on $CORES cores)" \
    >> "$ROOT/progress.log"
if [ "$SMOKE" != 1 ] && awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    echo "warning: load average $load: other jobs share the machine, so the times and speed ratios will be noisy (and OMP_NUM_THREADS=1 may be faster)" >&2
fi

# Seconds since the epoch, with fractions.
now() { date +%s.%N; }
elapsed() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.3f\n", a - b }'; }

# logged LOG SECONDS_FILE CMD...: run CMD with its output appended to LOG,
# add its wall-clock seconds to SECONDS_FILE, and on failure show LOG's last
# lines; returns CMD's exit status.
logged() {
    local log=$1 seconds=$2 start rc
    shift 2
    start=$(now)
    set +e
    "$@" >> "$log" 2>&1
    rc=$?
    set -e
    elapsed "$start" >> "$seconds"
    [ $rc -eq 0 ] || tail -n 5 "$log" >&2
    return $rc
}

# train NAME CONFIG SEED: tools/train.py into ROOT/NAME, resumed if a
# checkpoint is there, skipped once finished.
train() {
    local name=$1 config=$2 seed=$3 wd=$ROOT/$1 resume=()
    if [ -f "$wd/train.done" ]; then
        echo "[$name] trained already"
        return
    fi
    mkdir -p "$wd"
    [ -f "$wd/last_checkpoint" ] && resume=(--resume)
    echo "[$name] training ${resume[*]:+${resume[*]} }(log: $wd/train.log)"
    # What the run starts with: commit, torch, CPU, threads, device.
    [ -f "$wd/provenance.json" ] || \
        "$PYTHON" -m mmela.utils.provenance "$wd/provenance.json" ||
        die "[$name] cannot record the run's provenance"
    logged "$wd/train.log" "$wd/train_seconds" \
        ${TRAIN_TIMEOUT:+timeout -k 10 "$TRAIN_TIMEOUT"} \
        "$PYTHON" tools/train.py "$config" --work-dir "$wd" "${resume[@]}" \
        --cfg-options randomness.seed="$seed" "${DATA_OPTS[@]}" ||
        die "[$name] tools/train.py failed (exit $?); see $wd/train.log, fix it and rerun this command to resume"
    echo "$seed" > "$wd/seed"
    touch "$wd/train.done"
    echo "$(date -u +%FT%TZ) trained $name" >> "$ROOT/progress.log"
}

# test NAME CONFIG: tools/test.py on the run's last checkpoint.
test_run() {
    local name=$1 config=$2 wd=$ROOT/$1 ckpt
    if [ -f "$wd/test.json" ]; then
        echo "[$name] tested already"
        return
    fi
    ckpt=$(cat "$wd/last_checkpoint")
    echo "[$name] testing $ckpt"
    logged "$wd/test.log" "$wd/test_seconds" \
        "$PYTHON" tools/test.py "$config" "$ckpt" --work-dir "$wd/test" \
        --out "$wd/.test.tmp.json" --out-item metrics \
        --cfg-options "${DATA_OPTS[@]}" ||
        die "[$name] tools/test.py failed (exit $?); see $wd/test.log"
    mv -f "$wd/.test.tmp.json" "$wd/test.json"
    echo "$(date -u +%FT%TZ) tested $name" >> "$ROOT/progress.log"
}

# check NAME: the offline re-threshold reproduces the hook's masks.
check_masks() {
    local wd=$ROOT/$1
    "$PYTHON" tools/analysis/rethreshold.py "$wd" --check \
        > "$wd/rethreshold_check.txt" 2>&1 || {
        cat "$wd/rethreshold_check.txt" >&2
        die "[$1] the offline re-threshold does not reproduce the hook's masks"
    }
}

# run METHOD SEED: train, test and (ELA) check one run.
run() {
    local config=$CONFIGS/resnet${DEPTH}_${1}_${EXPERIMENT}.py
    train "${1}_seed${2}" "$config" "$2"
    test_run "${1}_seed${2}" "$config"
    [ "$1" != ela ] || check_masks "${1}_seed${2}"
}

if [ "$PARALLEL" = 1 ]; then
    pids=()
    for seed in $SEEDS; do
        for m in $METHODS; do
            run "$m" "$seed" &
            pids+=($!)
        done
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ $failed = 0 ] || die "a run failed (see its error above); rerun this command to resume"
else
    for seed in $SEEDS; do
        for m in $METHODS; do run "$m" "$seed"; done
    done
fi

for seed in $ABLATION_SEEDS; do
    train "ela_window1_seed${seed}" \
        "$CONFIGS/resnet${DEPTH}_ela_window1_${EXPERIMENT}.py" "$seed"
    check_masks "ela_window1_seed${seed}"
done

ablation_runs=()
if [[ " $METHODS " == *" ela "* ]]; then
    for seed in $SEEDS; do ablation_runs+=("ela_seed${seed}"); done
fi
for seed in $ABLATION_SEEDS; do ablation_runs+=("ela_window1_seed${seed}"); done

"$PYTHON" tools/experiments/summarize_fashion_mnist.py "$ROOT" \
    --methods $METHODS --seeds $SEEDS --ablation-runs "${ablation_runs[@]}" \
    --out-dir "$RESULTS_DIR" --name "$EXPERIMENT" --depth "$DEPTH" \
    --samples $SAMPLES \
    $([ "$SMOKE" = 1 ] && echo --smoke)
echo "$(date -u +%FT%TZ) summarized into $RESULTS_DIR" >> "$ROOT/progress.log"
