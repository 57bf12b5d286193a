#!/usr/bin/env bash
# Counts the hooks of patches/: every `+` line of every patch in a file upstream already has,
# per file and in all; fails if a patch creates a file (our sources live in ggml-integration/).
set -euo pipefail
cd "$(dirname "$0")/.."
awk '
    /^diff --git / { file = $3; sub(/^a\//, "", file); next }
    /^new file mode/ { created[file] = 1; next }
    /^\+\+\+ / || /^--- / { next }
    /^\+/ && file != "" { added[file]++ }
    END {
        for (f in added) { printf "%5d  %s\n", added[f], f | "sort -k2"; total += added[f]; n++ }
        close("sort -k2")
        printf "%5d  added lines in %d upstream files\n", total, n
        bad = 0
        for (f in created) { printf "error: a patch creates %s\n", f; bad = 1 }
        exit bad
    }' patches/*.patch
