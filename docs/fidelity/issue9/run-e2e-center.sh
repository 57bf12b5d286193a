#!/bin/bash
# issue 9, end to end with key centring (CPU build): next-token KL against dense on the KL
# text of run-e2e.sh (top-k 256, per-head, tuned table), centred with and without refine 2.
# The uncentred rows are run-e2e.sh's kl-tuned / kl-tuned-refine2 (before centring existed).
# This tree runs the "default" row (the new tuned table, refine 2, centred). The tuned-* rows
# used the first tuned table (the reference's candidate shares; this text's zones cross 5K
# keys, so no fixed share reproduces it): `git show b16b1a6:docs/fidelity/issue9/run-e2e-center.sh`
# made them, in a checkout of that commit.
cd "$(dirname "$0")/../../.."
O=docs/fidelity/issue9
M=build/models/gemma3-270m-q4_k_m.gguf
[ -f /tmp/kltext.txt ] || build/venv/bin/python -c "import sys; sys.path.insert(0, 'ggml-integration/tools'); import passkey; open('/tmp/kltext.txt', 'w').write(passkey.make_prompt(8000, 0.5, seed=11)[0])"
for s in "default:"; do
  name=${s%%:*}
  /usr/bin/time -f "%e s" build/kl-vs-dense -m $M -f /tmp/kltext.txt -n 6144 --prefill 2048 --topk 256 -t 2 ${s#*:} \
      --json $O/kl-$name.json > $O/kl-$name.txt 2>$O/kl-$name.err
done
