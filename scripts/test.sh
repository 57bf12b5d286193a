#!/usr/bin/env bash
# The project's test command: every Rust test (unit, recall, dense equivalence, index,
# header freshness) and the C program against include/pariskv.h and libpariskv.a.
# Needs cargo and a C/C++ compiler (cc, c++); .ci/run installs them where missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-targets "$@"
# Print the measured recall table into the log (the floors are asserted above).
cargo test --release --test recall -- --nocapture --test-threads 1 2>&1 | grep -E '(clustered|outliers)[^:]* seed [0-9]+ k'
