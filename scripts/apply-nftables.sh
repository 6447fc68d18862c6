#!/bin/sh
# Applies the misp-guard-gw capture rules on this router (idempotent):
# enables forwarding, loads the nftables ruleset (replacing an earlier one)
# and, for TPROXY, installs the policy routing it needs
# (fwmark 0x1/0x1 -> table 100 -> local delivery), for IPv4 and IPv6.
#
# Usage: apply-nftables.sh [--mode redirect|tproxy] [--rules FILE]
#   --mode   capture mode (default: redirect)
#   --rules  ruleset file (default: the shipped nftables/<mode>.nft, or
#            /usr/share/misp-guard-gw/nftables/<mode>.nft when installed).
#            Generate one for your policy with `misp-guard-gw nft`.
set -eu

mode=redirect
rules=
while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode=${2:?--mode needs a value}; shift 2 ;;
        --rules) rules=${2:?--rules needs a value}; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "apply-nftables.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$mode" in
    redirect|tproxy) ;;
    *) echo "apply-nftables.sh: --mode must be redirect or tproxy" >&2; exit 2 ;;
esac
if [ -z "$rules" ]; then
    here=$(dirname "$0")
    for candidate in "$here/../nftables/$mode.nft" "/usr/share/misp-guard-gw/nftables/$mode.nft"; do
        if [ -f "$candidate" ]; then rules=$candidate; break; fi
    done
fi
[ -n "$rules" ] && [ -f "$rules" ] || { echo "apply-nftables.sh: no ruleset file for $mode" >&2; exit 1; }

# Check first: a broken file must not leave the router half-configured.
nft -c -f "$rules"

sysctl -q -w net.ipv4.ip_forward=1
sysctl -q -w net.ipv6.conf.all.forwarding=1

if [ "$mode" = tproxy ]; then
    for fam in -4 -6; do
        if [ "$fam" = -4 ]; then dst=0.0.0.0/0; else dst=::/0; fi
        ip "$fam" rule show | grep -q "fwmark 0x1/0x1 lookup 100" ||
            ip "$fam" rule add fwmark 0x1/0x1 lookup 100
        ip "$fam" route replace local "$dst" dev lo table 100
    done
fi

nft -f "$rules"
echo "misp-guard-gw: $mode capture rules applied from $rules"
