#!/usr/bin/env bash
# Integration tests of the patched llama.cpp (CPU): builds it (build.sh), runs the op-level
# test against the pariskv library and dense attention, the fidelity suite's CI subset, the
# end-to-end tests on a tiny model, on Gemma 3 270M (passkey at ~8K tokens) and on
# Qwen2.5-Coder-1.5B (passkey at ~4K tokens: d = 128, ParisKV in every layer; 1.1 GB from
# PyPI, once), the load test and the RPC test (tests/rpc.py: rpc-server on localhost, and one
# built without ParisKV that the client must refuse). With PARISKV_LLAMA=older, on the older
# llama.cpp tree: the op test and the end-to-end tests on the tiny models (the fidelity,
# Gemma, Qwen, load and RPC tests are the pinned tree's).
#   ggml-integration/test.sh            (PARISKV_E2E_ARGS="--only test_identity" to narrow)
source "$(dirname "$0")/common.sh"

# the patches add hooks to upstream files and create none; their size is a budget
hooks=$("$REPO_ROOT/scripts/count-hook-lines.sh" | tail -1)
log "patches/: $hooks"
[ "${hooks%% added*}" -le 450 ] || die "the hooks grew past 450 added lines: move code into ggml-integration/src/"

"$REPO_ROOT/ggml-integration/build.sh"
bin=$BUILD_CPU/bin
models=$PARISKV_WORK/models
mkdir -p "$models"

log "ggml-rpc.h agrees with the patched op count (an RPC build, -DGGML_RPC=ON, stops otherwise)"
printf '#include "ggml-rpc.h"\nint main() { return 0; }\n' | c++ -std=c++17 -fsyntax-only -x c++ -I "$LLAMA_TREE/ggml/include" -

log "op-level test: ggml ops vs the pariskv library, exact dense attention and flash_attn_ext"
op_test=$PARISKV_WORK/test-pariskv-op$TREE_SUFFIX
c++ -std=c++17 -O2 -Wall -Wextra -o "$op_test" "$REPO_ROOT/ggml-integration/tests/test-pariskv-op.cpp" \
    -I "$LLAMA_TREE/ggml/include" -I "$REPO_ROOT/include" -I "$REPO_ROOT/ggml-integration/src/ggml" \
    -L "$bin" -lggml -lggml-base -lggml-cpu -Wl,-rpath,"$bin"
"$op_test"

"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/make_tiny_model.py" "$models/tiny.gguf" >/dev/null
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/make_tiny_model.py" "$models/tiny-hd20.gguf" --head-dim 20 >/dev/null

if [ "$PARISKV_LLAMA" = older ]; then
    log "end-to-end tests on the tiny models"
    "$VENV/bin/python" "$REPO_ROOT/ggml-integration/tests/e2e.py" --bin "$bin" \
        --tiny "$models/tiny.gguf" --tiny-hd20 "$models/tiny-hd20.gguf" ${PARISKV_E2E_ARGS:-}
    exit 0
fi

# A C++ tool of ggml-integration/tools/ linked against the patched libllama: $1 its name.
llama_tool() {
    c++ -std=c++17 -O2 -Wall -Wextra -o "$PARISKV_WORK/$1" "$REPO_ROOT/ggml-integration/tools/$1.cpp" \
        -I "$LLAMA_TREE/include" -I "$LLAMA_TREE/ggml/include" -I "$REPO_ROOT/include" \
        -L "$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin"
}

log "fidelity suite, CI subset: capture, report and next-token KL on the tiny model"
llama_tool capture-qkv
llama_tool kl-vs-dense
(cd "$REPO_ROOT" && cargo build --release --quiet --bin pariskv-fidelity)
rm -rf "$PARISKV_WORK/fidelity-ci" && mkdir -p "$PARISKV_WORK/fidelity-ci"
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tests/fidelity_ci.py" --capture-tool "$PARISKV_WORK/capture-qkv" \
    --fidelity "$REPO_ROOT/target/release/pariskv-fidelity" --kl-tool "$PARISKV_WORK/kl-vs-dense" \
    --model "$models/tiny.gguf" --text "$REPO_ROOT/ggml-integration/tests/data/fidelity-ci-text.md" --work "$PARISKV_WORK/fidelity-ci"

log "end-to-end tests"
gemma=$(ensure_gemma)
qwen=$(ensure_qwen)
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tests/e2e.py" --bin "$bin" \
    --tiny "$models/tiny.gguf" --tiny-hd20 "$models/tiny-hd20.gguf" --gemma "$gemma" --qwen "$qwen" ${PARISKV_E2E_ARGS:-}

log "load test: llama-server, 4 slots, concurrent long requests, cancellations, shifts, restores"
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tests/load.py" --bin "$bin"

log "RPC backend on localhost: the ops on rpc-server, a server without them refused"
# an rpc-server built from the same tree without ParisKV, the server the client must refuse
ensure_venv
plain=$PARISKV_WORK/build-rpc-plain
cmake -S "$LLAMA_TREE" -B "$plain" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_PARISKV=OFF -DGGML_RPC=ON \
    -DGGML_NATIVE=OFF "${LLAMA_OFFLINE_ARGS[@]}" \
    >"$PARISKV_WORK/cmake-rpc-plain.log" 2>&1 || die "cmake of the plain rpc-server failed ($PARISKV_WORK/cmake-rpc-plain.log)"
cmake --build "$plain" -j "${PARISKV_JOBS:-$(nproc)}" --target ggml-rpc-server >"$PARISKV_WORK/build-rpc-plain.log" 2>&1 \
    || { tail -20 "$PARISKV_WORK/build-rpc-plain.log"; die "building the plain rpc-server failed"; }
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tests/rpc.py" --bin "$bin" \
    --plain-rpc-server "$plain/bin/ggml-rpc-server" --tiny "$models/tiny.gguf"
