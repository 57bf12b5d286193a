#!/usr/bin/env bash
# Puts the pinned llama.cpp tree at $LLAMA_TREE (a git repository, tag `upstream`).
# Source: $LLAMA_CPP_DIR, a git checkout of the pinned commit, if set; otherwise the
# llama-cpp-python 0.3.36 sdist from PyPI, checksum-verified. Does nothing if the tree is
# already there from the same source.
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

rm -rf "$LLAMA_TREE"
mkdir -p "$LLAMA_TREE"
if [ -n "${LLAMA_CPP_DIR:-}" ]; then
    git -C "$LLAMA_CPP_DIR" rev-parse --git-dir >/dev/null 2>&1 \
        || die "LLAMA_CPP_DIR=$LLAMA_CPP_DIR is not a git checkout (need commit $LLAMA_CPP_COMMIT)"
    head=$(git -C "$LLAMA_CPP_DIR" rev-parse HEAD)
    [ "$head" = "$LLAMA_CPP_COMMIT" ] \
        || die "LLAMA_CPP_DIR is at $head; ParisKV's patches are for $LLAMA_CPP_COMMIT (git checkout $LLAMA_CPP_COMMIT)"
    [ -z "$(git -C "$LLAMA_CPP_DIR" status --porcelain --untracked-files=no)" ] \
        || log "warning: LLAMA_CPP_DIR has uncommitted changes; using the committed tree only"
    log "copying llama.cpp $head from $LLAMA_CPP_DIR"
    git -C "$LLAMA_CPP_DIR" archive HEAD | tar -x -C "$LLAMA_TREE"
else
    downloads=$PARISKV_WORK/downloads
    mkdir -p "$downloads"
    sdist=$downloads/$SDIST_NAME
    if [ ! -f "$sdist" ] || ! echo "$SDIST_SHA256  $sdist" | sha256sum -c --quiet - 2>/dev/null; then
        log "downloading $SDIST_SPEC (sdist) from PyPI"
        rm -f "$sdist"
        python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
            "$SDIST_SPEC" -d "$downloads"
    fi
    echo "$SDIST_SHA256  $sdist" | sha256sum -c --quiet - \
        || die "checksum mismatch for $sdist (expected $SDIST_SHA256); refusing to build from it"
    log "extracting vendor/llama.cpp (llama.cpp $LLAMA_CPP_COMMIT)"
    tar -xzf "$sdist" -C "$LLAMA_TREE" --strip-components=3 "${SDIST_NAME%.tar.gz}/vendor/llama.cpp"
fi

echo "$source_id" > "$LLAMA_TREE/.pariskv-source"
rm -f "$LLAMA_TREE/.git"   # the sdist's tree carries a submodule gitfile
git -C "$LLAMA_TREE" init -q
echo ".pariskv-source" >> "$LLAMA_TREE/.git/info/exclude"
tree_git add -A -f .
tree_git commit -q -m "upstream: llama.cpp $LLAMA_CPP_COMMIT"
tree_git tag upstream
log "llama.cpp tree ready at $LLAMA_TREE"
