#!/usr/bin/env bash
# A MISP server's certificate for the demos and the soak, from a CA of the
# server's own (so the gateway must be told to trust it: upstream_ca):
#   WORK/NAME-ca/ca.crt, WORK/NAME.crt, WORK/NAME.key
#
# Usage: server-cert.sh GATEWAY_BINARY WORK NAME IP
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
gw=${1:?server-cert.sh: GATEWAY_BINARY needed}
work=${2:?server-cert.sh: WORK needed}
name=${3:?server-cert.sh: NAME needed}
ip=${4:?server-cert.sh: IP needed}
"$gw" ca --out "$work/$name-ca" >/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$name" "$ip" \
    >"$work/$name.ext"
openssl x509 -req -in "$work/$name.csr" -CA "$work/$name-ca/ca.crt" -CAkey "$work/$name-ca/ca.key" \
    -CAcreateserial -days 1 -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
