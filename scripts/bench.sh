#!/usr/bin/env bash
# Benchmarks, side by side with a direct connection (issue "Performance"):
#   1. engine: inspection MB/s per core and peak heap, 1/10/50 MB events
#   2. data path: the gateway binary (explicit mode, TLS both legs) vs a
#      direct client->server TLS connection on loopback: small keep-alive
#      requests with 1/8/64 clients (req/s, p50/p99, gateway CPU), a new
#      TLS connection per request (8 clients), 1/10/50 MB pushes and pulls
#      (time, added time, peak RSS), pushes blocked at their first and at
#      their last attribute (time from the request head to the 403),
#      latency during a big push
#   3. as root (ip, nft): the same with the gateway behind nftables
#      REDIRECT in its own network namespace (client, gateway, server in
#      three namespaces this script's bench creates and deletes), and a
#      third column: nginx (/usr/sbin/nginx, if installed) as a TLS
#      reverse proxy beside the gateway, captured the same way
# Bounded: every loop has a count and a time budget; < 10 min on 2 cores.
# Loopback and own namespaces only. Writes target/bench/results.json.
#
# Usage: scripts/bench.sh [--quick] [--transfers-only | --small-only]
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
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
rm -f target/bench/datapath-transparent.json
if [[ "$(id -u)" == 0 ]] && command -v ip >/dev/null && command -v nft >/dev/null; then
    echo
    cargo bench --quiet --bench datapath -- --transparent "$@"
fi
python3 - <<'PY'
import json, platform, os
# The load average at the end: other work on the machine shows in every row.
out = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                   "loadavg": os.getloadavg()},
       "engine": json.load(open("target/bench/engine.json")),
       "datapath": json.load(open("target/bench/datapath.json"))}
if os.path.exists("target/bench/datapath-transparent.json"):
    out["datapath_transparent"] = json.load(open("target/bench/datapath-transparent.json"))
json.dump(out, open("target/bench/results.json", "w"), indent=2)
print("\nresults: target/bench/results.json")
PY
