#!/usr/bin/env python3
"""Prints llama-bench JSON results (-o json) as markdown table rows: depth, tokens
generated, tokens/s (mean ± stddev over the repetitions).

    bench_json_table.py bench-dense.json [...]
"""
import json
import sys

for path in sys.argv[1:]:
    for r in json.load(open(path)):
        print(f"| {r['n_depth']} | tg{r['n_gen']} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} |")
