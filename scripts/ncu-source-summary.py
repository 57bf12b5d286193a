#!/usr/bin/env python3
"""Summarises Nsight Compute's source page (`ncu -i REPORT --page source --print-source sass
--csv`, as scripts/run-gpu-lib.sh PROFILE=source writes it): for each kernel profiled, its
warp instructions executed (and per SM scheduler, which bounds its time from below where it
issues one a cycle), its warp-stall samples by reason, and its SASS instructions with the
most samples. Samples are taken per SM at a fixed interval, so a kernel's samples add up its
SMs' busy time, not its warps'.

    scripts/ncu-source-summary.py SOURCE.csv [--sms 132] [--top 6] [--kernel NAME]
"""
import argparse
import collections
import csv
import re
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def kernels(path):
    """(name, rows as dicts) for each kernel section of the source page, in order."""
    name, header, rows = None, None, []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if row and row[0] == "Kernel Name":
                if name is not None:
                    yield name, rows
                name, header, rows = row[1], None, []
            elif name is not None and row:
                if header is None:
                    header = row
                else:
                    rows.append(dict(zip(header, row)))
    if name is not None:
        yield name, rows


def count(value):
    return int(value.replace(",", "")) if value else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--sms", type=int, default=132, help="SMs of the GPU (H100 SXM 132)")
    ap.add_argument("--top", type=int, default=6, help="instructions listed per kernel")
    ap.add_argument("--kernel", help="only kernels whose name contains this")
    args = ap.parse_args()
    found = False
    for name, rows in kernels(args.csv):
        if args.kernel and args.kernel not in name:
            continue
        found = True
        stalls = [k for k in rows[0] if k.startswith("stall_") and "(Not" not in k] if rows else []
        by_reason = collections.Counter()
        for r in rows:
            for k in stalls:
                by_reason[k[len("stall_"):]] += count(r[k])
        samples = sum(count(r[SAMPLES]) for r in rows)
        executed = sum(count(r[EXECUTED]) for r in rows)
        mix = ", ".join(f"{k} {100 * v // max(samples, 1)}%" for k, v in by_reason.most_common(5))
        print(f"{name}: {executed:,} warp instructions ({executed / args.sms / 4:,.0f} per SM scheduler), "
              f"{samples} samples: {mix}")
        for i, r in sorted(enumerate(rows), key=lambda x: -count(x[1][SAMPLES]))[: args.top]:
            reasons = sorted(((count(r[k]), k[len("stall_"):]) for k in stalls), reverse=True)[:2]
            why = ", ".join(f"{k} {v}" for v, k in reasons if v)
            source = re.sub(r"\s+", " ", r["Source"].strip())[:56]
            print(f"  #{i:<5} {source:56s} {count(r[SAMPLES]):5d}  {why}  (executed {count(r[EXECUTED]):,})")
    if not found:
        sys.exit(f"no kernel in {args.csv}" + (f" matches {args.kernel}" if args.kernel else ""))


if __name__ == "__main__":
    main()
