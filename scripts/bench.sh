#!/usr/bin/env bash
# Runs the benchmark reports (each compares the ways side by side in one run) and go test -bench.
# Results are written up, as ratios, in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_REPORT=1 go test -count=1 -run 'TestReport' -v -timeout 30m ./bench/ | grep -E 'ratio|Vm|---|ok|FAIL'
go test -count=1 -run '^$' -bench . -benchtime 2000x ./bench/ ./internal/registry/
