#!/bin/sh
# Installs the misp-guard-gw rules on this router (idempotent): the guard
# table (drops forwarded MISP sync and spoofed compartment sources; kept by
# stop, crash and restart) and the capture table (hands the instances'
# ip.port set to the gateway), in one nftables transaction. For TPROXY it
# adds the policy routing the rules name (fwmark MARK/MARK -> TABLE -> local
# delivery, IPv4 and IPv6) unless an identical rule/route already exists.
# Everything it adds is recorded in STATE_DIR/installed, so
# remove-nftables.sh deletes only that. Forwarding sysctls are left as
# found unless --enable-forwarding is given (old values recorded too).
#
# Usage: apply-nftables.sh [--mode redirect|tproxy] [--rules FILE | --config FILE]
#          [--guard-file FILE [--guard-file-only]] [--state-dir DIR] [--enable-forwarding]
#   --mode         capture mode (default: redirect)
#   --rules        rules file (default: the shipped nftables/<mode>.nft, or
#                  /usr/share/misp-guard-gw/nftables/<mode>.nft when installed)
#   --config       render the rules from this config instead, with
#                  $MISP_GUARD_GW (default: misp-guard-gw on PATH)
#   --guard-file   with --config: also write the guard table alone to FILE,
#                  for `include` in /etc/nftables.conf (README)
#   --guard-file-only  only (re)write that file; load and change nothing
#   --state-dir    where what was added is recorded (default /run/misp-guard-gw-rules)
#   --enable-forwarding  turn IPv4 and IPv6 forwarding on (restored by remove)
set -eu

mode=redirect rules= config= guard_file= guard_only= state_dir=/run/misp-guard-gw-rules forwarding=
while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode=${2:?--mode needs a value}; shift 2 ;;
        --rules) rules=${2:?--rules needs a value}; shift 2 ;;
        --config) config=${2:?--config needs a value}; shift 2 ;;
        --guard-file) guard_file=${2:?--guard-file needs a value}; shift 2 ;;
        --guard-file-only) guard_only=1; shift ;;
        --state-dir) state_dir=${2:?--state-dir needs a value}; shift 2 ;;
        --enable-forwarding) forwarding=1; shift ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "apply-nftables.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$mode" in
    redirect|tproxy) ;;
    *) echo "apply-nftables.sh: --mode must be redirect or tproxy" >&2; exit 2 ;;
esac
[ -z "$rules" ] || [ -z "$config" ] || { echo "apply-nftables.sh: --rules or --config, not both" >&2; exit 2; }
[ -z "$guard_file" ] || [ -n "$config" ] || { echo "apply-nftables.sh: --guard-file needs --config" >&2; exit 2; }
[ -z "$guard_only" ] || [ -n "$guard_file" ] || { echo "apply-nftables.sh: --guard-file-only needs --guard-file" >&2; exit 2; }
gw=${MISP_GUARD_GW:-misp-guard-gw}

# The include file is replaced atomically: a firewall reload never reads
# half of it.
if [ -n "$guard_file" ]; then
    (umask 022 && "$gw" nft --config "$config" --guard-only > "$guard_file.new")
    nft -c -f "$guard_file.new"
    mv -f "$guard_file.new" "$guard_file"
    [ -z "$guard_only" ] || { echo "misp-guard-gw: guard rules written to $guard_file"; exit 0; }
fi

# Root's own: remove-nftables.sh acts on this record as root.
(umask 077 && mkdir -p "$state_dir")
state=$state_dir/installed
touch "$state"
if [ -n "$config" ]; then
    rules=$state_dir/rules.nft
    "$gw" nft --config "$config" --mode "$mode" > "$rules.new"
    mv -f "$rules.new" "$rules"
elif [ -z "$rules" ]; then
    here=$(dirname "$0")
    for candidate in "$here/../nftables/$mode.nft" "/usr/share/misp-guard-gw/nftables/$mode.nft"; do
        if [ -f "$candidate" ]; then rules=$candidate; break; fi
    done
fi
[ -n "$rules" ] && [ -f "$rules" ] || { echo "apply-nftables.sh: no rules file for $mode" >&2; exit 1; }

# Check first: a broken file must not leave the router half-configured.
nft -c -f "$rules"

# Records one undo line, once.
record() { grep -qxF "$1" "$state" || echo "$1" >> "$state"; }

if [ -n "$forwarding" ]; then
    for key in net.ipv4.ip_forward net.ipv6.conf.all.forwarding; do
        old=$(sysctl -n "$key")
        # The value found before the first apply is the one to restore.
        grep -q "^sysctl $key " "$state" || record "sysctl $key $old"
        sysctl -q -w "$key=1"
    done
fi

if [ "$mode" = tproxy ]; then
    routing=$(sed -n 's/^# tproxy-routing: mark \(0x[0-9a-f]*\) table \([0-9]*\)$/\1 \2/p' "$rules")
    [ -n "$routing" ] || { echo "apply-nftables.sh: $rules has no '# tproxy-routing:' line; regenerate it with misp-guard-gw nft" >&2; exit 1; }
    mark=${routing% *} table=${routing#* }
    for fam in 4 6; do
        if [ "$fam" = 4 ]; then dst=0.0.0.0/0; else dst=::/0; fi
        # An identical rule or route that is already there is someone
        # else's (or ours from an earlier apply, already recorded): keep it.
        rules_now=$(ip -"$fam" rule show)
        if ! printf '%s\n' "$rules_now" | grep -Eq "fwmark $mark/$mark lookup $table( |\$)"; then
            ip -"$fam" rule add fwmark "$mark/$mark" lookup "$table"
            record "rule $fam $mark $table"
        fi
        # (An error here means the table does not exist yet: no route.)
        route_now=$(ip -"$fam" route show table "$table" exact "$dst" type local dev lo 2>/dev/null || true)
        if [ -z "$route_now" ]; then
            ip -"$fam" route add local "$dst" dev lo table "$table"
            record "route $fam $dst $table"
        fi
    done
fi

nft -f "$rules"
echo "misp-guard-gw: $mode guard and capture rules applied from $rules (record: $state)"
