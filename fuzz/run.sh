#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) on the nightly toolchain.
# A crash input is saved by libFuzzer under fuzz/artifacts/<target>/: copy it into
# crates/recall-data/tests/fuzz_regressions/ (or xtask's) as a regression test, then fix.
# Needs: rustup toolchain install nightly; cargo install cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
for target in $(cargo +nightly fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    # Seed corpora: the regression inputs kept so far.
    cp crates/recall-data/tests/fuzz_regressions/"$target"-* "fuzz/corpus/$target/" 2>/dev/null || true
    echo "== $target ($seconds s)"
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536
done
