#!/usr/bin/env bash
# High availability, shown in throw-away network namespaces (as root): two
# routers r1 and r2 on both compartments (scripts/demo/ha-topology.sh),
# each running a gateway behind the shipped nftables rules and keepalived
# with contrib/keepalived/keepalived.conf; the compartments' gateway
# addresses are VRRP virtual addresses. The secret MISP pushes and pulls
# through the master r1, and straight to the backup r2, which filters just
# the same (a host route); r1's gateway is killed (SIGKILL), its readiness
# check fails, r2 takes both addresses and sync resumes through r2, with
# MISP-style retries. A tlp:red push is tried every 0.25 s before, during
# and after the switch and must never be stored. r1's gateway comes back
# and r1 stays backup (no preemption). It prints one line
#   failover: sync resumed after N ms
# (from the kill to the first allowed push stored through r2), exits 0 only
# if every check held, and removes every namespace, process and file it
# made, also on failure. Nothing touches the host's own network.
#
# Usage: sudo scripts/ha-demo.sh
#   (needs cargo, curl, python3, openssl, iproute2, nftables, keepalived)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."
# Root, cargo (as the invoking user under sudo: `as_user`) and the tools.
source scripts/demo/preflight.sh
preflight ha-demo curl python3 openssl ip nft keepalived

prefix=mgw-ha-$$
sec=$prefix-secret res=$prefix-restricted
work=$(mktemp -d /tmp/misp-guard-gw-ha.XXXXXX)
declare -A gw_pid ka_pid
other_pids=()
cleanup() {
    for p in "${ka_pid[@]}" "${gw_pid[@]}" "${other_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/demo/ha-topology.sh down "$prefix"
    rm -rf "$work"
    echo "== cleaned up: namespaces $prefix-*, their rules and processes, $work"
}
trap cleanup EXIT
# An interrupted demo ends through exit, so the cleanup runs.
trap 'exit 130' INT
trap 'exit 143' TERM
failures=0
check() { # DESCRIPTION CONDITION...
    local what=$1
    shift
    if "$@"; then echo "  ok: $what"; else echo "  FAILED: $what"; failures=$((failures + 1)); fi
}
now_ms() { date +%s%3N; }

echo "== building"
"${as_user[@]}" cargo build --release --quiet
gw=$PWD/target/release/misp-guard-gw

echo "== two routers in namespaces $prefix-{r1,r2,sw,secret,restricted}"
scripts/demo/ha-topology.sh up "$prefix"

echo "== certificates: the gateway CA (the same on both routers), each MISP server's own"
# The keepalived scripts run as nobody: it must reach them and its log.
chmod 755 "$work"
"$gw" ca --out "$work/ca" >/dev/null
server_cert() { scripts/demo/server-cert.sh "$gw" "$work" "$1" "$2"; }
server_cert misp.secret.example 192.0.2.10
server_cert misp.restricted.example 198.51.100.10

echo "== policy: config.sample.json with this demo's certificates, readiness on 127.0.0.1:9464"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
config = json.load(open("config.sample.json"))
config["gateway"]["tls"] = {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "use_system_roots": False}
config["gateway"]["instances"] = {
    "misp_secret": {"upstream_ca": "misp.secret.example-ca/ca.crt"},
    "misp_restricted": {"upstream_ca": "misp.restricted.example-ca/ca.crt"}}
# The router's loopback: keepalived's check asks it there.
config["gateway"]["metrics"] = {"listen": "127.0.0.1:9464"}
# Every allowed exchange in the gateway logs (printed when a check fails).
config["gateway"]["log_allowed"] = "info"
json.dump(config, open(f"{work}/config.sample.json", "w"), indent=2)
PY
config=$work/config.sample.json
"$gw" nft --config "$config" --mode redirect | cmp -s - nftables/redirect.nft ||
    { echo "ha-demo: nftables/redirect.nft does not match config.sample.json" >&2; exit 1; }

echo "== keepalived: contrib/keepalived installed as a package would (root-owned scripts)"
install -d -m 755 "$work/keepalived"
install -m 755 contrib/keepalived/misp-guard-gw-ready.sh contrib/keepalived/misp-guard-gw-notify.sh \
    "$work/keepalived/"
sed -e "s|^\$MGW_SCRIPTS=.*|\$MGW_SCRIPTS=$work/keepalived|" \
    -e "s|^\$MGW_LOG=.*|\$MGW_LOG=$work/vrrp-\${ROUTER}.log|" \
    contrib/keepalived/keepalived.conf >"$work/keepalived.conf.in"
for r in r1 r2; do
    sed "s|\${ROUTER}|$r|" "$work/keepalived.conf.in" >"$work/keepalived-$r.conf"
    install -m 666 /dev/null "$work/vrrp-$r.log"
    # keepalived 2.2.7's config test ends killed by its own SIGTERM whatever
    # it found (fixed in 2.2.8): what it printed decides.
    # (An inner shell, so that the shell's own "Terminated" is not shown.)
    bash -c '"$@" 2>"$0"; true' "$work/config-test" \
        ip netns exec "$prefix-$r" keepalived -t -f "$work/keepalived-$r.conf" -i "$r" 2>/dev/null
    if [[ -s "$work/config-test" ]]; then
        cat "$work/config-test" >&2
        echo "ha-demo: keepalived refuses the configuration of $r" >&2
        exit 1
    fi
done

start_gateway() { # ROUTER
    ip netns exec "$prefix-$1" env RUST_LOG=info "$gw" run --config "$config" --nftables redirect \
        --audit-log "$work/audit-$1.jsonl" 2>>"$work/gw-$1.log" &
    gw_pid[$1]=$!
}
ready() { ip netns exec "$prefix-$1" curl -fsS --max-time 1 -o /dev/null http://127.0.0.1:9464/readyz 2>/dev/null; }
wait_for() { # SECONDS COMMAND...: polls every 0.1 s
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@"; do
        (($(now_ms) < deadline)) || return 1
        sleep 0.1
    done
}
holds() { # ROUTER: holds both virtual addresses
    ip -n "$prefix-$1" -4 -o addr show dev eth0.10 | grep -q ' 192\.0\.2\.1/' &&
        ip -n "$prefix-$1" -4 -o addr show dev eth0.20 | grep -q ' 198\.51\.100\.1/'
}
holds_none() { ! ip -n "$prefix-$1" -4 -o addr show | grep -Eq ' (192\.0\.2\.1|198\.51\.100\.1)/'; }
in_state() { tail -n 1 "$work/vrrp-$1.log" | grep -q "is now $2"; }
start_keepalived() { # ROUTER
    ip netns exec "$prefix-$1" keepalived -n -l -D -G -P -i "$1" -f "$work/keepalived-$1.conf" \
        -p "$work/keepalived-$1.pid" -r "$work/vrrp-$1.pid" >"$work/keepalived-$1.out" 2>&1 &
    ka_pid[$1]=$!
}

echo "== each router: shipped rules (scripts/apply-nftables.sh) and a gateway keeping them"
for r in r1 r2; do
    ip netns exec "$prefix-$r" scripts/apply-nftables.sh --mode redirect --state-dir "$work/rules-$r" >/dev/null
    start_gateway "$r"
done
for r in r1 r2; do
    wait_for 10 ready "$r" || { cat "$work/gw-$r.log" >&2; echo "ha-demo: gateway $r not ready" >&2; exit 1; }
done
ip netns exec "$sec" python3 scripts/demo/misp_server.py misp.secret.example 192.0.2.10 443 \
    "$work/misp.secret.example.crt" "$work/misp.secret.example.key" >"$work/secret.log" &
other_pids+=($!)
ip netns exec "$res" python3 scripts/demo/misp_server.py misp.restricted.example 198.51.100.10 443 \
    "$work/misp.restricted.example.crt" "$work/misp.restricted.example.key" >"$work/restricted.log" &
other_pids+=($!)

echo "== keepalived: r1 first (priority 150), then r2 (100)"
start_keepalived r1
wait_for 15 holds r1 || { cat "$work/keepalived-r1.out" >&2; echo "ha-demo: r1 did not become master" >&2; exit 1; }
start_keepalived r2
wait_for 15 in_state r2 BACKUP || { cat "$work/keepalived-r2.out" >&2; echo "ha-demo: r2 not backup" >&2; exit 1; }
echo "  r1 is master (holds 192.0.2.1 and 198.51.100.1), r2 is backup"

# A MISP server's request as its sync client sends it: no proxy settings,
# the remote's name resolved to its address, the gateway CA trusted. Prints
# the HTTP status, or what the client saw when no answer came.
misp() { # CURL-ARGS...
    local rc=0 code
    code=$(ip netns exec "$sec" curl -sS --noproxy '*' --connect-timeout 1 --max-time 2 \
        --cacert "$work/ca/ca.crt" --resolve misp.restricted.example:443:198.51.100.10 \
        -H "Content-Type: application/json" -H "Authorization: demo-key" \
        -o /dev/null -w "%{http_code}" "$@" 2>/dev/null) || rc=$?
    case "$rc" in
        0) echo "$code" ;;
        7) echo refused ;;
        28) echo timeout ;;
        35 | 52 | 56) echo reset ;;
        *) echo "curl-$rc" ;;
    esac
}
event() { # UUID TAG
    printf '{"Event": {"uuid": "%s", "info": "ha push %s", "distribution": "1", "Tag": [{"name": "%s"}],
      "Attribute": [{"type": "domain", "category": "Network activity", "value": "bad.example",
                     "Tag": [{"name": "tlp:green"}]}], "Object": []}}' "$1" "$2" "$2"
}
allowed_uuid() { printf '5f0c1a00-0000-4000-8000-%012d' "$1"; }
red_uuid() { printf '5f0c2ed0-0000-4000-8000-%012d' "$1"; }
declare -A seen
# MISP's push of one event, retried as MISP's next sync run would: is it
# there already (HEAD, its answer may have been lost), else add it. Sets
# `delivered_at` (ms) and counts what the client saw.
deliver() { # UUID DEADLINE-SECONDS
    local uuid=$1 deadline=$(($(now_ms) + $2 * 1000)) got
    while (($(now_ms) < deadline)); do
        got=$(misp -I "https://misp.restricted.example/events/view/$uuid")
        if [[ "$got" == 200 ]]; then delivered_at=$(now_ms); return 0; fi
        if [[ "$got" == 404 ]]; then
            got=$(misp --data-binary "$(event "$uuid" tlp:green)" \
                https://misp.restricted.example/events/add/metadata:1)
            if [[ "$got" == 200 ]]; then delivered_at=$(now_ms); return 0; fi
        fi
        seen[$got]=$((${seen[$got]:-0} + 1))
        sleep 0.1
    done
    return 1
}
pull() { misp https://misp.restricted.example/events/view/385283a1-b5e0-4e10-a532-dce11c365a56; }
# The router's audit trail names the uuids of every allowed push it carried
# (written by a thread of its own, possibly just after the answer).
audited() { # ROUTER UUID
    grep -F '"path":"/events/add/metadata:1"' "$work/audit-$1.jsonl" | grep -F "\"$2\"" |
        grep -Fq '"decision":"allow"'
}
carried() { wait_for 3 audited "$@"; }

echo
echo "== 1. through the master r1: an allowed push, a tlp:red push, a pull"
check "allowed push 1 stored" deliver "$(allowed_uuid 1)" 10
check "r1 carried it" carried r1 "$(allowed_uuid 1)"
check "tlp:red push refused (403)" test "$(misp --data-binary "$(event "$(red_uuid 0)" tlp:red)" \
    https://misp.restricted.example/events/add/metadata:1)" == 403
check "pull answered 200" test "$(pull)" == 200

echo
echo "== 1b. the backup r2 filters too: sync sent straight to it (a host route via 192.0.2.3)"
ip -n "$sec" route add 198.51.100.10/32 via 192.0.2.3
check "tlp:red push refused (403) by r2" test "$(misp --data-binary "$(event "$(red_uuid 999999)" tlp:red)" \
    https://misp.restricted.example/events/add/metadata:1)" == 403
check "allowed push 5 stored through r2" deliver "$(allowed_uuid 5)" 10
check "r2 carried it" carried r2 "$(allowed_uuid 5)"
ip -n "$sec" route del 198.51.100.10/32
check "r1 still holds both virtual addresses" holds r1

# tlp:red pushes all along: before, during and after the switch.
(
    i=1
    while [[ ! -e "$work/red.stop" ]]; do
        tried=$(now_ms)
        got=$(misp --data-binary "$(event "$(red_uuid "$i")" tlp:red)" \
            https://misp.restricted.example/events/add/metadata:1)
        echo "$tried $got" >>"$work/red.log"
        i=$((i + 1))
        sleep 0.25
    done
) &
red_pid=$!
other_pids+=("$red_pid")
sleep 1

echo
echo "== 2. r1's gateway is killed (SIGKILL); sync is retried until it goes through r2"
seen=()
killed_at=$(now_ms)
kill -KILL "${gw_pid[r1]}"
wait "${gw_pid[r1]}" 2>/dev/null || true
unset 'gw_pid[r1]'
delivered_at=
check "allowed push 2 stored after retries" deliver "$(allowed_uuid 2)" 30
if [[ -n "$delivered_at" ]]; then
    failover_ms=$((delivered_at - killed_at))
    what=""
    for k in "${!seen[@]}"; do what+=" $k=${seen[$k]}"; done
    echo "  the client saw while retrying:${what:- nothing but success}"
fi
check "r2 carried it" carried r2 "$(allowed_uuid 2)"
check "r2 holds both virtual addresses" holds r2
check "r1 holds none" holds_none r1
check "r1 reports FAULT" in_state r1 FAULT
resumed_at=${delivered_at:-$(now_ms)}

echo
echo "== 3. through r2: an allowed push, a pull"
check "allowed push 3 stored" deliver "$(allowed_uuid 3)" 10
check "r2 carried it" carried r2 "$(allowed_uuid 3)"
check "pull answered 200" test "$(pull)" == 200

echo
echo "== 4. r1's gateway comes back: r1 is a backup again, r2 stays master (no preemption)"
start_gateway r1
check "r1's gateway ready" wait_for 10 ready r1
check "r1 reports BACKUP" wait_for 10 in_state r1 BACKUP
sleep 2
check "r2 still holds both virtual addresses" holds r2
check "allowed push 4 stored" deliver "$(allowed_uuid 4)" 10
check "r2 carried it" carried r2 "$(allowed_uuid 4)"
sleep 0.5
touch "$work/red.stop"
wait "$red_pid" 2>/dev/null || true

echo
echo "== what arrived"
for n in 1 2 3 4 5; do
    check "allowed push $n stored exactly once" \
        test "$(grep -c "stored event $(allowed_uuid "$n")" "$work/restricted.log")" == 1
done
red_total=$(wc -l <"$work/red.log")
red_before=$(awk -v t="$killed_at" '$1 < t' "$work/red.log" | wc -l)
red_during=$(awk -v a="$killed_at" -v b="$resumed_at" '$1 >= a && $1 < b' "$work/red.log" | wc -l)
red_after=$(awk -v t="$resumed_at" '$1 >= t' "$work/red.log" | wc -l)
echo "  tlp:red pushes: $red_total ($red_before before, $red_during during, $red_after after the switch);" \
    "answers: $(cut -d' ' -f2 "$work/red.log" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')"
check "tlp:red tried before, during and after the switch" \
    test "$red_before" -gt 0 -a "$red_during" -gt 0 -a "$red_after" -gt 0
check "no tlp:red push answered 200" test "$(awk '$2 == 200' "$work/red.log" | wc -l)" == 0
check "no tlp:red event stored" test "$(grep -c 'stored event 5f0c2ed0' "$work/restricted.log")" == 0

echo
echo "== VRRP transitions (contrib/keepalived/misp-guard-gw-notify.sh)"
for r in r1 r2; do sed "s/^/  $r: /" "$work/vrrp-$r.log"; done
echo
if [[ -n "${failover_ms:-}" ]]; then
    echo "failover: sync resumed after $failover_ms ms"
fi
if ((failures > 0)); then
    for r in r1 r2; do
        echo "== gateway log of $r"
        sed 's/^/  /' "$work/gw-$r.log"
    done
    echo "ha-demo: $failures check(s) FAILED" >&2
    exit 1
fi
echo "ha-demo: every check held"
