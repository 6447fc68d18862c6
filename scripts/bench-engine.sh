#!/usr/bin/env bash
# Engine benchmark: inspection throughput (MB/s per core) and peak heap for
# generated MISP events of 1, 10 and 50 MB, allowed and blocked at the end,
# push and pull. Bounded: a few minutes in release on a 2-core machine.
#
# Usage: scripts/bench-engine.sh [--quick] [--only TEXT]
#   --quick   only the 1 MB rows (smoke run)
#   --only T  only the rows whose name holds T (e.g. "as it arrives")
# Results: printed table and target/bench/engine.json
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

cd "$(dirname "$0")/.."
cargo bench --bench engine -- "$@"
