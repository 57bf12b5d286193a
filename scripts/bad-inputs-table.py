#!/usr/bin/env python3
"""Writes docs/ROBUSTNESS.md's table of bad inputs from the C API test's own report:

  cargo test --release --test c_api c_program -- --nocapture | scripts/bad-inputs-table.py

Each "bad input N: CASE -> status S: FUNCTION: MESSAGE" line becomes a row (number, entry
point, case, status name, message after the function name); "-> no-op:" lines (a double
free) keep their words; pointers print as 0x… (they differ from run to run). The rows go
to stdout, to paste over the table."""

import re
import sys

STATUS = {0: "PARISKV_OK", 1: "PARISKV_ERR_INVALID_ARGUMENT", 2: "PARISKV_ERR_UNSUPPORTED",
          3: "PARISKV_ERR_OUT_OF_MEMORY", 4: "PARISKV_ERR_INTERNAL", 5: "PARISKV_ERR_CUDA"}
LINE = re.compile(r"^bad input +(\d+): (.*?) +-> (?:status (\d+)|(no-op)): (pariskv_\w+): (.*)$")

print("| # | entry point | bad input | status | message (after the function name) |")
print("|---|---|---|---|---|")
for line in sys.stdin:
    m = LINE.match(line.rstrip("\n"))
    if m:
        n, case, status, noop, fn, msg = m.groups()
        state = "no-op" if noop else STATUS.get(int(status), status)
        msg = re.sub(r"0x[0-9a-f]{8,}", "0x…", msg).replace("|", "/")
        print(f"| {n} | `{fn}` | {case} | {state} | {msg} |")
