#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installing cargo-deb first if
# needed), checks its contents and runs lintian on it (installing lintian
# first when root; any error or warning fails), and with --install-test
# installs it, checks the fresh install passes `check-config --strict` for
# the service user and purges it again (root).
#
# Usage: scripts/package.sh [--install-test]
# Output: target/debian/misp-guard-gw_<version>_<arch>.deb (+ -dbgsym .ddeb)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb"
    cargo install cargo-deb --locked --quiet
fi
echo "== building the package"
# cargo-deb's own messages are kept aside and shown only when it fails, so
# a failed build names its cause (a full disk, a missing tool) in the log.
deb_log=$(mktemp)
if ! deb_out=$(cargo deb --quiet 2>"$deb_log"); then
    cat "$deb_log" >&2
    echo "cargo deb failed ($(df -h --output=avail . | tail -n 1 | tr -d ' ') free on this disk)" >&2
    exit 1
fi
rm -f "$deb_log"
deb=$(grep '\.deb$' <<<"$deb_out" | tail -n 1 || true)
[[ -f "$deb" ]] || deb=$(ls -t target/debian/*.deb | head -n 1)
echo "$deb"

echo "== checking its contents"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/misp-guard-gw ./etc/misp-guard-gw/config.json \
         ./usr/share/misp-guard-gw/nftables/redirect.nft ./usr/share/misp-guard-gw/nftables/tproxy.nft \
         ./usr/share/misp-guard-gw/scripts/apply-nftables.sh ./usr/share/misp-guard-gw/scripts/remove-nftables.sh \
         ./usr/share/misp-guard-gw/keepalived/keepalived.conf ./usr/share/misp-guard-gw/keepalived/misp-guard-gw-ready.sh \
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
# The installed binary carries no debug sections (they are in the dbgsym).
bin_dir=$(mktemp -d)
dpkg-deb -x "$deb" "$bin_dir"
sections=$(readelf -SW "$bin_dir/usr/bin/misp-guard-gw")
if grep -Eq '\.debug_(info|line|abbrev|str) ' <<<"$sections"; then
    echo "the packaged binary is not stripped" >&2
    exit 1
fi
rm -rf "$bin_dir"
echo "contents OK"

echo "== lintian"
if ! command -v lintian >/dev/null 2>&1; then
    if [[ $EUID -ne 0 ]]; then
        echo "lintian is not installed: apt-get install lintian (or run as root)" >&2
        exit 1
    fi
    apt-get install -y -qq lintian >/dev/null
fi
# Overrides shipped in the package (debian/misp-guard-gw.lintian-overrides)
# each say why; everything else must be clean.
lintian --fail-on error,warning --tag-display-limit 0 "$deb"
echo "lintian OK"

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
    # No warning on a fresh install: judged by root for the service user,
    # and as that user itself (what the unit's ExecStartPre does).
    /usr/bin/misp-guard-gw check-config --strict --config /etc/misp-guard-gw/config.json >/dev/null
    runuser -u misp-guard-gw -- /usr/bin/misp-guard-gw check-config --strict \
        --config /etc/misp-guard-gw/config.json >/dev/null
    # ...and `run` as that user starts without a permission warning (an
    # explicit loopback listener: the transparent ones need capabilities).
    run_log=$(mktemp)
    timeout 5 runuser -u misp-guard-gw -- /usr/bin/misp-guard-gw run \
        --config /etc/misp-guard-gw/config.json --explicit 127.0.0.1:0 2>"$run_log" || true
    grep -q ' ready' "$run_log" || { cat "$run_log" >&2; echo "run did not start" >&2; exit 1; }
    if grep -q 'CA key file' "$run_log"; then
        cat "$run_log" >&2
        echo "run warns about the installed CA key's permissions" >&2
        exit 1
    fi
    rm -f "$run_log"
    test -f /etc/misp-guard-gw/ca.key
    [[ "$(stat -c %a /etc/misp-guard-gw/ca.key)" == 640 ]]
    getent passwd misp-guard-gw >/dev/null
    dpkg --purge misp-guard-gw >/dev/null
    trap - EXIT
    ! getent passwd misp-guard-gw >/dev/null || { echo "service user left behind" >&2; exit 1; }
    [[ ! -e /usr/bin/misp-guard-gw ]] || { echo "binary left behind" >&2; exit 1; }
    echo "install/remove OK"
fi
