#!/usr/bin/env bash
# Stages the CUDA integration for a GPU machine without Rust or network (like the lent H200)
# in $PARISKV_WORK/device-carry/: the pariskv library built here with its CUDA kernels, the
# patched llama.cpp tree and the tiny test models. There, from the repository root, with
# build/device-carry carried along, ggml-integration/device-run.sh builds llama.cpp with
# -DGGML_CUDA=ON -DGGML_PARISKV=ON (system nvcc, cmake and ninja) and runs the checks, the
# benchmark and the passkey suite (see its header).
#
# PARISKV_STAGE_PREBUILT=1 builds llama.cpp's CUDA backend here instead (no GPU needed: the
# pinned CUDA wheels with cuBLAS, scripts/cuda-toolchain.sh; SASS for sm_90 only, the CPU
# backend without AVX-512 so that any x86-64 host with AVX2 runs it; about 25 minutes on two
# cores the first time, a relink after library changes) and stages its binaries
# (llama-bin.tar.xz, about 25 MB) with gguf-py in place of the tree and library: on the GPU
# machine `device-run.sh build` then unpacks them in seconds instead of compiling for 6-7
# minutes of device time.
source "$(dirname "$0")/common.sh"

"$REPO_ROOT/ggml-integration/apply.sh"
ensure_venv
prebuilt=${PARISKV_STAGE_PREBUILT:-0}
eval "$(PARISKV_CUDA_LLAMA=$prebuilt "$REPO_ROOT/scripts/cuda-toolchain.sh")"
log "building the pariskv library with feature cuda"
(cd "$REPO_ROOT" && cargo build --release --lib --no-default-features --features cuda --quiet)

out=$PARISKV_WORK/device-carry
rm -rf "$out" && mkdir -p "$out"
strip --strip-debug -o "$PARISKV_WORK/libpariskv-cuda.a" "$REPO_ROOT/target/release/libpariskv.a"
if [ "$prebuilt" = 1 ]; then
    cuda_lib=$PARISKV_CUDA_ROOT/lib
    PATH=$PARISKV_CUDA_ROOT/bin:$VENV/bin:$PATH PARISKV_CUDA=1 PARISKV_SYSTEM_TOOLS=1 CUDACXX=$NVCC \
        PARISKV_CUDA_ARCHS=90-real PARISKV_CMAKE_ARGS="-DGGML_PARISKV_LIB=$PARISKV_WORK/libpariskv-cuda.a \
        -DCUDAToolkit_ROOT=$PARISKV_CUDA_ROOT -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
        -DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$cuda_lib -DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath-link,$cuda_lib" \
        "$REPO_ROOT/ggml-integration/build.sh" ${PARISKV_BUILD_TARGETS:-test-backend-ops llama-server llama-cli \
        llama-completion llama-perplexity llama-batched-bench llama-bench}
    (cd "$BUILD_CUDA/bin" && tar -cJf "$out/llama-bin.tar.xz" .)
    tar -czf "$out/gguf-py.tar.gz" -C "$LLAMA_TREE" gguf-py
else
    mv "$PARISKV_WORK/libpariskv-cuda.a" "$out/libpariskv.a"
    # the patched tree, without the vocabularies and docs no target needs
    tree_git archive --format=tar.gz -o "$out/llama.tar.gz" HEAD -- . ':!models' ':!docs'
fi
# what was staged, for the device's logs
echo "$(git -C "$REPO_ROOT" rev-parse --short HEAD)$(git -C "$REPO_ROOT" diff --quiet HEAD || echo +changes)" > "$out/COMMIT"
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/make_tiny_model.py" "$out/tiny.gguf" >/dev/null
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/make_tiny_model.py" "$out/tiny-hd20.gguf" --head-dim 20 >/dev/null

du -sh "$out"/*
