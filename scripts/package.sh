#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installing cargo-deb first if
# needed), checks its contents, and with --install-test installs it, runs
# `misp-guard-gw --version` from it and purges it again (root).
#
# Usage: scripts/package.sh [--install-test]
# Output: target/debian/misp-guard-gw_<version>_<arch>.deb
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb"
    cargo install cargo-deb --locked --quiet
fi
echo "== building the package"
deb=$(cargo deb --quiet 2>/dev/null | tail -n 1)
[[ -f "$deb" ]] || deb=$(ls -t target/debian/*.deb | head -n 1)
echo "$deb"

echo "== checking its contents"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/misp-guard-gw ./etc/misp-guard-gw/config.json \
         ./usr/share/misp-guard-gw/nftables/redirect.nft ./usr/share/misp-guard-gw/nftables/tproxy.nft \
         ./usr/share/misp-guard-gw/scripts/apply-nftables.sh ./usr/share/misp-guard-gw/scripts/remove-nftables.sh \
         ./lib/systemd/system/misp-guard-gw.service; do
    grep -q " $f\$" <<<"$contents" || { echo "package lacks $f" >&2; exit 1; }
done
# Capture before matching: with pipefail, `producer | grep -q` fails at
# random when grep exits early and the producer gets SIGPIPE.
depends=$(dpkg-deb -f "$deb" Depends)
grep -q nftables <<<"$depends" || { echo "package must depend on nftables" >&2; exit 1; }
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
grep -q conffiles <<<"$control" || { echo "no conffiles" >&2; exit 1; }
dpkg-deb -e "$deb" "$(mktemp -d)" >/dev/null
echo "contents OK"

if [[ "${1:-}" == "--install-test" ]]; then
    echo "== installing, running, purging"
    if dpkg -s misp-guard-gw >/dev/null 2>&1; then
        echo "misp-guard-gw is already installed here; not touching it" >&2
        exit 1
    fi
    trap 'dpkg --purge misp-guard-gw >/dev/null 2>&1 || true' EXIT
    case "$deb" in /*) ;; *) deb="./$deb" ;; esac
    apt-get install -y -qq "$deb" >/dev/null
    /usr/bin/misp-guard-gw --version
    /usr/bin/misp-guard-gw check-config --config /etc/misp-guard-gw/config.json >/dev/null
    test -f /etc/misp-guard-gw/ca.key
    [[ "$(stat -c %a /etc/misp-guard-gw/ca.key)" == 640 ]]
    getent passwd misp-guard-gw >/dev/null
    dpkg --purge misp-guard-gw >/dev/null
    trap - EXIT
    ! getent passwd misp-guard-gw >/dev/null || { echo "service user left behind" >&2; exit 1; }
    [[ ! -e /usr/bin/misp-guard-gw ]] || { echo "binary left behind" >&2; exit 1; }
    echo "install/remove OK"
fi
