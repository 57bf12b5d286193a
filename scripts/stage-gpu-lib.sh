#!/usr/bin/env bash
# Stages the library's GPU tests and gpu_bench of several git revisions for a GPU machine
# without Rust (like the lent H100/H200), so that the kernels of several builds are checked
# and timed side by side in one device call:
#
#   scripts/stage-gpu-lib.sh [NAME=REV ...]     (default: head=HEAD; REV "." = the working tree)
#   scripts/stage-gpu-lib.sh --pack NAME ...     (staged builds into one archive, below)
#
# writes build/gpu-builds/NAME/{gpu,gpu_bench,REV} (stripped; about 20 MB a build). Carry
# build/gpu-builds and run, from the repository root on the GPU machine:
#
#   scripts/run-gpu-lib.sh OUT [NAME ...]
#
# More than two builds exceed what a device call carries (64 MiB with the tree): `--pack`
# writes the named ones to build/gpu-builds.tar.xz (about 3.5 MB a build), which
# run-gpu-lib.sh unpacks into build/gpu-builds first; carry that file instead.
#
# Revisions are built in a worktree under build/stage-gpu/ with the pinned CUDA toolchain
# (scripts/cuda-toolchain.sh), all sharing one target directory, so later builds are
# incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
carry=$root/build/gpu-builds
if [ "${1:-}" = --pack ]; then
    shift
    [ $# -gt 0 ] || { echo "--pack: name the staged builds to pack" >&2; exit 2; }
    for name in "$@"; do
        [ -f "$carry/$name/REV" ] || { echo "no staged build $name in $carry" >&2; exit 1; }
    done
    tar -cf - -C "$carry" "$@" | xz -T0 -6 > "$root/build/gpu-builds.tar.xz"
    ls -l "$root/build/gpu-builds.tar.xz"
    exit 0
fi
eval "$(scripts/cuda-toolchain.sh)"
export CARGO_TARGET_DIR=$root/build/stage-gpu/target
[ $# -gt 0 ] || set -- head=HEAD
for spec in "$@"; do
    name=${spec%%=*}
    rev=${spec#*=}
    [ "$name" != "$spec" ] || { echo "expected NAME=REV, got '$spec'" >&2; exit 2; }
    if [ "$rev" = . ]; then
        src=$root
        label="$(git rev-parse --short HEAD) + working tree"
    else
        src=$root/build/stage-gpu/tree
        rev=$(git rev-parse --verify "$rev^{commit}") # here, not in the worktree (its own HEAD)
        [ -e "$src/.git" ] || git worktree add -q --detach "$src" "$rev"
        git -C "$src" checkout -q --detach "$rev"
        label=$(git rev-parse --short "$rev")
    fi
    echo "[stage-gpu-lib] $name: building $label" >&2
    (cd "$src" && cargo build --release --quiet --features cuda --example gpu_bench &&
        cargo test --release --features cuda --test gpu --no-run 2> "$CARGO_TARGET_DIR/no-run.log") ||
        { cat "$CARGO_TARGET_DIR/no-run.log" >&2; exit 1; }
    test_bin=$(grep -o '[^ (]*/release/deps/gpu-[0-9a-f]*' "$CARGO_TARGET_DIR/no-run.log" | tail -1)
    [ -n "$test_bin" ] || { echo "no test binary in the cargo output" >&2; exit 1; }
    case $test_bin in /*) ;; *) test_bin=$src/$test_bin ;; esac
    mkdir -p "$carry/$name"
    strip -o "$carry/$name/gpu" "$test_bin"
    strip -o "$carry/$name/gpu_bench" "$CARGO_TARGET_DIR/release/examples/gpu_bench"
    echo "$label" > "$carry/$name/REV"
done
du -sh "$carry"
