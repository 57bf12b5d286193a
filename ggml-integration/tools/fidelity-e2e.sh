#!/usr/bin/env bash
# End-to-end fidelity of ParisKV settings against dense, CPU build (the rows of docs/FIDELITY.md):
# next-token KL against dense (kl-vs-dense: 6144 tokens, the first 2048 prefilled densely, on a
# passkey prompt of ~8K tokens, seed 11) for each setting given, and the passkey sweep with
# the same settings.
#   fidelity-e2e.sh MODEL_GGUF OUT [NAME:"kl-vs-dense args" ...]
# Each row names a setting in kl-vs-dense's flags ("group:--gqa group"); the passkey sweep
# runs the same flags as llama-server's --pariskv-* flags. Environment:
#   TOPK             top-k values for both (default 256)
#   PASSKEY_LENGTHS  prompt lengths of the sweep in tokens (default 8000,16000; "" skips it)
# Default rows: reference (--ratios reference), tuned (--ratios tuned), default (the library's
# defaults). The KL tool and the server come from the pinned tree's CPU build
# (ggml-integration/test.sh builds both).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,13p "$0" >&2; exit 2; }
model=$1 out=$2
shift 2
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=("reference:--ratios reference" "tuned:--ratios tuned" "default:")
topk=${TOPK:-256}
lengths=${PASSKEY_LENGTHS-8000,16000}
source "$(dirname "$0")/../common.sh"
mkdir -p "$out"
text=$out/kl-text.txt
"$VENV/bin/python" -c "import sys; sys.path.insert(0, '$REPO_ROOT/ggml-integration/tools'); import passkey; \
open(sys.argv[1], 'w').write(passkey.make_prompt(8000, 0.5, seed=11)[0])" "$text"
settings=()
for row in "${rows[@]}"; do
    name=${row%%:*} args=${row#*:}
    log "KL of '$name' (top-k $topk${args:+, $args})"
    start=$SECONDS
    # shellcheck disable=SC2086 # the row's flags are words
    "$PARISKV_WORK/kl-vs-dense" -m "$model" -f "$text" -n 6144 --prefill 2048 --topk "$topk" -t 2 $args \
        --json "$out/kl-$name.json" > "$out/kl-$name.txt" 2>/dev/null
    log "  $(( SECONDS - start )) s"
    for k in ${topk//,/ }; do
        settings+=("--pariskv-topk $k$(sed -E 's/(^| )--/\1--pariskv-/g; s/^/ /; s/^ $//' <<< "$args")")
    done
done
if [ -n "$lengths" ]; then
    log "passkey sweep at $lengths tokens"
    "$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/passkey_sweep.py" --bin "$BUILD_CPU/bin" \
        --model "$model" --lengths "$lengths" --json "$out/passkey.json" "" "${settings[@]}" > "$out/passkey.log" 2>&1
    tail -n $(( ${#settings[@]} + 2 )) "$out/passkey.log"
fi
