#!/usr/bin/env bash
# The project's test command (README "Test"): formatting, lints, then every
# unit, conformance and integration test.
#
# Usage: scripts/test.sh    (as root, the network-namespace tests run too)
#
# Environment:
#   MISP_GUARD_CONFORMANCE_DIR  misp-guard conformance data; when set, a
#                               missing folder fails the run (CI sets it).
#                               Default: ../shared/conformance/misp-guard.
#   MISP_GW_REQUIRE_NETNS=1     network-namespace tests fail instead of
#                               skipping when they cannot run (CI, as root).
#   MISP_GW_REQUIRE_REALMISP=1  tests/real_misp.rs fails instead of skipping
#                               when no real MISP answers (CI).
#   MISP_REAL_URL, MISP_REAL_KEY  that MISP (default: the files of
#                               ../shared/realmisp's default instance).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --lib --bins --tests --locked
