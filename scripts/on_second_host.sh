#!/usr/bin/env bash
# Runs Python on the second test host, built on first use by scripts/setup_second_host.sh:
#   scripts/on_second_host.sh TARBALL ARGS...  ->  <its venv>/bin/python ARGS...  with COMFYUI_PATH set to its ComfyUI.
set -euo pipefail
HOST=$(bash "$(dirname "$0")/setup_second_host.sh" "$1" | tail -1)
shift
echo "[second host] $HOST/comfyui" >&2
COMFYUI_PATH=$HOST/comfyui exec "$HOST/venv/bin/python" "$@"
