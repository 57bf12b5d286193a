#!/usr/bin/env python3
"""Long-context passkey demo: the same prompt answered by Gemma 3 270M with dense attention
and with ParisKV, side by side, with the answers and the prefill and decode speeds.

  demo.py --bin DIR --model GGUF [--tokens 8000] [--depth 0.5] [--topk 256] [--threads N] [--ngl N]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import passkey  # noqa: E402
from server import Server  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="directory of the patched llama.cpp binaries")
    ap.add_argument("--model", required=True, help="GGUF model")
    ap.add_argument("--tokens", type=int, default=8000, help="prompt length in tokens (about)")
    ap.add_argument("--depth", type=float, default=0.5, help="where the pass key sits, 0..1")
    ap.add_argument("--topk", type=int, default=256, help="ParisKV top-k")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads")
    ap.add_argument("--predict", type=int, default=48, help="tokens to generate")
    ap.add_argument("--ngl", type=int, default=0, help="layers on the GPU (a CUDA build)")
    a = ap.parse_args()

    prompt, key = passkey.make_prompt(a.tokens, a.depth, seed=11)
    ctx = str((a.tokens + a.predict + 1023) // 1024 * 1024 + 1024)
    rows = []
    for name, args in [("dense", []), (f"ParisKV top-k {a.topk}", ["--pariskv-topk", str(a.topk)])]:
        print(f"running {name} ...", flush=True)
        with Server(a.bin, a.model, ["-c", ctx, "-t", str(a.threads), "-ngl", str(a.ngl), *args], name="demo") as s:
            n_prompt = len(s.tokenize(prompt))
            res = s.completion(prompt, a.predict)
            log = s.log_text()
        t = res["timings"]
        answer = res["content"].strip().split("\n")[0][:40]
        rows.append((name, answer, key in answer, t["prompt_per_second"], t["predicted_per_second"]))
        pk = [line.split("pariskv_init: ")[-1] for line in log.splitlines() if "ParisKV" in line]
        if pk:
            print("  " + pk[-1])
    print(f"\nprompt: {n_prompt} tokens, pass key {key} at depth {a.depth:.0%}; "
          f"{a.threads} CPU threads, {a.ngl} layers on the GPU; greedy, {a.predict} tokens generated\n")
    print(f"{'mode':<22} {'answer':<42} {'correct':<8} {'prefill tok/s':>13} {'decode tok/s':>13}")
    for name, answer, ok, pp, tg in rows:
        print(f"{name:<22} {answer!r:<42} {'yes' if ok else 'no':<8} {pp:>13.1f} {tg:>13.1f}")
    dense, paris = rows
    print(f"\nsame answer: {'yes' if dense[1] == paris[1] else 'no'}; "
          f"decode speed ParisKV / dense: {paris[4] / dense[4]:.2f}x")


if __name__ == "__main__":
    main()
