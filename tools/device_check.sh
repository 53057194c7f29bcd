#!/usr/bin/env bash
# Check layer attention on a CUDA GPU end to end, in one command that fits a
# short GPU lease (about 9 minutes with mmcv's CUDA build; see
# docs/benchmarks/README.md for how the stages were sized).
#
#   bash tools/device_check.sh [--smoke] [--out DIR] [--archive FILE]
#                              [--budget SECONDS] [--setup FILE]
#
# Stages, in order, each logged to DIR/logs/<stage>.log and recorded in
# DIR/stages.tsv; on a lent machine the first four run while mmcv's CUDA
# ops build (they need no compiled op):
#   tests          the CUDA twins of the oracle and published-MRLA tests, for
#                  both implementations ('fused', 'reference'), fp64 and AMP
#   bench-r50-*    training-step times of plain, MRLA-B, MRLA-L, ELA (hook
#                  masks) and ELA fully pruned, one row per implementation:
#                  ResNet-50 224 batch 64 channels-last, fp32 and AMP
#   compile-cifar  CIFAR ResNet-56, plain and MRLA-L, torch.compile'd
#   train-fp32     tools/train.py configs/faster_rcnn_ela_r50_fpn_1x_coco.py,
#   train-amp      30 iterations (3 epochs of 10, batch 2) on generated
#                  800x1333 images, pruning windows at epochs 1 and 2 (AMP:
#                  not in --smoke, mmengine's AMP needs a GPU)
#   bench-frcnn    the same five methods: the Faster R-CNN R50-FPN step at
#   bench-cifar    800x1333 batch 2, and the CIFAR suite
#   compile-r50    ResNet-50, plain and MRLA-L, compiled (if time is left;
#                  not in --smoke)
#   summary        DIR/summary.json; its last line says whether 'fused'
#                  passed on this device and whether it was faster
# A stage that would not fit in what is left of --budget (default 540 s) is
# skipped and says so. Results go to DIR (default docs/benchmarks/<gpu>/,
# e.g. docs/benchmarks/h200/); every JSON records the commit. Outside a git
# checkout pass it: MMELA_COMMIT=<sha> MMELA_TREE_DIRTY=0|1.
#
# --setup FILE   on the lent GPU machine: shared/gpu/device_setup.sh (carried
#                in .whl/). mmcv's CUDA build runs in the background while
#                the stages that need no compiled mmcv op run.
# --archive FILE after every stage, pack DIR into FILE (what a lease's $OUT
#                can bring back: few files).
# --only A,B     run only these stages (a second lease after a partial run).
# --smoke        the same stages on the CPU with tiny sizes (about 3 minutes
#                on 2 cores); the test suite runs it.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
smoke=0 out='' archive='' budget=540 setup='' only=''
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out=$2; shift ;;
    --archive) archive=$2; shift ;;
    --budget) budget=$2; shift ;;
    --setup) setup=$2; shift ;;
    --only) only=",$2,"; shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "error: device_check.sh: unknown argument $1 (see --help)" >&2
       exit 2 ;;
  esac
  shift
done
case "$budget" in
  ''|*[!0-9]*) echo "error: device_check.sh: --budget takes whole seconds, got '$budget'" >&2; exit 2 ;;
esac
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
SECONDS=0
log() { echo "[device_check ${SECONDS}s] $*"; }

# The stack: on the lent machine, what needs no compiled mmcv op (the
# tests, the ResNet-50 and CIFAR suites) runs on tools/misc/device_env.sh's
# stack while mmcv's CUDA ops build for mmdet's detector; elsewhere the
# current environment has everything.
setup_pid=''
if [ -n "$setup" ]; then
  WHEELS=$(dirname "$setup") source tools/misc/device_env.sh \
    || { echo "error: device_check.sh: cannot set up the wheels in $(dirname "$setup")" >&2; exit 1; }
  mkdir -p /tmp/device_check
  (source "$setup" > /tmp/device_check/setup.log 2>&1; echo $? > /tmp/device_check/setup.rc) &
  setup_pid=$!
fi
if [ $smoke = 1 ]; then
  device=cpu
  out=${out:-$(mktemp -d /tmp/device_check.XXXXXX)}
else
  device=cuda
  gpu=$($python -c "import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name())" 2>/dev/null) \
    || { echo "error: device_check.sh: no CUDA device here; use --smoke on a CPU" >&2; exit 2; }
  slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | sed 's/nvidia//; s/[^a-z0-9]\+/-/g; s/^-//; s/-$//')
  out=${out:-docs/benchmarks/$slug}
fi
mkdir -p "$out/logs"
: > "$out/stages.tsv"
log "device $device, results in $out, budget ${budget}s"

pack() {
  [ -z "$archive" ] && return 0
  tar czf "$archive.partial" -C "$out" . && mv "$archive.partial" "$archive"
}

# stage NAME SECONDS_NEEDED SECONDS_AT_MOST COMMAND...: run unless it would
# not fit; its Python processes are stopped after SECONDS_AT_MOST or when the
# budget ends ($limit, which `run` applies).
limit=0
run() { timeout -k 5 "$limit" "$@"; }
stage() {
  local name=$1 need=$2 most=$3 start=$SECONDS rc
  shift 3
  limit=$((budget - SECONDS < most ? budget - SECONDS : most))
  if [ -n "$only" ] && [[ "$only" != *",$name,"* ]]; then
    printf '%s\tskipped (--only)\t0\n' "$name" >> "$out/stages.tsv"
    return 0
  fi
  if [ $((budget - SECONDS)) -lt "$need" ]; then
    log "$name: skipped, needs ~${need}s and $((budget - SECONDS))s are left"
    printf '%s\tskipped (budget)\t0\n' "$name" >> "$out/stages.tsv"
    return 0
  fi
  log "$name: start"
  "$@" > "$out/logs/$name.log" 2>&1
  rc=$?
  if [ $rc = 0 ]; then status=ok; else status="failed (exit $rc)"; fi
  log "$name: $status after $((SECONDS - start))s; $(tail -n 1 "$out/logs/$name.log")"
  printf '%s\t%s\t%s\n' "$name" "$status" $((SECONDS - start)) >> "$out/stages.tsv"
  pack
  return 0
}

bench() {  # bench NAME ARGS...: benchmark_speed.py into $out/NAME
  local name=$1
  shift
  run $python tools/analysis/benchmark_speed.py --device $device \
    --out-dir "$out/$name" "$@"
}

# ------------------------------------------------------------ the sizes
if [ $smoke = 1 ]; then
  tests_k='implementations_equal_each_other_on_a_backbone or equals_the_published_mrla_light'
  steps=(--steps 1 --warmup 1 --no-op-count)
  r50=(--suite r50-224 --batch-size 2 --image-size 64 64)
  frcnn=(--suite faster-rcnn --batch-size 1 --image-size 96 160)
  cifar=(--suite cifar --depths 11 20 --batch-size 4)
  cifar_compiled=(--suite cifar --depths 11 --batch-size 4)
  amp=bf16
  data_size=(160 256) data_num=2 batch=1 scale='(256,160)'
else
  tests_k='cuda'
  steps=(--steps 15 --warmup 5 --no-op-count)
  r50=(--suite r50-224 --batch-size 64 --channels-last)
  frcnn=(--suite faster-rcnn)
  cifar=(--suite cifar --depths 20 56 110)
  # CUDA graphs: the host's load (mmcv building beside it) matters little.
  cifar_compiled=(--suite cifar --depths 56 --compile-mode reduce-overhead)
  amp=fp16
  data_size=(800 1333) data_num=20 batch=2 scale='(1333,800)'
fi
impls=(--impls fused reference)

# ------------------------------------------ no compiled mmcv op needed
stage tests 60 240 run $python -m pytest -q -p no:cacheprovider \
  tests/reference/test_layer_attention_oracle.py tests/reference/test_published_mrla.py \
  -k "$tests_k" --junitxml "$out/tests.xml"
stage bench-r50-fp32 45 120 bench r50-fp32 "${r50[@]}" "${impls[@]}" "${steps[@]}"
stage bench-r50-amp 45 120 bench r50-amp "${r50[@]}" --amp $amp "${impls[@]}" "${steps[@]}"
stage compile-cifar 120 200 bench cifar-compiled "${cifar_compiled[@]}" \
  --methods resnet mrla-l --compile "${steps[@]}"

# ------------------------------------------------- the whole stack
if [ -n "$setup_pid" ]; then
  log "waiting for mmcv's build"
  wait "$setup_pid"
  if [ "$(cat /tmp/device_check/setup.rc 2>/dev/null)" != 0 ]; then
    cp /tmp/device_check/setup.log "$out/logs/setup.log"
    log "error: the stack's setup failed (see $out/logs/setup.log)"
    printf 'setup\tfailed\t%s\n' $SECONDS >> "$out/stages.tsv"
    pack
    $python tools/misc/device_check.py summary "$out" --device $device
    exit 1
  fi
  source "$setup" > /dev/null  # the environment; the build is done
  export PYTHONPATH=$DEVICE_ENV_SHIM:$PYTHONPATH
  log "stack ready"
fi

train() {  # train NAME [--amp]: 30 iterations of the COCO config
  local name=$1 data=/tmp/device_check/coco-$smoke
  shift
  [ -f "$data/annotations/train.json" ] || \
    $python tools/misc/device_check.py coco-data "$data" --num $data_num \
      --size "${data_size[@]}" || return 1
  local work="$out/train/$name"
  rm -rf "$work"
  run $python tools/train.py configs/faster_rcnn_ela_r50_fpn_1x_coco.py \
    --work-dir "$work" --no-validate "$@" --cfg-options \
    model.backbone.init_cfg=None \
    train_dataloader.dataset.data_root="$data/" \
    train_dataloader.dataset.ann_file=annotations/train.json \
    train_dataloader.dataset.data_prefix.img=images/ \
    train_dataloader.dataset.pipeline.2.scale="$scale" \
    train_dataloader.batch_size=$batch train_dataloader.num_workers=2 \
    train_cfg.max_epochs=3 "custom_hooks.0.windows=[1,2]" \
    default_hooks.logger.interval=5 default_hooks.checkpoint=None
  local rc=$?
  echo $rc > "$work/exit_status"
  grep -h "implementation\|retrievals on" "$work"/*/*.log | tail -n 3
  return $rc
}
stage train-fp32 45 120 train fp32
if [ $smoke = 1 ]; then
  log "train-amp: skipped, mmengine's AmpOptimWrapper needs a GPU"
  printf 'train-amp\tskipped (CPU)\t0\n' >> "$out/stages.tsv"
else
  stage train-amp 45 120 train amp --amp
fi

stage bench-frcnn 60 150 bench faster-rcnn "${frcnn[@]}" "${impls[@]}" "${steps[@]}"
stage bench-cifar 60 150 bench cifar "${cifar[@]}" "${impls[@]}" "${steps[@]}"
if [ $smoke = 1 ]; then  # compile-cifar runs the compile path already
  log "compile-r50: skipped in --smoke (over a minute of compiling on a CPU)"
  printf 'compile-r50\tskipped (smoke)\t0\n' >> "$out/stages.tsv"
else
  stage compile-r50 150 300 bench r50-compiled "${r50[@]}" \
    --methods resnet mrla-l --compile "${steps[@]}"
fi

$python tools/misc/device_check.py summary "$out" --device $device \
  > "$out/logs/summary.log" 2>&1
pack
cat "$out/logs/summary.log"
# A finding (fused failing on this device) is in the summary; a stage that
# broke is a failure of the check.
! grep -q "failed" "$out/stages.tsv"
