#!/usr/bin/env python3
"""Passkey sweep: the same generated prompts answered by llama-server with dense attention
and with each given ParisKV setting; prints one line per (depth, setting) and a summary.

  passkey_sweep.py --bin DIR --model GGUF [--tokens 8000] [--depths 0.25,0.5,0.75]
                   [--seed 7] [SETTING ...]
A SETTING is the extra server arguments in one string, e.g. "--pariskv-topk 256"; the
default sweep compares the GQA policies at top-k 256 and 1024.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import passkey  # noqa: E402
from server import Server  # noqa: E402

DEFAULT_SETTINGS = [
    "",
    "--pariskv-topk 256 --pariskv-gqa mean",
    "--pariskv-topk 1024 --pariskv-gqa mean",
    "--pariskv-topk 256 --pariskv-gqa per-head",
    "--pariskv-topk 1024 --pariskv-gqa per-head",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=8000)
    ap.add_argument("--depths", default="0.25,0.5,0.75")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("settings", nargs="*", default=DEFAULT_SETTINGS)
    a = ap.parse_args()
    ctx = str((a.tokens + 1023) // 1024 * 1024 + 1024)
    correct = {s: 0 for s in a.settings}
    depths = [float(d) for d in a.depths.split(",")]
    for depth in depths:
        prompt, key = passkey.make_prompt(a.tokens, depth, seed=a.seed)
        for setting in a.settings:
            with Server(a.bin, a.model, ["-c", ctx, "-b", "2048", "-ub", "512", *setting.split()], name="sweep") as s:
                _, text = s.complete(prompt, 8)
            ok = key in text
            correct[setting] += ok
            print(f"depth {depth:.2f} | {setting or 'dense':<42} | {text.strip()[:14]!r:<18} | key {key} | "
                  f"{'right' if ok else 'WRONG'}", flush=True)
    print()
    for setting, n in correct.items():
        print(f"{setting or 'dense':<44} {n}/{len(depths)} right")


if __name__ == "__main__":
    main()
