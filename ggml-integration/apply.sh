#!/usr/bin/env bash
# Applies patches/ to the llama.cpp tree at $LLAMA_TREE (PARISKV_LLAMA, LLAMA_CPP_DIR: obtain.sh), one
# commit per patch, in order, by three-way merge where a patch's context moved (git am -3).
# Idempotent: a tree already carrying exactly this series is left alone. A tree with work
# not yet exported to patches/ (see regen.sh) is never reset unless PARISKV_FORCE_RESET=1.
source "$(dirname "$0")/common.sh"

"$REPO_ROOT/ggml-integration/obtain.sh"

series_id() { cat "$REPO_ROOT"/patches/*.patch 2>/dev/null | sha256sum | cut -d' ' -f1; }
stamp=$LLAMA_TREE/.git/pariskv-series
want=$(series_id)
head=$(tree_git rev-parse HEAD)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want $head" ] && [ -z "$(tree_git status --porcelain)" ]; then
    log "patch series already applied ($(ls "$REPO_ROOT"/patches/*.patch | wc -l) patches)"
    exit 0
fi

if [ "${PARISKV_FORCE_RESET:-0}" != 1 ]; then
    if [ -n "$(tree_git status --porcelain)" ]; then
        die "$LLAMA_TREE has uncommitted changes; commit them and run regen.sh, or set PARISKV_FORCE_RESET=1 to discard them"
    fi
    recorded_head=$(cut -d' ' -f2 "$stamp" 2>/dev/null || true)
    if [ "$head" != "$(tree_git rev-parse upstream)" ] && [ "$head" != "$recorded_head" ]; then
        die "$LLAMA_TREE has commits not exported to patches/; run ggml-integration/regen.sh, or set PARISKV_FORCE_RESET=1 to discard them"
    fi
fi

log "resetting $LLAMA_TREE to upstream and applying patches/"
tree_git reset -q --hard upstream
tree_git clean -q -fd
for p in "$REPO_ROOT"/patches/*.patch; do
    [ -e "$p" ] || continue
    if ! tree_git am -q -3 --ignore-whitespace --keep-cr "$p"; then
        tree_git am --abort || true
        die "patch $(basename "$p") does not apply to $(tree_git log -1 --format=%s upstream) (docs/INTEGRATION.md: rebasing)"
    fi
    log "applied $(basename "$p")"
done
echo "$want $(tree_git rev-parse HEAD)" > "$stamp"
