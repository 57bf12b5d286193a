#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler from PyPI into build/cuda-venv (no system toolkit
# needed) and prints the NVCC to export for `cargo build --features cuda`:
#   eval "$(scripts/cuda-toolchain.sh)"
# The versions are pinned together: an unpinned install mixes in parts of later releases
# whose PTX the 13.0 driver rejects.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/cuda-venv
pins="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85"
if [ ! -f "$venv/.pins" ] || [ "$(cat "$venv/.pins")" != "$pins" ]; then
    echo "installing the CUDA 13.0 toolchain into $venv: $pins" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check $pins >&2
    echo "$pins" > "$venv/.pins"
fi
nvcc=$(cd "$venv" && pwd)/$(cd "$venv" && ls lib/python3*/site-packages/nvidia/cu13/bin/nvcc)
"$nvcc" --version >&2
echo "export NVCC=$nvcc"
