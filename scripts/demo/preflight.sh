#!/usr/bin/env bash
# What the demos and the soak check before they build anything, sourced by
# them: `preflight NAME TOOL...` exits unless run as root, with cargo and
# each TOOL found; it sets `as_user`, the prefix that runs cargo as the
# invoking user under sudo (rustup puts cargo in ~/.cargo/bin, which
# sudo's PATH lacks, and target/ stays theirs).
#
# Usage: source scripts/demo/preflight.sh; preflight NAME TOOL...
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    case "${1:-}" in
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
    echo "preflight.sh: source it from a script (see --help)" >&2
    exit 2
fi

preflight() {
    local name=$1 tool user_home
    shift
    [[ "$(id -u)" == 0 ]] || { echo "$name: run as root (network namespaces): sudo $0" >&2; exit 1; }
    as_user=()
    if [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root ]]; then
        user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        as_user=(sudo -u "$SUDO_USER" env "PATH=$user_home/.cargo/bin:$PATH")
    fi
    "${as_user[@]}" cargo --version >/dev/null 2>&1 || { echo "$name: cargo is required" >&2; exit 1; }
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$name: $tool is required" >&2; exit 1; }
    done
}
