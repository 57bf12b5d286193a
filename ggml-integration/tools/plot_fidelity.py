#!/usr/bin/env python3
"""Plots of a `pariskv-fidelity --json` report: recall@k and attention mass against k, per
layer and GQA policy (beside the exact top-k's mass), and recall along the sequence.

  plot_fidelity.py REPORT.json OUT_PREFIX [--title TEXT]
  plot_fidelity.py --drift OUT.png --k K REPORT.json:LABEL ...
  plot_fidelity.py --kl OUT.png KL.json           (a kl-vs-dense --json output, or several merged)

The first form writes OUT_PREFIX-vs-k.png and OUT_PREFIX-along.png; the second draws
recall@K along the sequence for several reports (e.g. synthetic caches of several drifts)
in one figure. Needs matplotlib.
"""

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def drift_figure(out, k, reports, title):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for spec in reports:
        path, label = spec.rsplit(":", 1)
        for r in json.load(open(path)):
            if r["k"] != k:
                continue
            pts = r["recall_along"]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if r["gqa"] == "per-head" else "--", marker=".",
                    label=f"{label}, {r['gqa']}")
    ax.set(xlabel="decode position (keys in the index)", ylabel=f"recall@{k}", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def kl_figure(out, path, title):
    rows = json.load(open(path))
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in sorted({r["gqa"] for r in rows}):
        sel = sorted((r for r in rows if r["gqa"] == policy), key=lambda r: r["topk"])
        ax.plot([r["topk"] for r in sel], [r["mean_kl"] for r in sel], "-" if policy == "per-head" else "--",
                marker="o", label=f"{policy}: mean")
        ax.plot([r["topk"] for r in sel], [r["p99_kl"] for r in sel], ":", marker="x", label=f"{policy}: p99")
    ax.set(xscale="log", yscale="log", xlabel="top-k", ylabel="KL(dense || ParisKV), nats")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--kl":
        ap = argparse.ArgumentParser()
        ap.add_argument("--kl", required=True)
        ap.add_argument("--title", default="")
        ap.add_argument("report")
        a = ap.parse_args()
        kl_figure(a.kl, a.report, a.title)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--drift":
        ap = argparse.ArgumentParser()
        ap.add_argument("--drift", required=True)
        ap.add_argument("--k", type=int, required=True)
        ap.add_argument("--title", default="")
        ap.add_argument("reports", nargs="+")
        a = ap.parse_args()
        drift_figure(a.drift, a.k, a.reports, a.title)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report")
    ap.add_argument("out_prefix")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    rows = json.load(open(a.report))
    layers = sorted({r["layer"] for r in rows})
    policies = sorted({r["gqa"] for r in rows})

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for layer in layers:
        for policy in policies:
            sel = sorted((r for r in rows if r["layer"] == layer and r["gqa"] == policy), key=lambda r: r["k"])
            ks = [r["k"] for r in sel]
            style = "-" if policy == "per-head" else "--"
            axes[0].plot(ks, [r["recall"] for r in sel], style, marker="o", label=f"layer {layer}, {policy}")
            axes[1].plot(ks, [r["mass"] for r in sel], style, marker="o", label=f"layer {layer}, {policy}")
            axes[1].plot(ks, [r["mass_exact"] for r in sel], ":", color=axes[1].lines[-1].get_color(), alpha=0.6)
    axes[0].set(xscale="log", xlabel="k", ylabel="recall@k (vs exact top-k, same policy)", ylim=(0, 1.02))
    axes[1].set(xscale="log", xlabel="k", ylabel="softmax mass of the zone covered", ylim=(0, 1.02))
    axes[1].set_title("dotted: the exact top-k's mass", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(a.title)
    fig.tight_layout()
    fig.savefig(f"{a.out_prefix}-vs-k.png", dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    k = max(r["k"] for r in rows if r["k"] <= 256) if any(r["k"] <= 256 for r in rows) else min(r["k"] for r in rows)
    for r in rows:
        if r["k"] != k:
            continue
        pts = r["recall_along"]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if r["gqa"] == "per-head" else "--", marker=".",
                label=f"layer {r['layer']}, {r['gqa']}")
    ax.set(xlabel="decode position (keys in the index)", ylabel=f"recall@{k}", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{a.title}: recall@{k} along the sequence", fontsize=10)
    fig.tight_layout()
    fig.savefig(f"{a.out_prefix}-along.png", dpi=110)


if __name__ == "__main__":
    main()
