#!/bin/sh
# Uninstalls the misp-guard-gw rules (idempotent; an explicit step, never
# run by stop, crash or restart): deletes the capture and guard tables and
# undoes, newest first, exactly what apply-nftables.sh recorded in
# STATE_DIR/installed (its ip rules and routes, the forwarding sysctls it
# changed). Rules, routes and sysctls it did not add are left alone. With
# --guard-file it deletes the include file too; remove the `include` line
# from /etc/nftables.conf unless it names the file by a glob.
#
# Usage: remove-nftables.sh [--state-dir DIR] [--guard-file FILE]
#   --state-dir   the record apply-nftables.sh wrote (default /run/misp-guard-gw-rules)
#   --guard-file  the guard include file to delete
set -eu

state_dir=/run/misp-guard-gw-rules guard_file=
while [ $# -gt 0 ]; do
    case "$1" in
        --state-dir) state_dir=${2:?--state-dir needs a value}; shift 2 ;;
        --guard-file) guard_file=${2:?--guard-file needs a value}; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "remove-nftables.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

for table in misp_guard_gw misp_guard_gw_guard; do
    if nft list table inet "$table" >/dev/null 2>&1; then
        nft delete table inet "$table"
    fi
done

state=$state_dir/installed
if [ -f "$state" ]; then
    # Newest first; an entry someone already removed is not an error.
    # Only the shapes apply writes are acted on (never an arbitrary sysctl).
    sed '1!G;h;$!d' "$state" | while read -r kind a b c; do
        case "$kind:$a:$b:$c" in
            rule:[46]:0x[0-9a-f]*:[0-9]*)
                ip -"$a" rule del fwmark "$b/$b" lookup "$c" 2>/dev/null || true ;;
            route:4:0.0.0.0/0:[0-9]* | route:6:::/0:[0-9]*)
                ip -"$a" route del local "$b" dev lo table "$c" 2>/dev/null || true ;;
            sysctl:net.ipv4.ip_forward:[01]: | sysctl:net.ipv6.conf.all.forwarding:[01]:)
                sysctl -q -w "$a=$b" ;;
            *) echo "remove-nftables.sh: ignoring unexpected record '$kind $a $b $c'" >&2 ;;
        esac
    done
    rm -f "$state"
fi
if [ -n "$guard_file" ]; then
    rm -f "$guard_file"
fi
echo "misp-guard-gw: guard and capture rules removed"
