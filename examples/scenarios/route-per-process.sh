#!/bin/bash
# Scenario 2 of docs/scenarios.md, the routing half: a route per process.
#
# Two routers on the LAN lead to two different sites, and both sites use the same address,
# 10.40.99.1. Each program's stack has its own default gateway (gw=), so the same curl
# command reaches one site or the other depending only on the stack it runs on. The host's
# own routes are not involved.
#
# usage (as root, for the namespaces): route-per-process.sh
. "$(dirname "$0")/lib.sh"

switch lan
for i in 1 2; do
    ns_add router$i
    ns_add site$i
    tap_on "$(ns router$i)" lan 10.40.2.25$i/24 tap0
    ip -n "$(ns router$i)" link add up$i type veth peer name down$i netns "$(ns site$i)"
    ip -n "$(ns router$i)" addr add 10.40.99.254/24 dev up$i
    ip -n "$(ns router$i)" link set up$i up
    ip netns exec "$(ns router$i)" sysctl -q -w net.ipv4.ip_forward=1
    ip -n "$(ns site$i)" addr add 10.40.99.1/24 dev down$i
    ip -n "$(ns site$i)" link set down$i up
    ip -n "$(ns site$i)" route add default via 10.40.99.254
    www "$W/www$i" "site $i"
    httpd_in "$(ns site$i)" 10.40.99.1 "$W/www$i"
done

for i in 1 2; do
    page=$(tn run --link "vde://$W/lan" --config "eth,ip=10.40.2.2$i/24,gw=10.40.2.25$i" -- \
        curl -sS -m 10 http://10.40.99.1/)
    seen=$(tn run --link "vde://$W/lan" --config "eth,ip=10.40.2.2$i/24,gw=10.40.2.25$i" -- \
        busybox wget -q -O - http://10.40.99.1/cgi-bin/ip)
    say "via router $i (gw=10.40.2.25$i): curl got \"$page\", wget was seen as $seen"
done
