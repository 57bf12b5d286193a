#!/usr/bin/env bash
# The retrieval-settings grid of docs/FIDELITY.md ("Retrieval beyond the paper"): pariskv-fidelity
# over captured Gemma 3 270M queries and keys, per variant and window, a JSON report and a
# text table each.
#   fidelity-grid.sh CAPTURE_13K CAPTURE_32K OUT     (captures: tools/capture-qkv.cpp, see FIDELITY.md)
# CAPTURE_13K holds a ~13.5K-token prompt, CAPTURE_32K a ~32.5K one. VARIANTS and WINDOWS
# narrow the grid. `--center on` is the library's key centring with a first append of 512 keys
# (llama.cpp's first ubatch).
#
# The "tuned" rows used the first tuned table (the reference's candidate shares, rho_coll 1),
# which the current table (the "default" rows) replaced. At 13K and 16K it equals the fixed
# share 0.2 (same JSON); the 32K window's zone crosses 30K keys (0.2, then 0.1), which no fixed
# share reproduces: its tuned rows came from commit b16b1a6's copy of this script.
set -euo pipefail
[ $# -eq 3 ] || { sed -n 2,6p "$0" >&2; exit 2; }
cap13=$1 cap32=$2 out=$3
cd "$(dirname "$0")/../.."
B=target/release/pariskv-fidelity
[ -x "$B" ] || cargo build --release --quiet --bin pariskv-fidelity
mkdir -p "$out"
declare -A W
W[13k]="--capture $cap13 --positions 8 --min-pos 11000"
W[16k]="--capture $cap32 --positions 8 --min-pos 15000 --max-pos 16383"
W[32k]="--capture $cap32 --positions 8 --min-pos 30000"
declare -A T1
T1[13k]=0.2:1.0; T1[16k]=0.2:1.0
declare -A V
V[paper]="--gqa mean --ratios reference --refine 1 --center off"
V[perhead-reference]="--gqa per-head --ratios reference --refine 1 --center off"
V[tuned]="--gqa per-head --ratios T1 --refine 1 --center off"
V[tuned-refine2]="--gqa per-head --ratios T1 --refine 2 --center off"
V[tuned-center]="--gqa per-head --ratios T1 --refine 1 --center on"
V[tuned-refine2-center]="--gqa per-head --ratios T1 --refine 2 --center on"
V[default]="--gqa per-head"  # the library's defaults otherwise
V[cand0.2-center]="--gqa per-head --ratios 0.2:1.0 --refine 1 --center on"
V[cand0.2-refine2-center]="--gqa per-head --ratios 0.2:1.0 --refine 2 --center on"
variants=${VARIANTS:-paper perhead-reference tuned tuned-refine2 tuned-center tuned-refine2-center cand0.2-center cand0.2-refine2-center default}
for w in ${WINDOWS:-13k 16k 32k}; do
    for v in $variants; do
        [[ $v == tuned* && -z ${T1[$w]:-} ]] && continue
        $B ${W[$w]} ${V[$v]/T1/${T1[$w]:-}} --k 64,256,1024,2048 --json "$out/$w-$v.json" > "$out/$w-$v.txt"
    done
done
# candidate shares 0.3 / 0.4 (refine 1 and 2, centred) at 13K and 16K, 0.3 at 32K
for w in 13k 16k; do
    for c in 0.3 0.4; do
        for r in 1 2; do
            $B ${W[$w]} --gqa per-head --ratios $c:1.0 --refine $r --center on --k 64,256,1024,2048 \
                --json "$out/$w-cand$c-refine$r-center.json" > "$out/$w-cand$c-refine$r-center.txt"
        done
    done
done
$B ${W[32k]} --gqa per-head --ratios 0.3:1.0 --refine 1 --center on --k 64,256,1024,2048 \
    --json "$out/32k-cand0.3-refine1-center.json" > "$out/32k-cand0.3-refine1-center.txt"
