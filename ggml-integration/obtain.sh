#!/usr/bin/env bash
# Puts a llama.cpp tree at $LLAMA_TREE (a git repository, tag `upstream`).
# Source: $LLAMA_CPP_DIR, a git checkout (the pinned commit, or another one: the patches then
# apply by three-way merge where their context moved); otherwise the llama-cpp-python sdist
# of PARISKV_LLAMA (pinned or older, common.sh) from PyPI, checksum-verified. The repository
# also holds the pinned tree's files (tag `pariskv-base`), the base `git am -3` merges from.
# Does nothing if the tree is already there from the same source.
source "$(dirname "$0")/common.sh"

if [ -n "${LLAMA_CPP_DIR:-}" ]; then
    source_id="checkout:$(cd "$LLAMA_CPP_DIR" && pwd)"
else
    source_id="sdist:$SDIST_SHA256"
fi

if [ -d "$LLAMA_TREE/.git" ] && tree_git rev-parse -q --verify upstream >/dev/null; then
    have=$(cat "$LLAMA_TREE/.pariskv-source" 2>/dev/null || true)
    [ "$have" = "$source_id" ] || die "$LLAMA_TREE came from '$have', not '$source_id'; remove it to switch sources"
    log "llama.cpp tree present at $LLAMA_TREE ($have)"
    exit 0
fi

# The sdist of llama-cpp-python $1 (sha256 $2), downloaded once; prints its path.
sdist() {
    local downloads=$PARISKV_WORK/downloads path=$PARISKV_WORK/downloads/llama_cpp_python-$1.tar.gz
    mkdir -p "$downloads"
    if [ ! -f "$path" ] || ! echo "$2  $path" | sha256sum -c --quiet - 2>/dev/null; then
        log "downloading llama-cpp-python==$1 (sdist) from PyPI"
        rm -f "$path"
        python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$1" -d "$downloads" >&2
    fi
    echo "$2  $path" | sha256sum -c --quiet - \
        || die "checksum mismatch for $path (expected $2); refusing to build from it"
    echo "$path"
}

# Replaces the files of $LLAMA_TREE with the vendored llama.cpp of sdist $1.
extract() {
    local tmp
    tmp=$(mktemp -d "$PARISKV_WORK/extract.XXXXXX")
    tar -xzf "$1" -C "$tmp" --strip-components=3 "$(basename "${1%.tar.gz}")/vendor/llama.cpp"
    rm -f "$tmp/.git"   # the sdist's tree carries a submodule gitfile
    find "$LLAMA_TREE" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
    cp -a "$tmp/." "$LLAMA_TREE/"
    rm -rf "$tmp"
}

rm -rf "$LLAMA_TREE"
mkdir -p "$LLAMA_TREE"
git -C "$LLAMA_TREE" init -q
echo ".pariskv-source" >> "$LLAMA_TREE/.git/info/exclude"
commit_all() {
    tree_git add -A -f .
    tree_git commit -q -m "$1"
}

if [ -n "${LLAMA_CPP_DIR:-}" ]; then
    git -C "$LLAMA_CPP_DIR" rev-parse --git-dir >/dev/null 2>&1 \
        || die "LLAMA_CPP_DIR=$LLAMA_CPP_DIR is not a git checkout of llama.cpp"
    head=$(git -C "$LLAMA_CPP_DIR" rev-parse HEAD)
    [ -z "$(git -C "$LLAMA_CPP_DIR" status --porcelain --untracked-files=no)" ] \
        || log "warning: LLAMA_CPP_DIR has uncommitted changes; using the committed tree only"
    # the merge base of the patches, if the checkout's history has it
    if [ "$head" != "$PINNED_COMMIT" ]; then
        if tree_git fetch -q "$LLAMA_CPP_DIR" "$PINNED_COMMIT" 2>/dev/null; then
            tree_git tag pariskv-base FETCH_HEAD
        else
            log "warning: $LLAMA_CPP_DIR lacks $PINNED_COMMIT; patches whose context moved will not merge"
        fi
        log "LLAMA_CPP_DIR is at $head, not the pinned $PINNED_COMMIT: applying by three-way merge"
    fi
    log "copying llama.cpp $head from $LLAMA_CPP_DIR"
    git -C "$LLAMA_CPP_DIR" archive HEAD | tar -x -C "$LLAMA_TREE"
    commit_all "upstream: llama.cpp $head"
else
    if [ "$PARISKV_LLAMA" != pinned ]; then
        log "extracting the pinned llama.cpp $PINNED_COMMIT (the patches' merge base)"
        extract "$(sdist "$PINNED_SDIST_VERSION" "$PINNED_SDIST_SHA256")"
        commit_all "pariskv-base: llama.cpp $PINNED_COMMIT"
        tree_git tag pariskv-base
        tree_git checkout -q --orphan upstream-branch
    fi
    log "extracting vendor/llama.cpp of llama-cpp-python $SDIST_VERSION (llama.cpp $LLAMA_CPP_COMMIT)"
    extract "$(sdist "$SDIST_VERSION" "$SDIST_SHA256")"
    commit_all "upstream: llama.cpp $LLAMA_CPP_COMMIT"
fi

echo "$source_id" > "$LLAMA_TREE/.pariskv-source"
tree_git tag upstream
log "llama.cpp tree ready at $LLAMA_TREE"
