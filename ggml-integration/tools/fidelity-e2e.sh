#!/usr/bin/env bash
# The end-to-end rows of docs/FIDELITY.md ("Retrieval beyond the paper"), CPU build: next-token
# KL against dense (kl-vs-dense, top-k 256, 6144 tokens after a 2048-token dense prefill) on a
# passkey prompt of ~8K tokens (seed 11) for each setting given, and the passkey sweep at 8K
# and 16K tokens.
#   fidelity-e2e.sh GEMMA_GGUF OUT [NAME:"kl-vs-dense args" ...]
# Default settings rows: reference (--ratios reference), tuned (--ratios tuned), default (the
# library's defaults). The KL tool and the server come from the pinned tree's CPU build
# (ggml-integration/test.sh builds both).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,8p "$0" >&2; exit 2; }
model=$1 out=$2
shift 2
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=("reference:--ratios reference" "tuned:--ratios tuned" "default:")
source "$(dirname "$0")/../common.sh"
mkdir -p "$out"
text=$out/kl-text.txt
"$VENV/bin/python" -c "import sys; sys.path.insert(0, '$REPO_ROOT/ggml-integration/tools'); import passkey; \
open(sys.argv[1], 'w').write(passkey.make_prompt(8000, 0.5, seed=11)[0])" "$text"
for row in "${rows[@]}"; do
    name=${row%%:*}
    log "KL of '$name' (${row#*:})"
    "$PARISKV_WORK/kl-vs-dense" -m "$model" -f "$text" -n 6144 --prefill 2048 --topk 256 -t 2 ${row#*:} \
        --json "$out/kl-$name.json" > "$out/kl-$name.txt" 2>/dev/null
done
"$VENV/bin/python" "$REPO_ROOT/ggml-integration/tools/passkey_sweep.py" --bin "$BUILD_CPU/bin" --model "$model" \
    --lengths 8000,16000 --json "$out/passkey-tuned.json" "--pariskv-topk 256" "--pariskv-topk 256 --pariskv-refine 2" \
    > "$out/passkey-tuned.log" 2>&1
