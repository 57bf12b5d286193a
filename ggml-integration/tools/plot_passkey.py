#!/usr/bin/env python3
"""The passkey grid of a `passkey_sweep.py --json` run as a PNG: one panel per setting,
prompt length against depth, green where the answer is the key, red where not.

  plot_passkey.py RESULTS.json OUT.png [--title TEXT]
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    rows = json.load(open(a.results))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    lengths = sorted({r["tokens"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, len(settings), figsize=(2.6 * len(settings), 2.2 + 0.35 * len(lengths)), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        grid = [[next((float(r["right"]) for r in rows if r["setting"] == setting and r["tokens"] == n
                       and r["depth"] == d), float("nan")) for d in depths] for n in lengths]
        ax.imshow(grid, cmap=ListedColormap(["#d9534f", "#5cb85c"]), vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
        ax.set_yticks(range(len(lengths)), [f"{n // 1000}K" for n in lengths])
        ax.set_xlabel("depth")
        ax.set_title(setting.replace("--pariskv-", "").replace(" --", ", "), fontsize=8)
    axes[0][0].set_ylabel("prompt tokens")
    fig.suptitle(a.title)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    main()
