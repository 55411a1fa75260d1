#!/usr/bin/env bash
# Prepares benchmark runs: installs the reference server's npm packages
# (socket.io 4.8 on Express 4, from package-lock.json) and builds `nightjar` and
# `nightjar-bench` in release mode. Safe to run again.
#
# Benchmarks need many open files: nightjar-bench raises its own soft limit to
# 65536 when the hard limit allows it (root may raise the hard limit too), and
# the servers it starts inherit the limit. Otherwise run `ulimit -n 65536` first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "bench/setup.sh: npm ci in bench/reference" >&2
(cd bench/reference && npm ci --no-audit --no-fund --loglevel=error)

echo "bench/setup.sh: cargo build --release -p nightjar -p nightjar-bench" >&2
cargo build --release -p nightjar -p nightjar-bench
