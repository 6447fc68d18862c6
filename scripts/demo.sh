#!/usr/bin/env bash
# A newcomer's first run: builds the gateway, starts it on loopback as an
# explicit proxy with an embedded demo policy (two MISP instances in two
# compartments), starts a tiny MISP-like HTTPS server, then pushes an
# allowed event, pushes a tlp:red event and pulls an event through it,
# printing what crossed, what was blocked and the gateway's log lines.
# Everything runs on 127.0.0.1/127.0.0.2 and is cleaned up on exit.
#
# Usage: scripts/demo.sh            (needs cargo, curl, python3, openssl)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

cd "$(dirname "$0")/.."
for tool in cargo curl python3 openssl; do
    command -v "$tool" >/dev/null || { echo "demo: $tool is required" >&2; exit 1; }
done

work=$(mktemp -d /tmp/misp-guard-gw-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building"
cargo build --release --quiet
gw=target/release/misp-guard-gw

echo "== gateway CA and a certificate for the demo MISP server"
"$gw" ca --out "$work/ca" >/dev/null
# The demo server's own CA (a real deployment trusts the MISP servers' CA).
"$gw" ca --out "$work/server-ca" >/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=misp-restricted.demo" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:misp-restricted.demo,IP:127.0.0.2\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    > "$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/server-ca/ca.crt" -CAkey "$work/server-ca/ca.key" \
    -CAcreateserial -days 1 -extfile "$work/server.ext" -out "$work/server.crt" 2>/dev/null

port=8443
proxy_port=3128
cat > "$work/config.json" <<JSON
{
  "allowlist": {"urls": [], "domains": []},
  "compartments_rules": {"can_reach": {"secret": ["secret", "restricted"], "restricted": ["restricted"]}},
  "instances": {
    "misp_secret": {"ip": "127.0.0.1", "host": "misp-secret.demo", "port": 443, "compartment_id": "secret",
      "affiliation": "demo", "taxonomies_rules": {"required_taxonomies": ["tlp"],
      "allowed_tags": {"tlp": ["tlp:clear", "tlp:green"]}, "blocked_tags": ["tlp:red", "tlp:amber"]},
      "blocked_distribution_levels": ["0"], "blocked_sharing_groups_uuids": [],
      "blocked_attribute_types": ["passport-number"], "blocked_attribute_categories": ["Person"],
      "blocked_object_types": ["person"]},
    "misp_restricted": {"ip": "127.0.0.2", "host": "misp-restricted.demo", "port": $port,
      "compartment_id": "restricted", "affiliation": "demo", "taxonomies_rules": {"required_taxonomies": [],
      "allowed_tags": {}, "blocked_tags": ["tlp:red"]}, "blocked_distribution_levels": ["0"],
      "blocked_sharing_groups_uuids": [], "blocked_attribute_types": [], "blocked_attribute_categories": [],
      "blocked_object_types": []}
  },
  "gateway": {
    "listeners": [{"mode": "explicit", "listen": "127.0.0.1:$proxy_port"}],
    "tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "server-ca/ca.crt", "use_system_roots": false}
  }
}
JSON

echo "== starting the demo MISP server (127.0.0.2:$port) and the gateway (127.0.0.1:$proxy_port)"
python3 scripts/demo/misp_server.py 127.0.0.2 "$port" "$work/server.crt" "$work/server.key" &
pids+=($!)
"$gw" check-config --config "$work/config.json"
RUST_LOG=info "$gw" run --config "$work/config.json" 2>"$work/gw.log" &
pids+=($!)
for _ in $(seq 100); do
    if grep -q " ready" "$work/gw.log" 2>/dev/null && (echo >"/dev/tcp/127.0.0.2/$port") 2>/dev/null; then
        break
    fi
    sleep 0.1
done

event() {
    printf '{"Event": {"info": "demo", "distribution": "1", "Tag": [{"name": "tlp:green"}%s],
      "Attribute": [{"type": "domain", "category": "Network activity", "value": "bad.example",
                     "Tag": [{"name": "tlp:green"}]}], "Object": []}}' "$1"
}
misp() {
    curl -sS --max-time 10 --proxy "http://127.0.0.1:$proxy_port" --cacert "$work/ca/ca.crt" \
        -H "Content-Type: application/json" -H "Authorization: demo-key" -o "$work/out" -w "%{http_code}" \
        "$@"
}

echo
echo "== 1. push an allowed event (tlp:green)"
echo "  gateway answered: $(misp --data-binary "$(event '')" "https://misp-restricted.demo:$port/events/add/metadata:1")"
sleep 0.2
echo
echo "== 2. push an event tagged tlp:red"
echo "  gateway answered: $(misp --data-binary "$(event ', {"name": "tlp:red"}')" "https://misp-restricted.demo:$port/events/add/metadata:1")"
sleep 0.2
echo
echo "== 3. pull an event"
echo "  gateway answered: $(misp "https://misp-restricted.demo:$port/events/view/385283a1-b5e0-4e10-a532-dce11c365a56")"
sleep 0.2
echo
echo "== gateway log"
sed 's/^/  /' "$work/gw.log"
