#!/usr/bin/env python3
"""The fidelity suite's CI subset on the tiny model over a short text: capture-qkv, then
pariskv-fidelity on the capture (the fidelity report, then row reuse between decode steps),
then kl-vs-dense. With top-k at least the retrieval zone every visible key is attended: recall, the coarse stage's recall and the attention mass must
be exactly 1, the output equal to dense attention's, the next-token KL 0 and every greedy
token the same; with a small top-k the numbers must be sane (and the KL above 0: ParisKV ran).

  fidelity_ci.py --capture-tool BIN --fidelity BIN --kl-tool BIN --model TINY.gguf --text FILE --work DIR
"""

import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ["--capture-tool", "--fidelity", "--kl-tool", "--model", "--text", "--work"]:
        ap.add_argument(flag, required=True)
    a = ap.parse_args()
    cap = os.path.join(a.work, "capture")
    subprocess.run([a.capture_tool, "-m", a.model, "-f", a.text, "-n", "1500", "-o", cap, "-t", "2"],
                   check=True, stderr=subprocess.DEVNULL)
    meta = json.load(open(os.path.join(cap, "meta.json")))
    report = os.path.join(a.work, "report.json")
    out = subprocess.run([a.fidelity, "--capture", cap, "--k", "16,4096", "--positions", "6", "--min-pos", "600",
                          "--window", "32", "--json", report], check=True, capture_output=True, text=True).stdout
    print(out)
    rows = json.load(open(report))
    failures = []

    def check(ok, what):
        print(("  ok    " if ok else "  FAIL  ") + what)
        if not ok:
            failures.append(what)

    check(meta["n_tokens"] == 1500 and meta["layers"] == [0, 1], f"captured 1500 tokens of layers 0 and 1 ({meta})")
    check(len(rows) == 2 * 3 * 2, f"a row per layer, GQA policy and k ({len(rows)})")
    for r in rows:
        name = f"layer {r['layer']} {r['gqa']} k={r['k']}"
        if r["k"] >= meta["n_tokens"]:
            check(r["recall"] == 1.0 and r["coarse_recall"] == 1.0 and r["mass"] == 1.0 and r["out_rel_err"] == 0.0,
                  f"{name}: top-k >= context attends everything (recall, mass 1, output equal to dense)")
        else:
            check(0.0 < r["recall"] <= 1.0 and 0.0 < r["mass"] <= 1.0 + 1e-9 and r["zone"] > r["k"]
                  and len(r["recall_along"]) == 6,
                  f"{name}: recall {r['recall']:.3f}, mass {r['mass']:.3f} over a zone of {r['zone']:.0f}")

    # row reuse between consecutive decode steps: 4 steps measured at 2 positions per KV head
    reuse_json = os.path.join(a.work, "reuse.json")
    out = subprocess.run([a.fidelity, "--capture", cap, "--reuse", "4", "--k", "16,4096", "--gqa", "group",
                          "--positions", "2", "--min-pos", "600", "--window", "32", "--json", reuse_json],
                         check=True, capture_output=True, text=True).stdout
    print(out)
    reuse = json.load(open(reuse_json))
    check(len(reuse) == 2 * 2, f"reuse: a row per layer and k ({len(reuse)})")
    for r in reuse:
        name = f"reuse, layer {r['layer']} k={r['k']}"
        hit, held = r["hit"], r["held_over_k"]
        if r["k"] >= meta["n_tokens"]:
            check(r["steps"] == 0, f"{name}: a zone attended whole is not measured")
        else:
            check(r["steps"] == 2 * 4 * meta["n_head_kv"] and 0.0 <= hit[0] <= hit[1] <= hit[2] <= 1.0
                  and held[0] == 1.0 and held[0] <= held[1] <= held[2] <= 4.0,
                  f"{name}: {r['steps']} steps, hit {hit}, held {held} (k rows a step)")

    kl_json = os.path.join(a.work, "kl.json")
    out = subprocess.run([a.kl_tool, "-m", a.model, "-f", a.text, "-n", "1200", "--prefill", "600", "--topk", "16,4096",
                          "--window", "32", "-t", "2", "--json", kl_json], check=True, capture_output=True, text=True).stdout
    print(out)
    kl = {r["topk"]: r for r in json.load(open(kl_json))}
    check(kl[4096]["mean_kl"] == 0.0 and kl[4096]["max_kl"] == 0.0 and kl[4096]["greedy_agreement"] == 1.0,
          "KL, top-k >= context: 0 at every position, every greedy token the same")
    check(0.0 < kl[16]["mean_kl"] < 10.0 and 0.0 < kl[16]["greedy_agreement"] <= 1.0,
          f"KL, top-k 16: mean {kl[16]['mean_kl']:.3g} nats, greedy agreement {kl[16]['greedy_agreement']:.1%}")
    print(f"{'FAILED' if failures else 'OK'}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
