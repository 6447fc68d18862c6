#!/usr/bin/env bash
# Builds (up) or deletes (down) a throw-away router topology in network
# namespaces, for the demo and the VLAN integration tests:
#
#   PREFIX-secret      eth0 192.0.2.10/24     (MISP "misp_secret", VLAN 10)
#        |  access port
#   PREFIX-sw          switch: br10 = {acc10, trunk0.10}, br20 = {acc20, trunk0.20}
#        |  trunk0 === eth0: one link carrying VLANs 10 and 20
#   PREFIX-rtr         router: eth0.10 192.0.2.1/24, eth0.20 198.51.100.1/24
#        |  (the gateway runs here, behind the shipped nftables rules)
#   PREFIX-restricted  eth0 198.51.100.10/24  (MISP "misp_restricted", VLAN 20)
#
# Addresses and interface names are those of config.sample.json, so the
# shipped nftables/*.nft files apply to this router unchanged.
#
# The trunk's segments are 802.1Q VLAN sub-interfaces when the kernel has
# 8021q; on kernels without it (some CI and container hosts) each segment is
# a VXLAN (VNI 10, 20) with the same names, whose underlay lives in two
# namespaces of its own (PREFIX-ulr, PREFIX-uls, joined by one link): the
# VXLAN devices were created there and moved into router and switch, so
# neither has an underlay address and no compartment host can reach the
# underlay to inject frames into the other segment. Either way the router
# sees two sub-interfaces, is the only path between the compartments, and
# forwards (its own sysctls, set here: the gateway's scripts leave them as
# found); nothing is connected to anything else: no route leaves it.
#
# Usage: topology.sh up PREFIX | down PREFIX    (root; iproute2)
#   up prints the segment kind (8021q or vxlan) on stdout.
set -euo pipefail

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    up|down) ;;
    *) usage >&2; exit 2 ;;
esac
action=$1
prefix=${2:?topology.sh: PREFIX needed}
[[ "$prefix" =~ ^[A-Za-z0-9_-]{1,40}$ ]] || { echo "topology.sh: bad PREFIX" >&2; exit 2; }

rtr=$prefix-rtr sw=$prefix-sw sec=$prefix-secret res=$prefix-restricted
ulr=$prefix-ulr uls=$prefix-uls

if [[ "$action" == down ]]; then
    # Deleting a namespace removes its interfaces, rules and routes with it.
    for ns in "$rtr" "$sw" "$sec" "$res" "$ulr" "$uls"; do
        if [[ -e "/run/netns/$ns" ]]; then ip netns del "$ns"; fi
    done
    exit 0
fi

# A failure half-way leaves nothing behind.
trap 'echo "topology.sh: setup failed, removing $prefix-*" >&2; "$0" down "$prefix"' ERR

for ns in "$rtr" "$sw" "$sec" "$res"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done

# The trunk: born inside the namespaces, no host interface ever exists.
# Its MTU leaves room for VXLAN's 50 bytes, so segments keep 1500.
ip -n "$rtr" link add eth0 mtu 1600 type veth peer name trunk0 netns "$sw" mtu 1600
ip -n "$rtr" link set eth0 up
ip -n "$sw" link set trunk0 up

if ip -n "$rtr" link add link eth0 name eth0.10 mtu 1500 type vlan id 10 2>/dev/null; then
    kind=8021q
    ip -n "$rtr" link add link eth0 name eth0.20 mtu 1500 type vlan id 20
    for vid in 10 20; do
        ip -n "$sw" link add link trunk0 name "trunk0.$vid" mtu 1500 type vlan id "$vid"
    done
else
    kind=vxlan
    # The underlay gets its own namespaces; the trunk veth is not used.
    ip -n "$rtr" link del eth0
    for ns in "$ulr" "$uls"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip -n "$ulr" link add ul0 mtu 1600 type veth peer name ul1 netns "$uls" mtu 1600
    ip -n "$ulr" addr add 169.254.231.1/30 dev ul0
    ip -n "$uls" addr add 169.254.231.2/30 dev ul1
    ip -n "$ulr" link set ul0 up
    ip -n "$uls" link set ul1 up
    for vid in 10 20; do
        ip -n "$ulr" link add "eth0.$vid" mtu 1500 type vxlan id "$vid" \
            local 169.254.231.1 remote 169.254.231.2 dstport 4789 dev ul0
        ip -n "$uls" link add "trunk0.$vid" mtu 1500 type vxlan id "$vid" \
            local 169.254.231.2 remote 169.254.231.1 dstport 4789 dev ul1
        # Moved devices keep their UDP socket in the underlay namespace.
        ip -n "$ulr" link set "eth0.$vid" netns "$rtr"
        ip -n "$uls" link set "trunk0.$vid" netns "$sw"
    done
fi
# A router forwards: the router's own setting, not the gateway's.
ip netns exec "$rtr" sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

# The switch: one bridge per VLAN, joining the trunk's segment and the
# access port of that compartment's MISP host.
for pair in "10:$sec" "20:$res"; do
    vid=${pair%%:*} host=${pair#*:}
    ip -n "$sw" link add "br$vid" type bridge
    ip -n "$sw" link add "acc$vid" type veth peer name eth0 netns "$host"
    ip -n "$sw" link set "trunk0.$vid" master "br$vid"
    ip -n "$sw" link set "acc$vid" master "br$vid"
    for dev in "trunk0.$vid" "acc$vid" "br$vid"; do ip -n "$sw" link set "$dev" up; done
done

# Router side of each segment, and the MISP hosts behind it.
for spec in "10:$sec:192.0.2" "20:$res:198.51.100"; do
    IFS=: read -r vid host net <<<"$spec"
    ip -n "$rtr" addr add "$net.1/24" dev "eth0.$vid"
    ip -n "$rtr" link set "eth0.$vid" up
    ip -n "$host" addr add "$net.10/24" dev eth0
    ip -n "$host" link set eth0 up
    ip -n "$host" route add default via "$net.1"
done

echo "$kind"
