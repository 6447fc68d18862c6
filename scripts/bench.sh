#!/usr/bin/env bash
# Benchmarks, side by side with a direct connection (issue "Performance"):
#   1. engine: inspection MB/s per core and peak heap, 1/10/50 MB events
#   2. data path: the gateway binary (explicit mode, TLS both legs) vs a
#      direct client->server TLS connection on loopback: small keep-alive
#      requests with 1/8/64 clients (req/s, p50/p99, gateway CPU) and
#      1/10/50 MB pushes (time, MB/s, gateway peak RSS)
# Bounded: every loop has a count and a time budget; < 10 min on 2 cores.
# Loopback only. Writes target/bench/results.json and prints the tables.
#
# Usage: scripts/bench.sh [--quick]
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

cd "$(dirname "$0")/.."
mkdir -p target/bench
echo "== building (release)"
cargo bench --no-run --quiet 2>/dev/null || cargo bench --no-run
echo
echo "== engine"
cargo bench --quiet --bench engine -- "$@"
echo
echo "== data path (gateway vs direct, loopback)"
cargo bench --quiet --bench datapath -- "$@"
python3 - <<'PY'
import json, platform, os
out = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
       "engine": json.load(open("target/bench/engine.json")),
       "datapath": json.load(open("target/bench/datapath.json"))}
json.dump(out, open("target/bench/results.json", "w"), indent=2)
print("\nresults: target/bench/results.json")
PY
