#!/usr/bin/env bash
# Builds (up) or deletes (down) a throw-away pair of routers in network
# namespaces, for the high-availability demo and test:
#
#   PREFIX-secret      eth0 192.0.2.10/24, default via 192.0.2.1 (the VIP)
#        |  access port
#   PREFIX-sw          switch: br10 = {acc10, r1v10, r2v10}   (VLAN 10)
#        |                     br20 = {acc20, r1v20, r2v20}   (VLAN 20)
#   PREFIX-r1          eth0.10 192.0.2.2/24   eth0.20 198.51.100.2/24
#   PREFIX-r2          eth0.10 192.0.2.3/24   eth0.20 198.51.100.3/24
#        |  (a gateway and keepalived run in each router)
#   PREFIX-restricted  eth0 198.51.100.10/24, default via 198.51.100.1 (the VIP)
#
# The compartments' gateway addresses 192.0.2.1 and 198.51.100.1 are not
# configured here: they are keepalived's virtual addresses, held by
# whichever router is master. Each router reaches each segment through one
# port of that segment's bridge (an access port per VLAN, rather than a
# tagged trunk: the VLAN tagging itself is scripts/demo/topology.sh's
# subject); the ports are named eth0.10 and eth0.20 as in
# config.sample.json's capture_interfaces, so the shipped nftables files
# apply to both routers unchanged. The routers forward (their own sysctls,
# set here); nothing is connected to anything outside these namespaces.
#
# Usage: ha-topology.sh up PREFIX | down PREFIX    (root; iproute2)
set -euo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    up|down) ;;
    *) usage >&2; exit 2 ;;
esac
action=$1
prefix=${2:?ha-topology.sh: PREFIX needed}
[[ "$prefix" =~ ^[A-Za-z0-9_-]{1,40}$ ]] || { echo "ha-topology.sh: bad PREFIX" >&2; exit 2; }

sw=$prefix-sw sec=$prefix-secret res=$prefix-restricted
routers=("$prefix-r1" "$prefix-r2")

if [[ "$action" == down ]]; then
    # Deleting a namespace removes its interfaces, addresses and rules with it.
    for ns in "${routers[@]}" "$sw" "$sec" "$res"; do
        if [[ -e "/run/netns/$ns" ]]; then ip netns del "$ns"; fi
    done
    exit 0
fi

# A failure half-way leaves nothing behind.
trap 'echo "ha-topology.sh: setup failed, removing $prefix-*" >&2; "$0" down "$prefix"' ERR

for ns in "$sw" "$sec" "$res" "${routers[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done

for vid in 10 20; do
    ip -n "$sw" link add "br$vid" type bridge
    ip -n "$sw" link set "br$vid" up
done

# veths are born inside the namespaces: no host interface ever exists.
port() { # NS DEV SWITCH-PORT VID
    ip -n "$1" link add "$2" type veth peer name "$3" netns "$sw"
    ip -n "$sw" link set "$3" master "br$4"
    ip -n "$sw" link set "$3" up
    ip -n "$1" link set "$2" up
}

n=1
for rtr in "${routers[@]}"; do
    port "$rtr" eth0.10 "r${n}v10" 10
    port "$rtr" eth0.20 "r${n}v20" 20
    ip -n "$rtr" addr add "192.0.2.$((n + 1))/24" dev eth0.10
    ip -n "$rtr" addr add "198.51.100.$((n + 1))/24" dev eth0.20
    # A router forwards: the router's own setting, not the gateway's.
    ip netns exec "$rtr" sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    n=$((n + 1))
done

for spec in "10:$sec:192.0.2" "20:$res:198.51.100"; do
    IFS=: read -r vid host net <<<"$spec"
    port "$host" eth0 "acc$vid" "$vid"
    ip -n "$host" addr add "$net.10/24" dev eth0
    # The virtual address: whichever router holds it routes.
    ip -n "$host" route add default via "$net.1"
done
