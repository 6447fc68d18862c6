#!/bin/sh
# Removes what apply-nftables.sh installed (idempotent): the
# misp_guard_gw nftables table and the TPROXY policy routing. Forwarding
# sysctls are left as they are (the router needs them for everything else).
#
# Usage: remove-nftables.sh
set -eu

case "${1:-}" in
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "remove-nftables.sh: unknown argument $1" >&2; exit 2 ;;
esac

if nft list table inet misp_guard_gw >/dev/null 2>&1; then
    nft delete table inet misp_guard_gw
fi
for fam in -4 -6; do
    while ip "$fam" rule show | grep -q "fwmark 0x1/0x1 lookup 100"; do
        ip "$fam" rule del fwmark 0x1/0x1 lookup 100
    done
    ip "$fam" route flush table 100 2>/dev/null || true
done
echo "misp-guard-gw: capture rules removed"
