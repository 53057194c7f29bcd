# Source this on the lent GPU machine (shared/gpu/README.md), from the
# project root, with the wheels of shared/gpu/fetch_wheels.sh in WHEELS:
#
#   WHEELS=.whl source tools/misc/device_env.sh
#
# It installs torch's OpenMMLab companions that need no compiled mmcv op
# (mmengine, mmpretrain, mmcv's Python code unpacked from its source) into
# /tmp/device_env in seconds, and puts them and the project on PYTHONPATH:
# enough for the layer-attention tests, the ResNet-50 and CIFAR benchmarks
# and mmpretrain training (Fashion-MNIST). mmdet's detectors need mmcv's
# CUDA ops: shared/gpu/device_setup.sh builds them (about 4 minutes).
#
# mmpretrain 1.2 imports its multimodal models whenever transformers >=
# 4.28 is installed, and they fail with transformers 5 (as on the lent
# machine): a shim folder, first on the path, declares transformers absent
# to mmpretrain's version check. DEVICE_ENV_SHIM names it, for callers that
# rebuild PYTHONPATH.
_wheels=$(cd "${WHEELS:-.whl}" && pwd) || return 1
DEVICE_ENV_SHIM=/tmp/device_env/shim
mkdir -p $DEVICE_ENV_SHIM/transformers-0.0.dist-info /tmp/device_env/mmcv-py
printf 'Metadata-Version: 2.1\nName: transformers\nVersion: 0.0\n' \
  > $DEVICE_ENV_SHIM/transformers-0.0.dist-info/METADATA
${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile \
  --no-cache-dir --upgrade --target /tmp/device_env/site \
  "$_wheels"/mmengine-*.whl "$_wheels"/addict-*.whl "$_wheels"/yapf-*.whl \
  "$_wheels"/termcolor-*.whl "$_wheels"/platformdirs-*.whl \
  "$_wheels"/mmpretrain-*.whl "$_wheels"/mat4py-*.whl \
  "$_wheels"/model_index-*.whl "$_wheels"/ordered_set-*.whl \
  "$_wheels"/importlib_metadata-*.whl || return 1
tar xzf "$_wheels"/mmcv-2.1.0.tar.gz -C /tmp/device_env/mmcv-py || return 1
export PYTHONPATH=$DEVICE_ENV_SHIM:$PWD:/tmp/device_env/mmcv-py/mmcv-2.1.0:/tmp/device_env/site
