#!/usr/bin/env bash
# A newcomer's first run (as root): builds the gateway, creates a throw-away
# router in network namespaces (two compartments on VLANs 10 and 20 of a
# trunk, one MISP-like HTTPS server in each; scripts/demo/topology.sh),
# applies the shipped nftables rules with the shipped script inside the
# router namespace and starts the gateway there on config.sample.json's
# policy. The secret MISP then pushes an allowed event and a tlp:red event
# to the restricted MISP and pulls one, with no proxy settings; the
# restricted side tries to reach the secret side. It prints what crossed,
# what was blocked and the gateway's log, then removes every namespace,
# rule, process and file it made. Nothing touches the host's own network.
#
# Usage: sudo scripts/demo.sh   (needs cargo, curl, python3, openssl, iproute2, nftables)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."
# Root, cargo (as the invoking user under sudo: `as_user`) and the tools.
source scripts/demo/preflight.sh
preflight demo curl python3 openssl ip nft

prefix=mgw-demo-$$
rtr=$prefix-rtr sec=$prefix-secret res=$prefix-restricted
work=$(mktemp -d /tmp/misp-guard-gw-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/demo/topology.sh down "$prefix"
    rm -rf "$work"
    echo "== cleaned up: namespaces $prefix-*, their rules and processes, $work"
}
trap cleanup EXIT

echo "== building"
"${as_user[@]}" cargo build --release --quiet
gw=$PWD/target/release/misp-guard-gw

echo "== router topology in namespaces $prefix-{rtr,sw,secret,restricted}"
kind=$(scripts/demo/topology.sh up "$prefix")
echo "  VLAN 10 (secret, 192.0.2.0/24) and VLAN 20 (restricted, 198.51.100.0/24) on one trunk ($kind)"

echo "== certificates: the gateway CA, and each MISP server's own"
"$gw" ca --out "$work/ca" >/dev/null
server_cert() { scripts/demo/server-cert.sh "$gw" "$work" "$1" "$2"; }
server_cert misp.secret.example 192.0.2.10
server_cert misp.restricted.example 198.51.100.10

echo "== policy: config.sample.json, with this demo's certificate files"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
config = json.load(open("config.sample.json"))
config["gateway"]["tls"] = {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "use_system_roots": False}
config["gateway"]["instances"] = {
    "misp_secret": {"upstream_ca": "misp.secret.example-ca/ca.crt"},
    "misp_restricted": {"upstream_ca": "misp.restricted.example-ca/ca.crt"}}
json.dump(config, open(f"{work}/config.sample.json", "w"), indent=2)
PY
config=$work/config.sample.json
# The demo's gateway runs as root: check file access for root (as root,
# check-config would otherwise judge it for an installed misp-guard-gw user).
"$gw" check-config --user root --config "$config" | sed 's/^/  /'
# The shipped rules were generated from this very policy.
if ! "$gw" nft --config "$config" --mode redirect | cmp -s - nftables/redirect.nft; then
    echo "demo: nftables/redirect.nft does not match config.sample.json" >&2
    exit 1
fi

echo "== router: shipped capture rules (nftables/redirect.nft) and the gateway"
# (Its record goes into the demo's temp dir, not the host's /run.)
ip netns exec "$rtr" scripts/apply-nftables.sh --mode redirect --state-dir "$work/rules-state" | sed 's/^/  /'
ip netns exec "$rtr" env RUST_LOG=info "$gw" run --config "$config" 2>"$work/gw.log" &
pids+=($!)
ip netns exec "$sec" python3 scripts/demo/misp_server.py misp.secret.example 192.0.2.10 443 \
    "$work/misp.secret.example.crt" "$work/misp.secret.example.key" &
pids+=($!)
ip netns exec "$res" python3 scripts/demo/misp_server.py misp.restricted.example 198.51.100.10 443 \
    "$work/misp.restricted.example.crt" "$work/misp.restricted.example.key" &
pids+=($!)
ready=
for _ in $(seq 100); do
    if grep -q " ready" "$work/gw.log" 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
[[ -n "$ready" ]] || { cat "$work/gw.log" >&2; echo "demo: the gateway did not start" >&2; exit 1; }
sleep 0.3 # the python servers bind

# A MISP server's request, as its sync client sends it: no proxy settings,
# the remote's name resolved to its address; the gateway CA is trusted.
misp() { # FROM-NS NAME IP CURL-ARGS...
    local ns=$1 name=$2 ip=$3
    shift 3
    ip netns exec "$ns" curl -sS --noproxy '*' --max-time 10 --cacert "$work/ca/ca.crt" \
        --resolve "$name:443:$ip" -H "Content-Type: application/json" -H "Authorization: demo-key" \
        -o "$work/out" -w "%{http_code}" "$@" 2>"$work/curl.err" || echo " (no answer: $(cat "$work/curl.err"))"
}
event() { # UUID TAG
    printf '{"Event": {"uuid": "%s", "info": "demo push %s", "distribution": "1", "Tag": [{"name": "%s"}],
      "Attribute": [{"type": "domain", "category": "Network activity", "value": "bad.example",
                     "Tag": [{"name": "tlp:green"}]}], "Object": []}}' "$1" "$2" "$2"
}
to_restricted() { misp "$sec" misp.restricted.example 198.51.100.10 "$@"; }

echo
echo "== 1. secret MISP pushes an allowed event (tlp:green) to the restricted MISP"
echo "  answer: $(to_restricted --data-binary "$(event 5f0c0001-0000-4000-8000-000000000001 tlp:green)" \
    https://misp.restricted.example/events/add/metadata:1)"
sleep 0.2
echo
echo "== 2. secret MISP pushes an event tagged tlp:red"
echo "  answer: $(to_restricted --data-binary "$(event 5f0c0002-0000-4000-8000-000000000002 tlp:red)" \
    https://misp.restricted.example/events/add/metadata:1) $(cat "$work/out")"
sleep 0.2
echo
echo "== 3. secret MISP pulls an event from the restricted MISP"
echo "  answer: $(to_restricted https://misp.restricted.example/events/view/385283a1-b5e0-4e10-a532-dce11c365a56)"
sleep 0.2
echo
echo "== 4. a request that is not MISP sync (GET /users/login)"
echo "  answer: $(to_restricted https://misp.restricted.example/users/login) $(cat "$work/out")"
sleep 0.2
echo
echo "== 5. restricted MISP tries to reach the secret MISP (its compartment may not)"
echo "  answer: $(misp "$res" misp.secret.example 192.0.2.10 https://misp.secret.example/servers/getVersion)"
sleep 0.2
echo
echo "== gateway log"
sed 's/^/  /' "$work/gw.log"
echo
