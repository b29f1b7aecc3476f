#!/usr/bin/env bash
# Builds a second ComfyUI test host from a source tarball, beside the pinned one and outside the repo:
# $CACHE/hosts/<name>/comfyui and $CACHE/hosts/<name>/venv (CPU torch, the host's requirements, this pack's).
# Usage: setup_second_host.sh TARBALL   (e.g. ../shared/hosts/comfyui-0.33.0-783545f6.tar.gz)
# Prints the host's ComfyUI folder on the last line. Idempotent: finished steps leave a stamp keyed by the
# tarball's name and the requirement files, as scripts/setup_host.sh does.
set -euo pipefail
PACK_ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARBALL=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
CACHE=${FACESNAP_CACHE:-$HOME/.cache/comfyui-facesnap}
NAME=$(basename "$TARBALL" .tar.gz)
HOST=$CACHE/hosts/$NAME
VENV=$HOST/venv
PY=$VENV/bin/python
mkdir -p "$HOST"

stamp() { [ -f "$HOST/.done-$1" ]; }
mark() { touch "$HOST/.done-$1"; }

if ! stamp comfyui; then
  echo "[setup $NAME] unpacking $TARBALL" >&2
  rm -rf "$HOST/unpack" "$HOST/comfyui"
  mkdir -p "$HOST/unpack"
  tar -xzf "$TARBALL" -C "$HOST/unpack"
  mv "$HOST/unpack/comfyui" "$HOST/comfyui"
  rm -rf "$HOST/unpack" "$HOST/comfyui/extra_model_paths.yaml"
  mark comfyui
fi

if ! stamp venv; then
  echo "[setup $NAME] creating venv with CPU torch" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip >&2
  printf 'torch==2.13.0\ntorchvision==0.28.0\n' > "$HOST/constraints.txt"
  "$PY" -m pip install -q -c "$HOST/constraints.txt" torch==2.13.0 torchvision==0.28.0 >&2
  SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # The torchvision shim (why: comfy_glue/boot.py) for ComfyUI's own main.py in this CPU-only venv.
  echo "import sys, types; sys.modules.setdefault('torchvision._meta_registrations', types.ModuleType('torchvision._meta_registrations'))" \
    > "$SP/zz_torchvision_cpu_shim.pth"
  # This ComfyUI imports torchaudio at module level, and no registry build loads beside CPU torch 2.13: a stand-in
  # package that imports and fails only when called (audio nodes are then unusable; the pack needs none).
  "$PY" "$PACK_ROOT/scripts/torchaudio_standin.py" "$SP" >&2
  mark venv
fi

if ! stamp comfy-reqs; then
  echo "[setup $NAME] installing ComfyUI requirements" >&2
  grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ].*)?$' "$HOST/comfyui/requirements.txt" > "$HOST/comfy-req.txt"
  "$PY" -m pip install -q -c "$HOST/constraints.txt" -r "$HOST/comfy-req.txt" requests >&2
  mark comfy-reqs
fi

REQ_HASH=$(cat "$PACK_ROOT/requirements.txt" "$PACK_ROOT/requirements-dev.txt" | sha1sum | cut -c1-12)
if ! stamp "pack-reqs-$REQ_HASH"; then
  echo "[setup $NAME] installing the pack's requirements" >&2
  "$PY" -m pip install -q -c "$HOST/constraints.txt" -r "$PACK_ROOT/requirements.txt" \
    -r "$PACK_ROOT/requirements-dev.txt" >&2
  mark "pack-reqs-$REQ_HASH"
fi

"$PY" -c "import torch, torchaudio; print('[setup $NAME] torch', torch.__version__, '(torchaudio stand-in)')" >&2
echo "$HOST"
