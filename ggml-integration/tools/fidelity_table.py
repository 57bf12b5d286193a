#!/usr/bin/env python3
"""Markdown tables from pariskv-fidelity JSON reports (--json), one row per report and layer:
recall@K1 and its coarse recall, the attention mass covered at K2 beside the exact top-K2's,
and what a step reads at K2 (zone, candidates reranked, rows rescored exactly, MB per KV
head). A label per report: FILE.json:LABEL.

  fidelity_table.py [--k1 256] [--k2 2048] A.json:label B.json:label ...
"""

import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--k1", type=int, default=256)
    ap.add_argument("--k2", type=int, default=2048)
    a = ap.parse_args()
    print(f"| setting | layer | recall@{a.k1} (coarse) | mass@{a.k2} / exact | gap | zone | "
          f"candidates | rescored | MB read per KV head |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in a.reports:
        path, _, label = spec.partition(":")
        rows = json.load(open(path))
        layers = sorted({r["layer"] for r in rows})
        by = {(r["layer"], r["k"]): r for r in rows}
        for layer in layers + ["all"]:
            pick = layers if layer == "all" else [layer]
            r1 = [by[(l, a.k1)] for l in pick]
            r2 = [by[(l, a.k2)] for l in pick]
            mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
            m, mx = mean(r2, "mass"), mean(r2, "mass_exact")
            name = f"**{label}**" if layer == "all" else label
            print(f"| {name} | {layer} | {mean(r1, 'recall'):.3f} ({mean(r1, 'coarse_recall'):.3f}) | "
                  f"{m:.3f} / {mx:.3f} | {mx - m:.3f} | {mean(r2, 'zone'):.0f} | {mean(r2, 'candidates'):.0f} | "
                  f"{mean(r2, 'refined'):.0f} | {mean(r2, 'bytes') / 1e6:.2f} |")


if __name__ == "__main__":
    main()
