#!/usr/bin/env python3
"""Passkey suite: the same generated prompts (each length and depth) answered greedily by
llama-server with dense attention and with each given ParisKV setting; prints one line per
(length, depth, setting), a summary, and optionally writes the grid as JSON (for
plot_passkey.py).

  passkey_sweep.py --bin DIR --model GGUF [--lengths 4000,8000] [--depths 0.25,0.5,0.75]
                   [--seed 7] [--json OUT] [SETTING ...]
A SETTING is the extra server arguments in one string, e.g. "--pariskv-topk 256"; the
default compares the GQA policies at top-k 256 and 1024. Lengths are in tokens (about).
A setting without --pariskv-dense-threshold gets sink + window + 2 top-k, so that ParisKV
answers from the same depth on every backend (the CPU's automatic threshold would keep
prompts below 12K tokens dense).
"""

import argparse
import json
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


def with_threshold(setting):
    """`setting` with an explicit --pariskv-dense-threshold of sink + window + 2 top-k."""
    words = setting.split()
    if "--pariskv-topk" not in words or "--pariskv-dense-threshold" in words:
        return setting
    value = {w: int(words[i + 1]) for i, w in enumerate(words[:-1]) if w in
             ("--pariskv-topk", "--pariskv-sink", "--pariskv-window")}
    threshold = value.get("--pariskv-sink", 4) + value.get("--pariskv-window", 512) + 2 * value["--pariskv-topk"]
    return f"{setting} --pariskv-dense-threshold {threshold}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--lengths", default="8000", help="prompt lengths in tokens (about), comma-separated")
    ap.add_argument("--depths", default="0.25,0.5,0.75")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--server-args", default="", help="arguments for every server, e.g. '-ngl 99'")
    ap.add_argument("settings", nargs="*", default=DEFAULT_SETTINGS)
    a = ap.parse_args()
    lengths = [int(x) for x in a.lengths.split(",")]
    depths = [float(d) for d in a.depths.split(",")]
    results = []
    for tokens in lengths:
        ctx = str((tokens + 1023) // 1024 * 1024 + 1024)
        for depth in depths:
            prompt, key = passkey.make_prompt(tokens, depth, seed=a.seed)
            for setting in a.settings:
                args = ["-c", ctx, "-b", "2048", "-ub", "512", *a.server_args.split(), *with_threshold(setting).split()]
                with Server(a.bin, a.model, args, name="sweep") as s:
                    _, text = s.complete(prompt, 8)
                ok = passkey.answers(text, key)
                results.append({"tokens": tokens, "depth": depth, "setting": setting or "dense",
                                "answer": text.strip()[:14], "key": key, "right": ok})
                print(f"{tokens:>6} | depth {depth:.2f} | {setting or 'dense':<42} | {text.strip()[:14]!r:<18} | "
                      f"key {key} | {'right' if ok else 'WRONG'}", flush=True)
    print()
    for setting in a.settings:
        name = setting or "dense"
        rows = [r for r in results if r["setting"] == name]
        print(f"{name:<44} {sum(r['right'] for r in rows)}/{len(rows)} right")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
