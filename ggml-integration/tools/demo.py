#!/usr/bin/env python3
"""Long-context passkey demo: one prompt answered with dense attention and with ParisKV,
side by side: the answers and the decode speed of both, with ParisKV's default settings at
a depth where it takes over.

The prompt is processed once: the dense server saves its slot, a ParisKV server restores it
(re-encoding the index from the restored keys) and decodes from there, so the demo pays for
one long prefill.

  demo.py --bin DIR --model GGUF [--tokens 16000] [--depth 0.5] [--topk 1024] [--threads N]
          [--predict 32] [--ngl N]
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import passkey  # noqa: E402
from server import LOG_DIR, Server  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="directory of the patched llama.cpp binaries")
    ap.add_argument("--model", required=True, help="GGUF model")
    ap.add_argument("--tokens", type=int, default=16000, help="prompt length in tokens (about)")
    ap.add_argument("--depth", type=float, default=0.5, help="where the pass key sits, 0..1")
    ap.add_argument("--topk", type=int, default=1024, help="ParisKV top-k")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads")
    ap.add_argument("--predict", type=int, default=32, help="tokens to generate")
    ap.add_argument("--ngl", type=int, default=0, help="layers on the GPU (a CUDA build)")
    a = ap.parse_args()

    prompt, key = passkey.make_prompt(a.tokens, a.depth, seed=11)
    ctx = str((a.tokens + a.predict + 1023) // 1024 * 1024 + 1024)
    base = ["-c", ctx, "-np", "1", "-t", str(a.threads), "-ngl", str(a.ngl), "--slot-save-path", LOG_DIR + "/"]
    rows = []

    print(f"dense attention: processing the prompt (about {a.tokens} tokens; the long part) ...", flush=True)
    t0 = time.time()
    with Server(a.bin, a.model, base, name="demo-dense") as s:
        n_prompt = len(s.tokenize(prompt))
        res = s.completion(prompt, a.predict, cache_prompt=True)
        s.post("/slots/0?action=save", {"filename": "demo-slot.bin"})
    rows.append(("dense", res))
    print(f"  done in {time.time() - t0:.0f} s (prefill {res['timings']['prompt_per_second']:.1f} tok/s); "
          "the prompt's KV cache saved", flush=True)

    print(f"ParisKV top-k {a.topk}: restoring the saved cache (the index is built from it) and decoding ...",
          flush=True)
    # -lv 4: the start-up line with the settings and the dense threshold
    with Server(a.bin, a.model, [*base, "-lv", "4", "--pariskv-topk", str(a.topk)], name="demo-pariskv") as s:
        s.post("/slots/0?action=restore", {"filename": "demo-slot.bin"})
        res = s.completion(prompt, a.predict, cache_prompt=True)
        log = s.log_text()
    rows.append((f"ParisKV top-k {a.topk}", res))
    init = [line.split("init: ")[-1] for line in log.splitlines() if "ParisKV: top-k" in line]
    if init:
        print("  " + init[-1])
    threshold = re.search(r"dense below (\d+) cells", log)
    if threshold and int(threshold.group(1)) >= n_prompt:
        print(f"  note: {n_prompt} tokens are below the dense threshold ({threshold.group(1)} cells): ParisKV "
              "does not take over at this depth; use --tokens above it")

    print(f"\nprompt: {n_prompt} tokens, pass key {key} at depth {a.depth:.0%}; "
          f"{a.threads} CPU threads, {a.ngl} layers on the GPU; greedy, {a.predict} tokens generated\n")
    print(f"{'mode':<20} {'answer':<40} {'correct':<8} {'decode tok/s':>13}")
    answers = []
    for name, res in rows:
        answer = res["content"].strip().split("\n")[0][:36]
        answers.append(answer)
        ok = passkey.answers(res["content"], key)
        print(f"{name:<20} {answer!r:<40} {'yes' if ok else 'no':<8} {res['timings']['predicted_per_second']:>13.2f}")
    dense, paris = (r["timings"]["predicted_per_second"] for _, r in rows)
    same_tokens = rows[0][1]["tokens"] == rows[1][1]["tokens"]
    print(f"\nsame answer as dense: {'yes' if answers[0] == answers[1] else 'no'} "
          f"(all {a.predict} tokens: {'yes' if same_tokens else 'no'}); "
          f"decode speed ParisKV / dense: {paris / dense:.2f}x")


if __name__ == "__main__":
    main()
