#!/usr/bin/env bash
# The CPU path under sanitizers: the library's Rust tests (unit, index, dense equivalence,
# recall) under AddressSanitizer, and the C programs (the whole C ABI with its bad-input
# cases, the README example) under valgrind memcheck, leaks included.
# AddressSanitizer needs rustc's -Zsanitizer, which the stable toolchain accepts with
# RUSTC_BOOTSTRAP=1 (its runtime ships with it); the build goes to target/asan.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "sanitize.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
host=$(rustc -vV | sed -n 's/^host: //p')

echo "sanitize: Rust tests under AddressSanitizer ($host)"
RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
    cargo test --release --target "$host" --lib --test index --test dense_equivalence --test recall

echo "sanitize: the C programs under valgrind memcheck"
PARISKV_C_RUNNER="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --quiet" \
    cargo test --release --test c_api
