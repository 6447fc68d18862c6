#!/usr/bin/env bash
# A real MISP-to-MISP push through the gateway (issue 14, item 7): MISP A
# pushes to MISP B with its own `cake Server push <user> <server> full`,
# through the gateway's explicit listener (A's Proxy.host/Proxy.port). On A:
# an allowed event, a tlp:red event the gateway refuses, then two allowed
# events, a sighting on the third and a note on the fourth. Afterwards it
# reads what B stored and prints one line (--pull: the same data made on B,
# and A pulls it with `cake Server pull`; then A is read):
#   realmisp-sync: push|pull OK|INCOMPLETE|LEAK before=stored refused=absent
#     after1=... after2=... sighting=... note=... gateway-blocks=N push|pull=Ns
#     total=Ns [push-error="MISP's own error, when it stopped early"]
# Exit 1 when anything allowed did not arrive (an event after the refused
# one: MISP stopped its sync at the refusal; the sighting or the note), 2
# when the tlp:red event arrived.
#
# Usage: scripts/realmisp-sync.sh [--pull] [--control]   (as root: runuser, the kit)
#   --pull     A pulls from B instead of pushing to it
#   --control  the gateway blocks nothing: every event, the sighting and the
#              note must then arrive (shows the data and the sync work, so
#              that a missing event in a normal run is due to the refusal)
#
# Both MISPs come from ../shared/realmisp/setup.sh (started if not running):
#   A  /var/tmp/misp-real2  http://127.0.0.6:8086  (DB port 3308, Redis 6381)
#   B  /var/tmp/misp-real   http://127.0.0.5:8085  (the kit's default instance)
# The pushing side is the second instance on purpose: a push sends all of
# A's analyst data and sets A's proxy for every outgoing request, and the
# default instance is shared with other tests (whose data also made MISP's
# analyst-data push fail). B only receives events with fresh uuids.
# A's Proxy settings are cleared and the sync server entry deleted on exit.
#
# Environment:
#   GW_BIN       gateway binary (default target/debug/misp-guard-gw, built if missing)
#   KEEP_LOGS=1  keep the gateway's log and config (path printed)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

CONTROL="" MODE=push
for arg in "$@"; do
    case $arg in
        --control) CONTROL=1 ;;
        --pull) MODE=pull ;;
        *) echo "realmisp-sync: unknown argument $arg (see --help)" >&2; exit 3 ;;
    esac
done
cd "$(dirname "$0")/.."
started=$(date +%s)
KIT=$(cd .. && pwd)/shared/realmisp
A_BASE=/var/tmp/misp-real2 A_URL=http://127.0.0.6:8086
B_BASE=/var/tmp/misp-real B_URL=http://127.0.0.5:8085
A_ENV=(MISP_BASE=$A_BASE MISP_LISTEN=127.0.0.6:8086 MISP_DB_PORT=3308 MISP_REDIS_PORT=6381)

say() { echo "realmisp-sync: $*" >&2; }
die() { say "error: $*"; exit 3; }

env "${A_ENV[@]}" "$KIT/setup.sh" >/dev/null 2>&1 || die "instance A did not start"
"$KIT/setup.sh" >/dev/null 2>&1 || die "instance B did not start"
KA=$(cat "$A_BASE/apikey.txt") KB=$(cat "$B_BASE/apikey.txt")

# rest KEY URL METHOD PATH [BODY] -> JSON answer on stdout; fails on non-2xx.
rest() {
    local key=$1 url=$2 method=$3 path=$4 body=${5:-}
    curl -sS -m 120 --fail-with-body -X "$method" -H "Authorization: $key" \
        -H 'Accept: application/json' -H 'Content-Type: application/json' \
        ${body:+--data-binary "$body"} "$url$path"
}
# jget EXPR: reads JSON on stdin, prints the PHP expression over $j.
jget() { php -r '$j = json_decode(stream_get_contents(STDIN), true); echo '"$1"';'; }
uuid() { cat /proc/sys/kernel/random/uuid; }
cake_a() { runuser -u www-data -- "$A_BASE/src/MISP/app/Console/cake" "$@"; }

# ---- the gateway: A's client address (127.0.0.1, where A's curl comes
# from) in compartment c1, B in c2; tlp:red and distribution 0 blocked.
GW_BIN=${GW_BIN:-target/debug/misp-guard-gw}
[[ -x "$GW_BIN" ]] || cargo build --quiet --locked --bin misp-guard-gw
WORK=$(mktemp -d /tmp/mgw-realmisp-sync.XXXXXX)
GW_PID="" SERVER_ID=""
cleanup() {
    [[ -n "$GW_PID" ]] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    # An empty host turns the proxy off (Proxy.port only takes numbers).
    cake_a Admin setSetting --force Proxy.host "" >/dev/null 2>&1 || true
    [[ -n "$SERVER_ID" ]] && rest "$KA" "$A_URL" POST "/servers/delete/$SERVER_ID" '{}' >/dev/null 2>&1
    if [[ -n "${KEEP_LOGS:-}" ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

blocked='["tlp:red"]'; [[ -n "$CONTROL" ]] && blocked='[]'
rules='"taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": '"$blocked"'},
  "blocked_distribution_levels": ["0"], "blocked_sharing_groups_uuids": [],
  "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []'
cat >"$WORK/config.json" <<EOF
{"allowlist": {"urls": [], "domains": []},
 "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c1", "c2"]}},
 "instances": {
  "misp_a": {"ip": "127.0.0.1", "host": "misp-a.realmisp.test", "port": 8086, "compartment_id": "c1", "affiliation": "", $rules},
  "misp_b": {"ip": "127.0.0.5", "host": "misp-b.realmisp.test", "port": 8085, "compartment_id": "c2", "affiliation": "", $rules}}}
EOF
: >"$WORK/gw.log"
RUST_LOG=info "$GW_BIN" run --config "$WORK/config.json" --explicit 127.0.0.1:0 2>"$WORK/gw.log" &
GW_PID=$!
for _ in $(seq 100); do grep -q ' ready' "$WORK/gw.log" && break; sleep 0.1; done
GW_PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/gw.log" | head -1 | cut -d: -f2)
[[ -n "$GW_PORT" ]] || { cat "$WORK/gw.log" >&2; die "gateway did not start"; }

# ---- the data, on the sending side (A for a push, B for a pull), created
# in sync order (by ascending event id), on behalf of a fresh organisation
# that the server's push or pull rules select, so that nothing else is synced.
if [[ $MODE == push ]]; then
    SK=$KA SU=$A_URL DK=$KB DU=$B_URL
else
    SK=$KB SU=$B_URL DK=$KA DU=$A_URL
fi
ORG=$(uuid) NOW=$(date +%s)
ev() { # ev UUID TAG -> event JSON (published, one attribute)
    echo "{\"Event\":{\"uuid\":\"$1\",\"info\":\"mgw realmisp-sync $2\",\"distribution\":\"3\",
      \"threat_level_id\":\"4\",\"analysis\":\"0\",\"published\":true,\"timestamp\":\"$NOW\",
      \"Orgc\":{\"name\":\"MGW-SYNC-${ORG:0:8}\",\"uuid\":\"$ORG\"},\"Tag\":[{\"name\":\"$2\"}],
      \"Attribute\":[{\"uuid\":\"$3\",\"type\":\"domain\",\"category\":\"Network activity\",
        \"value\":\"${3:0:8}.mgw-sync.example\",\"distribution\":\"5\",\"timestamp\":\"$NOW\"}]}}"
}
declare -A EV ATTR
for name in before refused after1 after2; do EV[$name]=$(uuid) ATTR[$name]=$(uuid); done
for name in before refused after1 after2; do
    tag=tlp:green; [[ $name == refused ]] && tag=tlp:red
    out=$(rest "$SK" "$SU" POST /events/add/metadata:1 "$(ev "${EV[$name]}" "$tag" "${ATTR[$name]}")") ||
        die "creating event $name on $SU: $out"
done
ORGC_ID=$(rest "$SK" "$SU" GET "/events/view/${EV[before]}.json" | jget '$j["Event"]["orgc_id"]')
SIGHTING=$(uuid) NOTE=$(uuid)
rest "$SK" "$SU" POST "/sightings/bulkSaveSightings/${EV[after1]}" \
    "[{\"uuid\":\"$SIGHTING\",\"attribute_uuid\":\"${ATTR[after1]}\",\"type\":\"0\",\"date_sighting\":\"$NOW\",\"source\":\"mgw\"}]" >/dev/null ||
    die "adding the sighting on $SU"
# The note is made by the same organisation (sync form), as the push rules
# select analyst data by creator organisation too.
rest "$SK" "$SU" POST /analyst_data/pushAnalystData "{\"Note\":{\"uuid\":\"$NOTE\",
    \"object_uuid\":\"${EV[after2]}\",\"object_type\":\"Event\",\"note\":\"mgw sync note\",
    \"language\":\"en\",\"distribution\":\"3\",\"orgc_uuid\":\"$ORG\",
    \"Orgc\":{\"name\":\"MGW-SYNC-${ORG:0:8}\",\"uuid\":\"$ORG\"}}}" >/dev/null ||
    die "adding the note on $SU"

# ---- B as a sync server on A, then A's Proxy settings towards the gateway.
# Push rules name A's local id of the organisation, pull rules its uuid
# (sent to B's event index). A's analyst-data pull is off: it would fetch
# every note on the shared B; the note arrives inside its event.
# Only the rules of the direction in use: MISP also reads the pull rules
# when it fetches B's event index to push sightings.
rules() { php -r 'echo json_encode(json_encode(["tags" => ["OR" => [], "NOT" => []], "orgs" => ["OR" => array_slice($argv, 1), "NOT" => []]]));' "$@"; }
if [[ $MODE == push ]]; then
    push=true pull=false push_rules=$(rules "$ORGC_ID") pull_rules=$(rules)
else
    push=false pull=true push_rules=$(rules) pull_rules=$(rules "$ORG")
fi
out=$(rest "$KA" "$A_URL" POST /servers/add "{\"Server\":{\"name\":\"mgw-realmisp-sync-${ORG:0:8}\",
    \"url\":\"$B_URL\",\"authkey\":\"$KB\",\"remote_org_id\":\"1\",\"push\":$push,\"pull\":$pull,
    \"push_sightings\":true,\"push_analyst_data\":true,\"pull_analyst_data\":false,\"push_galaxy_clusters\":false,
    \"pull_galaxy_clusters\":false,\"self_signed\":false,\"skip_proxy\":false,
    \"push_rules\":$push_rules,\"pull_rules\":$pull_rules}}") || die "servers/add on A: $out"
SERVER_ID=$(echo "$out" | jget '$j["Server"]["id"] ?? ""')
[[ -n "$SERVER_ID" ]] || die "servers/add on A answered: $out"
cake_a Admin setSetting --force Proxy.host 127.0.0.1 >/dev/null || die "setting Proxy.host on A"
cake_a Admin setSetting --force Proxy.port "$GW_PORT" >/dev/null || die "setting Proxy.port on A"

# ---- MISP's own push or pull, then what the receiving side holds.
push_started=$(date +%s)
timeout 600 runuser -u www-data -- "$A_BASE/src/MISP/app/Console/cake" Server "$MODE" 1 "$SERVER_ID" full \
    >"$WORK/push.log" 2>&1 || say "cake Server $MODE exited $? (log: $(tail -c 300 "$WORK/push.log" | tr '\n' ' '))"
push_secs=$(($(date +%s) - push_started))

on_b() { # on_b EVENT -> "stored" or "absent" on the receiving side
    local out
    out=$(curl -s -m 60 -H "Authorization: $DK" -H 'Accept: application/json' "$DU/events/view/$1.json")
    [[ "$(echo "$out" | jget '$j["Event"]["uuid"] ?? ""')" == "$1" ]] && echo stored || echo absent
}
has_b() { # has_b EVENT UUID -> "stored" or "absent" (uuid anywhere in the received event)
    curl -s -m 60 -H "Authorization: $DK" -H 'Accept: application/json' "$DU/events/view/$1.json" |
        grep -q "$2" && echo stored || echo absent
}
read_back() {
    before=$(on_b "${EV[before]}") refused=$(on_b "${EV[refused]}")
    after1=$(on_b "${EV[after1]}") after2=$(on_b "${EV[after2]}")
    sighting=$(has_b "${EV[after1]}" "$SIGHTING") note=$(has_b "${EV[after2]}" "$NOTE")
}
# The sync has ended; the read-back alone is tried again (a read of a busy
# MISP that fails is not a missing item). Nothing is synced again.
for attempt in 1 2 3; do
    read_back
    [[ "$after1 $after2 $sighting $note" == "stored stored stored stored" ]] && break
    [[ $attempt == 3 ]] || sleep 2
done
blocked=$(grep -c 'request blocked' "$WORK/gw.log" || true)
outcome=OK code=0
# Everything allowed must arrive: the events after the refused one, and the
# sighting and note MISP syncs after the events (a refused sighting push,
# e.g. of its ETag-cached event index, is a false block too).
if [[ "$before $after1 $after2 $sighting $note" != "stored stored stored stored stored" ]]; then
    outcome=INCOMPLETE code=1
fi
if [[ -n "$CONTROL" ]]; then
    [[ "$before $refused $after1 $after2 $sighting $note" == "stored stored stored stored stored stored" ]] &&
        outcome=CONTROL-OK code=0 || outcome=CONTROL-FAILED code=1
elif [[ $refused != absent ]]; then outcome=LEAK code=2; fi
grep 'request blocked' "$WORK/gw.log" | sed 's/^/  gateway: /' >&2 || true
if [[ $code != 0 ]]; then
    # What the sending MISP did in this run, to tell a refusal from a sync
    # that never sent the item.
    echo "  MISP $MODE log (tail):" >&2
    tail -n 40 "$WORK/push.log" | sed 's/^/    /' >&2 || true
    echo "  sending MISP's requests in this run:" >&2
    grep -F "$(date +%Y-%m-%d)" "$A_BASE/src/MISP/app/tmp/logs/server-sync.log" 2>/dev/null | tail -n 25 | sed 's/^/    /' >&2 || true
fi
# MISP's own account of why the sync ended early, if it did.
push_error=$(grep -m1 '^Error: ' "$WORK/push.log" | cut -c8-120 || true)
echo "realmisp-sync: $MODE $outcome before=$before refused=$refused after1=$after1 after2=$after2" \
    "sighting=$sighting note=$note gateway-blocks=$blocked $MODE=${push_secs}s" \
    "total=$(($(date +%s) - started))s${push_error:+ push-error=\"$push_error\"}"
exit $code
