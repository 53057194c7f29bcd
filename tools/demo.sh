#!/usr/bin/env bash
# The demo (`make demo`): Faster R-CNN with an ELA ResNet-18 backbone, trained
# from scratch on the synthetic shapes while ELAPruningHook prunes retrievals,
# then tested with the COCO bbox metric. About 6 minutes on 2 CPU cores.
#
#   bash tools/demo.sh [VENV]        (default: ./.venv; `make demo` calls this)
#
# The data is generated once (data/shapes_coco) and reused. Every run trains
# again from scratch into a fresh work dir ($DEMO_WORK_DIR, default
# work_dirs/demo: the previous run's is deleted), so what it prints is always
# this run's result. It ends with the COCO AP table, the final bbox_mAP and
# the pruning summary, and fails if bbox_mAP < 0.05 (nothing was learned).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}
python=$(cd "$venv" && pwd)/bin/python
cd "$root"

config=configs/demo/faster_rcnn_ela_r18_fpn_shapes_demo.py
data=data/shapes_coco
work_dir=${DEMO_WORK_DIR:-work_dirs/demo}
min_map=0.05
# One BLAS/OpenMP thread per process unless the caller says otherwise: on a
# 2-core machine that anything else also uses, two threads per process spin
# against each other and an iteration got ten times slower (10 s, not 0.7 s).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

SECONDS=0
echo "[demo] load: $(uptime | sed 's/.*load average/load average/')"
"$python" tools/misc/make_demo_data.py "$data"

# The work dir is deleted: refuse anything that is clearly not one.
case "$(realpath -m "$work_dir")" in
  / | "$(realpath -m "$HOME")" | "$root")
    echo "[demo] refusing to delete DEMO_WORK_DIR=$work_dir" >&2; exit 2 ;;
esac
rm -rf "$work_dir"
train_start=$SECONDS
echo "[demo] training $config into $work_dir"
"$python" tools/train.py "$config" --work-dir "$work_dir"
train_s=$((SECONDS - train_start))

checkpoint=$(cat "$work_dir/last_checkpoint")
echo "[demo] testing $checkpoint"
"$python" tools/test.py "$config" "$checkpoint" --work-dir "$work_dir/test" \
  2>&1 | tee "$work_dir/test.log"

"$python" - "$work_dir" "$min_map" "$train_s" "$SECONDS" <<'EOF'
import glob
import json
import os.path as osp
import sys

work_dir, min_map = sys.argv[1], float(sys.argv[2])
train_s, total_s = int(sys.argv[3]), int(sys.argv[4])

with open(osp.join(work_dir, 'test.log')) as f:
    # pycocotools' summary lines and mmdet's per-class table
    table = [line.rstrip() for line in f
             if line.startswith((' Average', '+', '|'))]
metrics_file = max(glob.glob(osp.join(work_dir, 'test', '*', '*.json')),
                   key=osp.getmtime)
with open(metrics_file) as f:
    bbox_map = json.load(f)['coco/bbox_mAP']
with open(osp.join(work_dir, 'ela_pruning.json')) as f:
    reports = json.load(f)

print('\n========== mmela demo summary ==========')
print('\n'.join(table))
print(f'\nbbox_mAP: {bbox_map:.3f}')
print('\nELA pruning (retrievals on / total after each window):')
for report in reports:
    first, last = report['window']
    pruned = [f"stage {p['stage']} block {p['block']}"
              for p in report['pairs'] if not p['kept']]
    print(f"  epochs {first}-{last}: {report['retrievals_on']} / "
          f"{report['retrievals_total']}; pruned here: "
          f"{', '.join(pruned) or 'none'}")
print(f'\nelapsed: {total_s // 60}m{total_s % 60:02d}s '
      f'(training {train_s // 60}m{train_s % 60:02d}s); '
      f'work dir: {work_dir}')
if bbox_map < min_map:
    sys.exit(f'bbox_mAP {bbox_map:.3f} < {min_map}: the detector did not '
             f'learn (see {work_dir})')
EOF
echo "[demo] load: $(uptime | sed 's/.*load average/load average/')"
