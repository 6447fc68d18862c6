#!/bin/sh
# keepalived's notify script for misp-guard-gw: logs every VRRP transition
# of this router (GROUP or INSTANCE, its name, the new state MASTER, BACKUP,
# FAULT or STOP, and an instance's priority) as one line, to syslog (tag
# misp-guard-gw-vrrp) or appended to a file. It changes nothing: the
# gateway runs on both routers all the time and needs no cluster state.
#
# Usage: misp-guard-gw-notify.sh syslog|LOGFILE TYPE NAME STATE [PRIORITY]
#   (keepalived appends TYPE NAME STATE PRIORITY to the configured command)
set -eu

case "${1:-}" in
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
[ $# -ge 4 ] || { echo "misp-guard-gw-notify.sh: needs LOG TYPE NAME STATE" >&2; exit 2; }
dest=$1 kind=$2 name=$3 state=$4
line="vrrp $kind $name is now $state"
# An instance's priority says why it won or lost; a group has none.
[ "$kind" != INSTANCE ] || line="$line (priority ${5:-?})"
if [ "$dest" = syslog ]; then
    logger -t misp-guard-gw-vrrp -- "$line"
else
    printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$line" >>"$dest"
fi
