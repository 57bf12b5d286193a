#!/bin/bash
cd /work/main
O=docs/fidelity/issue9
M=build/models/gemma3-270m-q4_k_m.gguf
build/venv/bin/python -c "import sys; sys.path.insert(0, 'ggml-integration/tools'); import passkey; open('/tmp/kltext.txt', 'w').write(passkey.make_prompt(8000, 0.5, seed=11)[0])"
for s in "reference:--ratios reference" "tuned:--ratios tuned" "tuned-refine2:--ratios tuned --refine 2"; do
  name=${s%%:*}
  /usr/bin/time -f "%e s" build/kl-vs-dense -m $M -f /tmp/kltext.txt -n 6144 --prefill 2048 --topk 256 -t 2 ${s#*:} --json $O/kl-$name.json > $O/kl-$name.txt 2>$O/kl-$name.err
done
ggml-integration/tools/passkey_sweep.py --bin build/build-cpu/bin --model $M --lengths 8000,16000 \
  --json $O/passkey-tuned.json "--pariskv-topk 256" "--pariskv-topk 256 --pariskv-refine 2" > $O/passkey-tuned.log 2>&1
echo done > /tmp/e2e9.done
