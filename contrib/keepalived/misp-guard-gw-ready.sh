#!/bin/sh
# keepalived's track_script for misp-guard-gw: succeeds only when the
# gateway answers 200 on /readyz (listeners bound, policy loaded, guard and
# capture tables loaded; README "Health and metrics"). Any other answer,
# no answer within a second, or no listener at all fails the check, and
# keepalived gives up this router's virtual addresses.
#
# Usage: misp-guard-gw-ready.sh [URL]   (default http://127.0.0.1:9464/readyz)
set -eu

case "${1:-}" in
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
url=${1:-http://127.0.0.1:9464/readyz}
exec curl -fsS --noproxy '*' --max-time 1 -o /dev/null "$url"
