#!/bin/bash
# Scenario 3 of docs/scenarios.md: several servers on the same port.
#
# An ordinary user starts two unmodified busybox httpd servers, both on port 80, each on
# a stack of its own (its own address): no root, no port conflict, no setcap. A client on
# the LAN (the kernel's curl, in a namespace) gets each one's page.
#
# usage (as root, for the namespace): same-port.sh [USER]   (nobody)
. "$(dirname "$0")/lib.sh"
U=${1:-nobody}
need_user "$U"

switch lan -m 0666
ns_add client
tap_on "$(ns client)" lan 10.40.3.1/24 tap0
www "$W/one" "site one"
www "$W/two" "site two"
as_user_bg "$U" $THREADNET run --link "vde://$W/lan" --config eth,ip=10.40.3.11/24 -- \
    busybox httpd -f -p 80 -h "$W/one"
one=$!
as_user_bg "$U" $THREADNET run --link "vde://$W/lan" --config eth,ip=10.40.3.12/24 -- \
    busybox httpd -f -p 80 -h "$W/two"
two=$!
for addr in 10.40.3.11 10.40.3.12; do
    wait_until "httpd on $addr" ip netns exec "$(ns client)" curl -sf -m 2 "http://$addr/"
    page=$(ip netns exec "$(ns client)" curl -sS -m 5 "http://$addr/")
    seen=$(ip netns exec "$(ns client)" curl -sS -m 5 "http://$addr/cgi-bin/ip")
    say "http://$addr/ (port 80): $page; it saw the client as $seen"
done
# the servers: children of the supervisors (which also adopt, and soon reap, the orphaned
# CGI processes: hence the grep)
for p in $one $two; do
    say "$(ps -o user=,args= --ppid "$p" | grep 'busybox httpd')"
done
