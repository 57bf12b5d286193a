#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV of every kernel of a llama.cpp run (`ncu --metrics
gpu__time_duration.sum --csv llama-bench ...`, as `device-run.sh profile` writes it) per
decode token: the run's last complete token is the span between the last two pairs of
embedding lookups (k_get_rows, twice at the start of each graph), and its kernels are
totalled by name. With --layers, the ParisKV kernels of each layer (a layer starts at
pk_center_init, the encode of its new key) are listed too, which shows layers that differ.

    ncu_tokens.py ncu.csv [--top 30] [--layers]

ncu serialises kernels and starts each with cold caches, so its sum exceeds the token's
time in a CUDA graph (about 1.25x for dense decoding on the H100); compare runs by it, not
with llama-bench's tokens/s.
"""
import argparse
import collections
import csv
import sys


def kernels(path):
    """(name, microseconds) of every profiled kernel, in launch order."""
    lines = open(path, errors="replace").read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"{path}: no ncu CSV header (\"ID\",...)")
    rows = list(csv.reader(lines[start:]))
    head = rows[0]
    name, metric, value = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
    return [(r[name], float(r[value].replace(",", "")) / 1000.0)
            for r in rows[1:] if r[metric] == "gpu__time_duration.sum"]


def last_token(ks):
    """The kernels of the last complete token (between the last two graph starts)."""
    starts = [i for i, (n, _) in enumerate(ks) if "get_rows" in n and (i == 0 or "get_rows" not in ks[i - 1][0])]
    if len(starts) < 2:
        sys.exit("fewer than two graph starts (k_get_rows) in the profile: profile more tokens")
    return ks[starts[-2]:starts[-1]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30, help="kernel names listed (default 30)")
    ap.add_argument("--layers", action="store_true", help="each layer's ParisKV kernels")
    a = ap.parse_args()
    token = last_token(kernels(a.csv))
    total = sum(us for _, us in token)
    pk = sum(us for n, us in token if n.startswith("pk_"))
    print(f"{len(token)} kernels, {total:.0f} us in all, {pk:.0f} us of them ParisKV's (pk_*)")
    by_name, count = collections.Counter(), collections.Counter()
    for n, us in token:
        by_name[n[:70]] += us
        count[n[:70]] += 1
    print("| kernel | launches | us | us per launch |\n|---|---|---|---|")
    for n, us in by_name.most_common(a.top):
        print(f"| {n} | {count[n]} | {us:.1f} | {us / count[n]:.1f} |")
    if a.layers:
        layer = -1
        for n, us in token:
            if n == "pk_center_init":
                layer += 1
                print(f"\nlayer {layer}:", end="")
            if n.startswith("pk_") and layer >= 0:
                print(f" {n[3:]} {us:.1f}", end="")
        print()


if __name__ == "__main__":
    main()
