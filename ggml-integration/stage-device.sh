#!/usr/bin/env bash
# Stages the CUDA integration for a GPU machine without Rust or network (like the lent H200)
# in $PARISKV_WORK/device-carry/: the pariskv library built here with its CUDA kernels, the
# patched llama.cpp tree and the tiny test models. There, from the repository root, with
# build/device-carry carried along, ggml-integration/device-run.sh builds llama.cpp with
# -DGGML_CUDA=ON -DGGML_PARISKV=ON (system nvcc, cmake and ninja) and runs the checks, the
# benchmark and the passkey suite (see its header).
source "$(dirname "$0")/common.sh"

"$REPO_ROOT/ggml-integration/apply.sh"
ensure_venv
eval "$("$REPO_ROOT/scripts/cuda-toolchain.sh")"
log "building the pariskv library with feature cuda"
(cd "$REPO_ROOT" && cargo build --release --lib --no-default-features --features cuda --quiet)

out=$PARISKV_WORK/device-carry
rm -rf "$out" && mkdir -p "$out"
strip --strip-debug -o "$out/libpariskv.a" "$REPO_ROOT/target/release/libpariskv.a"
# the patched tree, without the vocabularies and docs no target needs
tree_git archive --format=tar.gz -o "$out/llama.tar.gz" HEAD -- . ':!models' ':!docs'
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/make_tiny_model.py" "$out/tiny.gguf" >/dev/null
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/make_tiny_model.py" "$out/tiny-hd20.gguf" --head-dim 20 >/dev/null

du -sh "$out"/*
