#!/usr/bin/env bash
# Installs mmela and the pinned OpenMMLab stack into a virtual environment.
#
#   bash tools/install.sh [VENV]        (default: ./.venv; `make` calls this)
#
# Idempotent: every step checks what is already there, so a second run takes
# seconds. The one slow step, building mmcv 2.1.0 with its compiled ops
# (RoIAlign, NMS, ...), runs once per machine: its wheel is kept in
# $MMELA_WHEEL_DIR (default ~/.cache/mmela/wheels, one folder per Python,
# torch and CPU/CUDA), outside the clone, so a fresh clone (CI, a second
# checkout) installs it from there instead of building it again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}
wheel_cache=${MMELA_WHEEL_DIR:-$HOME/.cache/mmela/wheels}
base_python=${MMELA_BASE_PYTHON:-python3}  # makes the venv

# Pins. torch/torchvision lie on this machine's disk (pip takes them from
# there); the OpenMMLab versions are the last releases of each package.
TORCH="torch==2.14.1 torchvision==0.29.1"
MMCV_VERSION=2.1.0
STACK_PINNED="mmengine==0.10.7 mmdet==3.3.0 mmpretrain==1.2.0"
STACK_OTHERS="scipy pycocotools matplotlib pytest"
# Exporting and running exported models (setup.py's [deploy] extra).
DEPLOY_PINNED="onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2 openvino==2026.4.1"
# mmcv's setup.py needs pkg_resources, which setuptools removed in 81.
SETUPTOOLS="setuptools==80.9.0"

if [ ! -x "$venv/bin/python" ]; then
  echo "[install] creating $venv"
  "$base_python" -m venv "$venv"
fi
py="$venv/bin/python"
pip="$py -m pip --disable-pip-version-check"

# have NAME [VERSION]: NAME is installed (at VERSION if given).
have() { $py -c "import importlib.metadata as m, sys; v = m.version('$1'); sys.exit(bool('${2:-}') and v != '${2:-}')" 2>/dev/null; }

if ! have torch 2.14.1 || ! have torchvision 0.29.1 || ! have setuptools 80.9.0; then
  echo "[install] torch, torchvision, build tools"
  $pip install -q $TORCH "$SETUPTOOLS" wheel ninja
fi

if ! have mmcv "$MMCV_VERSION"; then
  # A wheel fits one Python, one torch and CPU or CUDA: keep them apart.
  wheel_dir=$wheel_cache/$($py -c "import sys, torch; print(f'cp{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__.split(\"+\")[0]}-' + ('cuda' if torch.cuda.is_available() else 'cpu'))")
  wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    # PyPI has mmcv 2.1.0 only as source. torch >= 2.14 headers need C++20
    # while mmcv's setup.py hard-codes -std=c++17: change that one flag and
    # build against the torch in this venv (hence --no-build-isolation).
    echo "[install] building mmcv $MMCV_VERSION with compiled ops (once per machine, ~7 min on 2 cores)"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    $pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$build" "mmcv==$MMCV_VERSION"
    tar xzf "$build/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
    sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
    grep -q -- '-std=c++20' "$build/mmcv-$MMCV_VERSION/setup.py" \
      || { echo "[install] mmcv's setup.py has no -std=c++17 to patch" >&2; exit 1; }
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      $pip wheel -q --no-deps --no-build-isolation -w "$build/dist" "$build/mmcv-$MMCV_VERSION"
    # Copy under a temporary name, then rename: an interrupted run never
    # leaves a wheel that looks complete.
    mkdir -p "$wheel_dir"
    built=$(ls "$build"/dist/mmcv-"$MMCV_VERSION"-*.whl)
    cp "$built" "$wheel_dir/.partial"
    wheel=$wheel_dir/$(basename "$built")
    mv "$wheel_dir/.partial" "$wheel"
  fi
  echo "[install] mmcv from $wheel"
  $pip install -q "$wheel"
fi

stack_ready=true
for spec in $STACK_PINNED; do have "${spec%%==*}" "${spec##*==}" || stack_ready=false; done
for name in $STACK_OTHERS; do have "$name" || stack_ready=false; done
if ! $stack_ready; then
  echo "[install] mmengine, mmdet, mmpretrain and friends"
  $pip install -q $STACK_PINNED $STACK_OTHERS
fi

deploy_ready=true
for spec in $DEPLOY_PINNED; do have "${spec%%==*}" "${spec##*==}" || deploy_ready=false; done
if ! $deploy_ready; then
  echo "[install] onnx, onnxruntime, onnxscript, openvino"
  $pip install -q $DEPLOY_PINNED
fi

# An editable install of *this* clone (another clone's would shadow it).
if ! (cd / && $py -c "import mmela, os, sys; sys.exit(os.path.dirname(os.path.dirname(os.path.realpath(mmela.__file__))) != os.path.realpath('$root'))") 2>/dev/null; then
  echo "[install] mmela (editable)"
  $pip install -q --no-deps --no-build-isolation -e "$root"
fi
echo "[install] ready: $venv"
