#!/usr/bin/env python3
"""Decode speed against context depth from llama-bench results, markdown tables (-o md) or
JSON (-o json, files ending in .json), as a PNG with one line per mode: dense (pkt 0),
ParisKV with K/V in GPU memory (pkt > 0), ParisKV offload (pkt > 0, pko 1), stock
llama.cpp with the K/V in host memory (pkt 0, nkvo 1; JSON only), and ParisKV with one
retrieval per KV head (`--pariskv-gqa mean`, the paper's configuration; JSON only). Rows
are tg tests ("tg128 @ d32768"); a table's pkt/pko columns, when absent, take llama-bench's
defaults (0). Prints the points and the ratios to dense.

  plot_bench.py OUT.png RESULTS [RESULTS ...] [--title TEXT] [--log-y]
"""

import argparse
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODES = [
    "dense (flash attention)",
    "ParisKV, K/V in GPU memory",
    "ParisKV offload, K/V in host RAM",
    "stock -nkvo, K/V in host RAM",
    "ParisKV, group-mean query (paper), K/V in GPU memory",
]


def mode_of(pkt, pko, nkvo=False, mean=False):
    if pkt == 0:
        return MODES[3] if nkvo else MODES[0]
    if mean and not pko:
        return MODES[4]
    return MODES[2] if pko else MODES[1]


def json_rows(path):
    """The same from llama-bench's JSON: one record per test."""
    for r in json.load(open(path)):
        if r.get("n_prompt", 0) or not r.get("n_gen", 0):
            continue
        mode = mode_of(r.get("pariskv_topk", 0), r.get("pariskv_offload", False), r.get("no_kv_offload", False),
                       r.get("pariskv_gqa") == "mean")
        yield mode, r["n_depth"], r["avg_ts"], r["stddev_ts"]


def rows(path):
    """(mode, depth, tok/s, stddev) of each tg row of the tables in a file."""
    header = None
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "test" in cells and "t/s" in cells:
            header = cells
            continue
        if header is None or len(cells) != len(header) or cells[0].startswith("-"):
            continue
        r = dict(zip(header, cells))
        m = re.fullmatch(r"tg\d+(?: @ d(\d+))?", r["test"])
        if not m:
            continue
        mode = mode_of(int(r.get("pkt", 0)), int(r.get("pko", 0)))
        ts, sd = (float(x) for x in r["t/s"].split("±"))
        yield mode, int(m.group(1) or 0), ts, sd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("tables", nargs="+")
    ap.add_argument("--title", default="")
    ap.add_argument("--log-y", action="store_true", help="tok/s on a log scale (modes far apart)")
    a = ap.parse_args()
    points = {}
    for path in a.tables:
        for mode, depth, ts, sd in (json_rows if path.endswith(".json") else rows)(path):
            points.setdefault(mode, {})[depth] = (ts, sd)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for mode in MODES:
        if mode not in points:
            continue
        depths = sorted(points[mode])
        ax.errorbar([max(d, 1024) for d in depths], [points[mode][d][0] for d in depths],
                    yerr=[points[mode][d][1] for d in depths], marker="o", capsize=3, label=mode)
        for d in depths:
            ratio = points[mode][d][0] / points[MODES[0]][d][0] if d in points.get(MODES[0], {}) else None
            print(f"{mode:<34} depth {d:>8}: {points[mode][d][0]:8.2f} tok/s"
                  + (f"  ({ratio:.2f}x dense)" if ratio and mode != MODES[0] else ""))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context depth (tokens; depth 0 drawn at 1K)")
    ax.set_ylabel("decode tok/s (tg128)")
    if a.log_y:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(a.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    main()
