#!/bin/bash
# issue 9 fidelity grid: variants x windows, JSON per run
cd /work/main
B=target/release/pariskv-fidelity
O=docs/fidelity/issue9
declare -A W
W[13k]="--capture /tmp/cap-gemma16k --positions 8 --min-pos 11000"
W[16k]="--capture /tmp/cap-gemma32k --positions 8 --min-pos 15000 --max-pos 16383"
W[32k]="--capture /tmp/cap-gemma32k --positions 8 --min-pos 30000"
declare -A V
V[paper]="--gqa mean --ratios reference --refine 1"
V[perhead-reference]="--gqa per-head --ratios reference --refine 1"
V[tuned]="--gqa per-head --ratios tuned --refine 1"
V[tuned-refine2]="--gqa per-head --ratios tuned --refine 2"
V[tuned-refine2-center]="--gqa per-head --ratios tuned --refine 2 --center 2048"
V[cand0.2-refine2-center]="--gqa per-head --ratios 0.2:1.0 --refine 2 --center 2048"
for w in 13k 16k 32k; do
  for v in paper perhead-reference tuned tuned-refine2 tuned-refine2-center cand0.2-refine2-center; do
    $B ${W[$w]} ${V[$v]} --k 64,256,1024,2048 --json $O/$w-$v.json > $O/$w-$v.txt 2>/dev/null
  done
done
echo done > /tmp/issue9.done
