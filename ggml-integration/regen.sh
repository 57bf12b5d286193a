#!/usr/bin/env bash
# Regenerates patches/ from the commits on top of `upstream` in $LLAMA_TREE: one patch per
# commit, numbered in order. Edit the tree, commit (git commit --fixup, then
# git rebase -i --autosquash upstream, keeps one commit per patch), then run this.
source "$(dirname "$0")/common.sh"

[ -d "$LLAMA_TREE/.git" ] || die "no working tree at $LLAMA_TREE (run ggml-integration/apply.sh)"
[ -z "$(tree_git status --porcelain)" ] || die "$LLAMA_TREE has uncommitted changes; commit them first"

rm -f "$REPO_ROOT"/patches/*.patch
mkdir -p "$REPO_ROOT/patches"
tree_git format-patch -q --zero-commit --no-signature --no-stat -o "$REPO_ROOT/patches" upstream..HEAD
series=$(cat "$REPO_ROOT"/patches/*.patch | sha256sum | cut -d' ' -f1)
echo "$series $(tree_git rev-parse HEAD)" > "$LLAMA_TREE/.git/pariskv-series"
ls "$REPO_ROOT"/patches
