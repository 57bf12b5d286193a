#!/usr/bin/env bash
# Obtains llama.cpp (the pinned tree; PARISKV_LLAMA=older the older one, see common.sh),
# applies patches/ and builds it with -DGGML_PARISKV=ON and -DGGML_RPC=ON (ggml-rpc-server) into
# $PARISKV_WORK/build-cpu, or with
# PARISKV_CUDA=1 also -DGGML_CUDA=ON into $PARISKV_WORK/build-cuda (for the older tree
# build-cpu-older, build-cuda-older). Re-running rebuilds only what changed.
#   ggml-integration/build.sh [target ...]     (default: the tools the README and tests use)
# Environment: LLAMA_CPP_DIR (use your checkout of the pinned commit), PARISKV_JOBS,
# PARISKV_CMAKE_ARGS (extra cmake arguments), PARISKV_DEV=1 (build the working tree as it
# is, for patch development; see regen.sh), PARISKV_CUDA=1 (the CUDA backend: nvcc and
# cuBLAS of a CUDA toolkit, found through CUDACXX, PATH or /usr/local/cuda; the pariskv
# library is then built with its CUDA kernels), PARISKV_CUDA_ARCHS (default 90-real;80-virtual:
# SASS for sm_90 and PTX that newer GPUs compile), PARISKV_SYSTEM_TOOLS=1 (cmake and ninja
# from PATH instead of the pinned venv, for machines without network).
source "$(dirname "$0")/common.sh"

if [ "${PARISKV_SYSTEM_TOOLS:-0}" = 1 ]; then
    command -v cmake >/dev/null && command -v ninja >/dev/null || die "PARISKV_SYSTEM_TOOLS=1 needs cmake and ninja on PATH"
else
    ensure_venv
fi
if [ "${PARISKV_DEV:-0}" = 1 ]; then
    log "PARISKV_DEV=1: building $LLAMA_TREE as it is"
else
    "$REPO_ROOT/ggml-integration/apply.sh"
fi

build_dir=$BUILD_CPU
cuda=()
if [ "${PARISKV_CUDA:-0}" = 1 ]; then
    build_dir=$BUILD_CUDA
    nvcc=${CUDACXX:-$(command -v nvcc || true)}
    [ -n "$nvcc" ] || [ ! -x /usr/local/cuda/bin/nvcc ] || nvcc=/usr/local/cuda/bin/nvcc
    [ -n "$nvcc" ] && [ -x "$nvcc" ] || die "PARISKV_CUDA=1 needs a CUDA toolkit (nvcc and cuBLAS): set CUDACXX or put nvcc on PATH"
    log "CUDA backend with $nvcc"
    cuda=(-DGGML_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" "-DCMAKE_CUDA_ARCHITECTURES=${PARISKV_CUDA_ARCHS:-90-real;80-virtual}")
fi
jobs=${PARISKV_JOBS:-$(nproc)}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(llama-cli llama-server llama-completion llama-bench llama-perplexity llama-batched-bench ggml-rpc-server)

# CPU features from this machine, passed explicitly: GGML_NATIVE=ON with GCC 12 dies with
# SIGILL in the AMX path on CPUs that report AMX (GCC 12 drops the stores that fill the
# tile config; upstream PR ggml-org/llama.cpp#26954).
isa=()
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
for f in avx avx2 fma f16c bmi2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni; do
    opt=$(echo "$f" | tr a-z A-Z)
    case "$f" in avx512_vnni) opt=AVX512_VNNI;; avx512_bf16) opt=AVX512_BF16;; avx_vnni) opt=AVX_VNNI;; avx512f) opt=AVX512;; esac
    if [[ " $flags " == *" $f "* ]]; then isa+=("-DGGML_$opt=ON"); else isa+=("-DGGML_$opt=OFF"); fi
done

log "configuring $build_dir"
cmake -S "$LLAMA_TREE" -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_PARISKV=ON -DGGML_PARISKV_DIR="$REPO_ROOT" "${cuda[@]}" -DGGML_RPC=ON \
    -DGGML_NATIVE=OFF "${isa[@]}" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    "${LLAMA_OFFLINE_ARGS[@]}" ${PARISKV_CMAKE_ARGS:-} >"$PARISKV_WORK/cmake-configure.log" 2>&1 \
    || { tail -30 "$PARISKV_WORK/cmake-configure.log"; die "cmake configure failed (log: $PARISKV_WORK/cmake-configure.log)"; }

log "building ${targets[*]} with $jobs jobs"
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"
log "built into $build_dir/bin"
