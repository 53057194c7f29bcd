#!/usr/bin/env bash
# Installs mmela and the pinned OpenMMLab stack into a virtual environment.
#
#   bash tools/install.sh [VENV]        (default: ./.venv; `make` calls this)
#
# Idempotent: every step checks what is already there, so a second run takes
# seconds. The one slow step, building mmcv 2.1.0 with its compiled ops
# (RoIAlign, NMS, ...), runs once per machine: its wheel is kept in
# $MMELA_WHEEL_DIR (default ~/.cache/mmela/wheels), outside the clone, so a
# fresh clone (CI, a second checkout) installs it from there in seconds.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}
wheel_dir=${MMELA_WHEEL_DIR:-$HOME/.cache/mmela/wheels}
python=${PYTHON:-python3}

# Pins. torch/torchvision lie on this machine's disk (pip takes them from
# there); the OpenMMLab versions are the last releases of each package.
TORCH="torch==2.14.1 torchvision==0.29.1"
MMCV_VERSION=2.1.0
STACK="mmengine==0.10.7 mmdet==3.3.0 mmpretrain==1.2.0 scipy pycocotools matplotlib pytest"
# mmcv's setup.py needs pkg_resources, which setuptools removed in 81.
SETUPTOOLS="setuptools==80.9.0"

if [ ! -x "$venv/bin/python" ]; then
  echo "[install] creating $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip="$py -m pip --disable-pip-version-check"

have() { $py -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

if ! have torch 2.14.1 || ! have torchvision 0.29.1 || ! have setuptools 80.9.0; then
  echo "[install] torch, torchvision, build tools"
  $pip install -q $TORCH "$SETUPTOOLS" wheel ninja
fi

if ! have mmcv "$MMCV_VERSION"; then
  wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    # PyPI has mmcv 2.1.0 only as source. torch >= 2.14 headers need C++20
    # while mmcv's setup.py hard-codes -std=c++17: change that one flag and
    # build against the torch in this venv (hence --no-build-isolation).
    echo "[install] building mmcv $MMCV_VERSION with compiled ops (once per machine, ~6 min on 2 cores)"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    $pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$build" "mmcv==$MMCV_VERSION"
    tar xzf "$build/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
    sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
    mkdir -p "$wheel_dir"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      $pip wheel -q --no-deps --no-build-isolation -w "$build/dist" "$build/mmcv-$MMCV_VERSION"
    # Move into place only when complete, so an interrupted build leaves no wheel.
    mv "$build"/dist/mmcv-"$MMCV_VERSION"-*.whl "$wheel_dir"/
    wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)
  fi
  echo "[install] mmcv from $wheel"
  $pip install -q "$wheel"
fi

if ! have mmdet 3.3.0 || ! have mmpretrain 1.2.0 || ! have mmengine 0.10.7; then
  echo "[install] mmengine, mmdet, mmpretrain and friends"
  $pip install -q $STACK
fi

if ! $py -c "import importlib.metadata as m; m.version('mmela')" 2>/dev/null; then
  echo "[install] mmela (editable)"
  $pip install -q --no-deps --no-build-isolation -e "$root"
fi
echo "[install] ready: $venv"
