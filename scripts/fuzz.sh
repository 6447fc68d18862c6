#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz on nightly) for a bounded time
# each, one after the other.
# Usage: scripts/fuzz.sh [SECONDS per target, default 20] [TARGET...]
# Seeds come from fuzz/seeds/<target> (committed, read-only);
# what the fuzzer learns goes to a scratch corpus under fuzz/corpus/ (not
# committed). Prints executions per target; exits non-zero on the first
# crash, leaving the reproducer in fuzz/artifacts/<target>/.
# Exit 3: nightly or cargo-fuzz missing (the caller decides whether that is
# a skip or a failure).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

cd "$(dirname "$0")/../fuzz"

seconds=${1:-20}
shift || true
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: no nightly toolchain (rustup toolchain install nightly); not fuzzing" >&2
    exit 3
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz missing (cargo install --locked cargo-fuzz); not fuzzing" >&2
    exit 3
fi

targets=("$@")
if [[ ${#targets[@]} == 0 ]]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# One build for all targets (the runs below reuse it: same flags), then
# each run bounded by -max_total_time. -s none: no AddressSanitizer; the
# crate forbids unsafe code, so ASan would only slow the build and every
# execution (README "Fuzzing" has the measurements). Optimised (the
# default release profile with debug assertions and overflow checks): a
# --dev build compiles faster but executes far fewer inputs.
# -timeout: one input taking longer than 10 s is reported as a hang.
flags=(-s none)
cargo +nightly fuzz build "${flags[@]}" >/dev/null
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    # The newest artifacts of this target before the run, to name the new one.
    mkdir -p "artifacts/$t"
    before=$(find "artifacts/$t" -type f | sort)
    if ! cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        # The failing input itself, so a CI log alone can reproduce it.
        for f in $(comm -13 <(echo "$before") <(find "artifacts/$t" -type f | sort)); do
            echo "fuzz: $t input $f ($(wc -c <"$f") bytes; base64, then the first 2 KiB as text):" >&2
            base64 -w 0 "$f" | head -c 65536 >&2
            echo >&2
            head -c 2048 "$f" | od -A d -c | head -n 80 >&2
        done
        echo "fuzz: $t FAILED (reproducer in fuzz/artifacts/$t/; cargo +nightly fuzz run ${flags[*]} $t FILE)" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    rm -f "$log"
    echo "fuzz: $t ok: ${execs:-?} executions in ${seconds} s, ${cov:-cov: ?}, corpus $(find "corpus/$t" -type f | wc -l) files"
done
