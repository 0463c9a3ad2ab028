#!/usr/bin/env bash
# Runs the benchmarks (one run, all ways side by side) and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_REPORT=1 go test -count=1 -run TestReport -v ./bench/
go test -count=1 -run '^$' -bench . -benchtime 2000x ./bench/
