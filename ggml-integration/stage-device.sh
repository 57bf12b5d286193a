#!/usr/bin/env bash
# Stages the CUDA tests of the integration for a GPU machine without Rust or network (like
# the lent H200) in $PARISKV_WORK/device-carry/: the pariskv library built here with its
# CUDA kernels, the patched llama.cpp tree, the tiny test models and run-cuda.sh. There, from
# the repository root:
#   build/device-carry/run-cuda.sh OUTDIR
# builds llama.cpp with -DGGML_CUDA=ON -DGGML_PARISKV=ON (system nvcc, cmake and ninja),
# runs test-backend-ops for the ParisKV ops (CUDA against the CPU backend) and the
# end-to-end tests with every layer on the GPU (-ngl 99), logs into OUTDIR.
source "$(dirname "$0")/common.sh"

"$REPO_ROOT/ggml-integration/apply.sh"
ensure_venv
eval "$("$REPO_ROOT/scripts/cuda-toolchain.sh")"
log "building the pariskv library with feature cuda"
(cd "$REPO_ROOT" && cargo build --release --lib --features cuda --quiet)

out=$PARISKV_WORK/device-carry
rm -rf "$out" && mkdir -p "$out"
strip --strip-debug -o "$out/libpariskv.a" "$REPO_ROOT/target/release/libpariskv.a"
# the patched tree, without the vocabularies and docs no target needs
tree_git archive --format=tar.gz -o "$out/llama.tar.gz" HEAD -- . ':!models' ':!docs'
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/make_tiny_model.py" "$out/tiny.gguf" >/dev/null
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/make_tiny_model.py" "$out/tiny-hd20.gguf" --head-dim 20 >/dev/null

cat > "$out/run-cuda.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine, from the repository root: build, test-backend-ops, end-to-end tests.
set -uo pipefail
out=${1:-.}; here=$(cd "$(dirname "$0")" && pwd)
export PARISKV_WORK=${PARISKV_WORK:-/tmp/pariskv-work}
mkdir -p "$PARISKV_WORK/llama.cpp" && tar -xzf "$here/llama.tar.gz" -C "$PARISKV_WORK/llama.cpp"
start=$(date +%s)
PARISKV_DEV=1 PARISKV_CUDA=1 PARISKV_SYSTEM_TOOLS=1 PARISKV_CMAKE_ARGS="-DGGML_PARISKV_LIB=$here/libpariskv.a" \
    ggml-integration/build.sh test-backend-ops llama-server llama-cli llama-completion llama-perplexity \
    llama-batched-bench llama-bench > "$out/build-cuda.log" 2>&1 || { tail -40 "$out/build-cuda.log"; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
bin=$PARISKV_WORK/build-cuda/bin
rc=0
"$bin/test-backend-ops" -b CUDA0 -o PARISKV_ATTN > "$out/test-backend-ops.log" 2>&1 || rc=1
grep -E "PARISKV|passed|FAIL|OK" "$out/test-backend-ops.log" | tail -25
python3 ggml-integration/tests/e2e.py --bin "$bin" --tiny "$here/tiny.gguf" --tiny-hd20 "$here/tiny-hd20.gguf" \
    --server-args "-ngl 99" ${PARISKV_E2E_ARGS:-} > "$out/e2e-cuda.log" 2>&1 || rc=1
tail -30 "$out/e2e-cuda.log"
exit $rc
RUN
chmod +x "$out/run-cuda.sh"
du -sh "$out"/*
