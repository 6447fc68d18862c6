#!/usr/bin/env bash
# Soak (as root): runs the release gateway for a bounded time on the
# transparent path and checks that it neither errs nor grows. In throw-away
# network namespaces (the demo's VLAN router, scripts/demo/topology.sh) the
# gateway runs in the router behind nftables REDIRECT rules rendered from
# its config; three MISP-like servers (scripts/soak/misp_server.py) store
# pushes and serve pulls. Parallel clients (scripts/soak/client.py) in the
# secret compartment push allowed and tlp:red events and pull allowed and
# blocked ones from two restricted servers; one client in the restricted
# compartment tries the secret server, which it may not reach. SIGHUP
# reloads the gateway every --reload-every seconds. Reports the gateway's
# RSS (VmRSS, VmHWM) and open descriptors at start, after warm-up and at
# the end, requests by kind and answer, latency p50/p90/p99/max, errors.
# Fails on a wrong answer, a refused push stored or an allowed one lost, a
# client error, an error or panic in the gateway's log, a failed reload, or
# growth past the tolerances (RSS end vs after warm-up, descriptors idle at
# the end vs idle at the start). Last line: `soak: N requests, ... ok`.
# Removes every namespace, rule, process and file it made, even on failure.
#
# Usage: sudo scripts/soak.sh [--duration SECONDS (180)] [--clients N (6)]
#          [--rate REQ_PER_S (60)] [--reload-every SECONDS (15)]
#          [--warmup SECONDS (duration/10, 10..120)] [--rss-mib MiB (20)] [--fds N (16)]
#   SOAK_KEEP=1 keeps its work directory (logs, client summaries, metrics).
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
duration=180 clients=6 rate=60 reload_every=15 warmup= rss_tolerance_mib=20 fd_tolerance=16
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --duration) duration=${2:?--duration needs a value}; shift 2 ;;
        --clients) clients=${2:?--clients needs a value}; shift 2 ;;
        --rate) rate=${2:?--rate needs a value}; shift 2 ;;
        --reload-every) reload_every=${2:?--reload-every needs a value}; shift 2 ;;
        --warmup) warmup=${2:?--warmup needs a value}; shift 2 ;;
        --rss-mib) rss_tolerance_mib=${2:?--rss-mib needs a value}; shift 2 ;;
        --fds) fd_tolerance=${2:?--fds needs a value}; shift 2 ;;
        *) usage >&2; exit 2 ;;
    esac
done
for n in "$duration" "$clients" "$rate" "$reload_every" "${warmup:-0}" "$rss_tolerance_mib" "$fd_tolerance"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "soak: '$n' is not a whole number" >&2; exit 2; }
done
(( duration >= 20 && clients >= 1 && reload_every >= 1 )) || { echo "soak: --duration ≥ 20, --clients ≥ 1, --reload-every ≥ 1" >&2; exit 2; }
if [[ -z "$warmup" ]]; then warmup=$(( duration / 10 < 10 ? 10 : (duration / 10 > 120 ? 120 : duration / 10) )); fi
(( warmup < duration )) || { echo "soak: --warmup must be shorter than --duration" >&2; exit 2; }

cd "$(dirname "$0")/.."
# Root, cargo (as the invoking user under sudo: `as_user`) and the tools.
source scripts/demo/preflight.sh
preflight soak curl python3 openssl ip nft

prefix=mgw-soak-$$
rtr=$prefix-rtr sec=$prefix-secret res=$prefix-restricted
work=$(mktemp -d /tmp/misp-guard-gw-soak.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/demo/topology.sh down "$prefix"
    if [[ -n "${SOAK_KEEP:-}" ]]; then echo "kept $work"; else rm -rf "$work"; fi
    echo "== cleaned up: namespaces $prefix-*, their rules and processes, $work"
}
trap cleanup EXIT
# A kill (or Ctrl-C) ends the script through exit, so the cleanup runs too.
trap 'exit 143' TERM
trap 'exit 130' INT

echo "== building (release)"
"${as_user[@]}" cargo build --release --quiet
gw=$PWD/target/release/misp-guard-gw

echo "== router topology in namespaces $prefix-*"
kind=$(scripts/demo/topology.sh up "$prefix")
# A second restricted MISP on the same host: 198.51.100.11.
ip -n "$res" addr add 198.51.100.11/24 dev eth0
echo "  VLAN 10 (secret 192.0.2.10), VLAN 20 (restricted 198.51.100.10 and .11) on one trunk ($kind)"

"$gw" ca --out "$work/ca" >/dev/null
server_cert() { scripts/demo/server-cert.sh "$gw" "$work" "$1" "$2"; }
server_cert misp.secret.example 192.0.2.10
server_cert misp.restricted.example 198.51.100.10
server_cert misp2.restricted.example 198.51.100.11

# config.sample.json's policy, this run's certificates, and a third
# instance (a copy of misp_restricted's rules on .11).
python3 - "$work" <<'PY'
import copy, json, sys
work = sys.argv[1]
config = json.load(open("config.sample.json"))
config["gateway"]["tls"] = {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "use_system_roots": False}
second = copy.deepcopy(config["instances"]["misp_restricted"])
second.update(ip="198.51.100.11", host="misp2.restricted.example", affiliation="soak, second restricted MISP")
config["instances"]["misp_restricted2"] = second
config["gateway"]["instances"] = {
    "misp_secret": {"upstream_ca": "misp.secret.example-ca/ca.crt"},
    "misp_restricted": {"upstream_ca": "misp.restricted.example-ca/ca.crt"},
    "misp_restricted2": {"upstream_ca": "misp2.restricted.example-ca/ca.crt"}}
json.dump(config, open(f"{work}/config.json", "w"), indent=2)
PY
config=$work/config.json
"$gw" check-config --user root --config "$config" >/dev/null

echo "== router: capture rules rendered from the config, the gateway, the servers"
ip netns exec "$rtr" env MISP_GUARD_GW="$gw" scripts/apply-nftables.sh --mode redirect --config "$config" \
    --state-dir "$work/rules-state" >/dev/null
metrics=127.0.0.1:9464
ip netns exec "$rtr" env RUST_LOG=warn "$gw" run --config "$config" --metrics "$metrics" 2>"$work/gw.log" &
gw_pid=$!
pids+=("$gw_pid")
serve() { # NS NAME IP
    touch "$work/stored-$2"
    ip netns exec "$1" python3 scripts/soak/misp_server.py "$2" "$3" 443 "$work/$2.crt" "$work/$2.key" \
        "$work/stored-$2" >"$work/server-$2.log" 2>&1 &
    pids+=($!)
}
serve "$sec" misp.secret.example 192.0.2.10
serve "$res" misp.restricted.example 198.51.100.10
serve "$res" misp2.restricted.example 198.51.100.11
scrape() { ip netns exec "$rtr" curl -sS --max-time 5 "http://$metrics$1"; }
ready=
for _ in $(seq 100); do
    if [[ "$(scrape /readyz 2>/dev/null)" == ready* ]] && (( $(cat "$work"/server-*.log | grep -c listening) == 3 )); then
        ready=1
        break
    fi
    sleep 0.2
done
[[ -n "$ready" ]] || { cat "$work"/gw.log "$work"/server-*.log >&2; echo "soak: gateway or servers did not start" >&2; exit 1; }

# Gateway figures from /proc: VmRSS and VmHWM in KiB, open descriptors.
vm() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$gw_pid/status"; }
fds() { find "/proc/$gw_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
figures() { echo "RSS $(( $(vm VmRSS) / 1024 )) MiB (HWM $(( $(vm VmHWM) / 1024 )) MiB), $(fds) fds"; }
reloads_ok() { scrape /metrics | awk '/^misp_guard_gw_reloads_total\{result="ok"\}/ { print $2 }'; }
# Exchanges the gateway decided, optionally only those with DECISION
# (allow, block); the value is the last field (labels hold spaces).
# Connections refused before any request (endpoint "connection") are
# counted apart: a client sees them closed, not answered.
decided() {
    scrape /metrics | awk -v d="${1:-}" '/^misp_guard_gw_exchanges_total\{/ && !index($0, "endpoint=\"connection\"") && (d == "" || index($0, "decision=\"" d "\"")) { n += $NF }
        END { print n + 0 }'
}
refused_connections() {
    scrape /metrics | awk '/^misp_guard_gw_exchanges_total\{/ && index($0, "endpoint=\"connection\"") { n += $NF }
        END { print n + 0 }'
}
# A labelled counter appears once it counted: absent means 0.
reloads_failed() { scrape /metrics | awk '/^misp_guard_gw_reloads_total\{result="failed"\}/ { n = $2 } END { print n + 0 }'; }

start_rss=$(vm VmRSS) start_fds=$(fds)
echo "== start (idle): $(figures)"
echo "== load: $duration s, $clients sender clients + 1 denied client, ~$rate req/s, SIGHUP every $reload_every s, warm-up $warmup s"

ip netns exec "$sec" timeout --kill-after=10 $((duration + 60)) python3 scripts/soak/client.py --role sender \
    --ca "$work/ca/ca.crt" --seconds "$duration" --threads "$clients" --rate "$rate" --seed $$ \
    --out "$work/client-sender.json" misp.restricted.example=198.51.100.10 misp2.restricted.example=198.51.100.11 \
    2>"$work/client-sender.err" &
sender=$!
pids+=("$sender")
ip netns exec "$res" timeout --kill-after=10 $((duration + 60)) python3 scripts/soak/client.py --role denied \
    --ca "$work/ca/ca.crt" --seconds "$duration" --threads 1 --rate 2 --seed $$ \
    --out "$work/client-denied.json" misp.secret.example=192.0.2.10 2>"$work/client-denied.err" &
denied=$!
pids+=("$denied")

t0=$(date +%s)
sent_reloads=0 warm_rss= warm_fds= peak_fds=0 next_progress=300
while kill -0 "$sender" 2>/dev/null || kill -0 "$denied" 2>/dev/null; do
    sleep 1
    kill -0 "$gw_pid" 2>/dev/null || { tail -n 40 "$work/gw.log" >&2; echo "soak: the gateway died" >&2; exit 1; }
    elapsed=$(( $(date +%s) - t0 ))
    (( elapsed <= duration + 90 )) || { echo "soak: clients still running after $elapsed s" >&2; exit 1; }
    n=$(fds); (( n > peak_fds )) && peak_fds=$n
    if (( elapsed < duration && elapsed >= (sent_reloads + 1) * reload_every )); then
        kill -HUP "$gw_pid"
        sent_reloads=$((sent_reloads + 1))
    fi
    if [[ -z "$warm_rss" ]] && (( elapsed >= warmup )); then
        warm_rss=$(vm VmRSS) warm_fds=$n
        echo "== after warm-up ($elapsed s): $(figures)"
    fi
    if (( elapsed >= next_progress )); then
        echo "   $elapsed s: $(figures), $(decided) exchanges decided, $sent_reloads reloads sent"
        next_progress=$((next_progress + 300))
    fi
done
wait "$sender" || { cat "$work/client-sender.err" >&2; echo "soak: the sender client failed" >&2; exit 1; }
wait "$denied" || { cat "$work/client-denied.err" >&2; echo "soak: the denied client failed" >&2; exit 1; }
# The last reload lands before this reads its counter.
sleep 2
end_rss=$(vm VmRSS) end_hwm=$(vm VmHWM) end_fds=$(fds)
scrape /metrics > "$work/metrics.end"
echo "== end (idle, clients done): $(figures); peak $peak_fds fds under load"

report=$(python3 scripts/soak/report.py --client "$work/client-sender.json" --client "$work/client-denied.json" \
    --stored "misp.secret.example=$work/stored-misp.secret.example" \
    --stored "misp.restricted.example=$work/stored-misp.restricted.example" \
    --stored "misp2.restricted.example=$work/stored-misp2.restricted.example" \
    --gateway-allow "$(decided allow)" --gateway-block "$(decided block)" \
    --gateway-refused "$(refused_connections)") || true
echo "$report"

problems=()
[[ "$(tail -n 1 <<<"$report")" == "verdict: ok" ]] || problems+=("$(tail -n 1 <<<"$report")")
ok=$(reloads_ok) failed=$(reloads_failed)
echo "reloads: $sent_reloads sent, ${ok:-?} ok, ${failed:-?} failed"
[[ "${ok:-}" == "$sent_reloads" && "${failed:-}" == 0 ]] || problems+=("reloads: $sent_reloads sent, ${ok:-?} ok, ${failed:-?} failed")
# RUST_LOG=warn: each refusal is a warning (request blocked, connection
# refused: cannot reach compartment); any other warning or error is not
# something this load should cause.
expected_warning=' WARN (request blocked: |connection refused: [^ ]+ - cannot reach compartment )'
log_errors=$(grep -c -E ' ERROR |panicked' "$work/gw.log" || true)
log_refusals=$(grep -c -E "$expected_warning" "$work/gw.log" || true)
log_other=$(grep -E ' WARN ' "$work/gw.log" | grep -c -v -E "$expected_warning" || true)
echo "gateway log: $log_errors errors, $log_refusals refusal warnings, $log_other other warnings"
# The other kinds of lines, without their timestamps and client ports.
grep -E ' ERROR | WARN |panicked' "$work/gw.log" | grep -v -E "$expected_warning" | sed -E 's/^[^ ]+ +//; s/:[0-9]{4,5}\b/:PORT/g' |
    sort | uniq -c | sort -rn | head -n 10 | sed 's/^/  /' || true
(( log_errors == 0 )) || problems+=("$log_errors errors in the gateway's log")
(( log_other == 0 )) || problems+=("$log_other unexpected warnings in the gateway's log")
rss_growth_kib=$(( end_rss - warm_rss )) fd_growth=$(( end_fds - start_fds ))
echo "growth: RSS $rss_growth_kib KiB after warm-up (tolerance $rss_tolerance_mib MiB), fds $fd_growth idle end vs idle start (tolerance $fd_tolerance)"
(( rss_growth_kib <= rss_tolerance_mib * 1024 )) || problems+=("RSS grew $rss_growth_kib KiB")
(( fd_growth <= fd_tolerance )) || problems+=("fds grew by $fd_growth")

requests=$(sed -n 's/^requests: //p' <<<"$report")
latency=$(sed -n 's/^latency ms: //p' <<<"$report")
summary="soak: ${requests:-0} requests in $duration s, $latency ms, RSS $((start_rss / 1024))→$((end_rss / 1024)) MiB (HWM $((end_hwm / 1024))), fds $start_fds→$end_fds, $sent_reloads reloads"
if (( ${#problems[@]} )); then
    echo "$summary, FAILED: $(IFS=';'; echo "${problems[*]}")"
    exit 1
fi
echo "$summary, ok"
