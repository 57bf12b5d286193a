#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler from PyPI into build/cuda-venv (no system toolkit
# needed) and prints the NVCC to export for `cargo build --features cuda`:
#   eval "$(scripts/cuda-toolchain.sh)"
# With PARISKV_CUDA_LLAMA=1 it also makes the folder a toolkit that CMake can build llama.cpp's
# CUDA backend with on a machine without a GPU (stage-device.sh PARISKV_STAGE_PREBUILT=1): the
# cuBLAS wheel of the same release, the lib64 layout nvcc looks for, unversioned link names,
# and a link-time stand-in for the driver library (libcuda.so.1 is the GPU machine's own).
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
if [ "${PARISKV_CUDA_LLAMA:-0}" = 1 ]; then
    cublas="nvidia-cublas==13.0.2.14"
    root=$(dirname "$(dirname "$nvcc")")
    if [ "$(cat "$venv/.cublas" 2>/dev/null)" != "$cublas" ]; then
        echo "installing $cublas into $venv (headers and link libraries for llama.cpp's CUDA backend)" >&2
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "$cublas" >&2
        ln -sfn lib "$root/lib64"
        for l in cublas cublasLt cudart; do ln -sf "lib$l.so.13" "$root/lib/lib$l.so"; done
        # the driver entry points ggml-cuda links (VMM and errors); never loaded at run time
        mkdir -p "$root/lib/stubs"
        printf '#define S(n) int n(void) { return 999; }\nS(cuDeviceGet) S(cuDeviceGetAttribute) S(cuGetErrorString) S(cuMemAddressFree) S(cuMemAddressReserve) S(cuMemCreate) S(cuMemGetAllocationGranularity) S(cuMemMap) S(cuMemRelease) S(cuMemSetAccess) S(cuMemUnmap)\n' \
            | cc -shared -fPIC -x c -o "$root/lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 -
        echo "$cublas" > "$venv/.cublas"
    fi
    echo "export PARISKV_CUDA_ROOT=$root"
fi
"$nvcc" --version >&2
echo "export NVCC=$nvcc"
