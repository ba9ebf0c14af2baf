#!/bin/bash
# Scenario 2 of docs/scenarios.md: QoS per process.
#
# Two programs on the same host download from the same server. One runs on a stack whose
# link is a wirefilter (`wirefilter://speed=RATE{URL}`): its traffic crosses an emulated
# line of RATE bytes/s of Ethernet frames. The other runs on a plain link at the same time
# and is not slowed down. iperf3 then measures the limited line, and a delayed link shows
# in curl's connect time.
#
# usage (as root, for the namespace): qos-per-process.sh [RATE]   (bytes/s, 1000000)
. "$(dirname "$0")/lib.sh"
RATE=${1:-1000000}
need iperf3 python3

switch lan
ns_add server
tap_on "$(ns server)" lan 10.40.2.1/24 tap0
www "$W/www" "the server"
head -c $((RATE * 3)) /dev/urandom > "$W/www/small"      # 3 s at RATE
head -c $((RATE * 20)) /dev/urandom > "$W/www/big"       # 20 s at RATE
chmod 644 "$W/www/small" "$W/www/big"
httpd_in "$(ns server)" 10.40.2.1 "$W/www"
ip netns exec "$(ns server)" iperf3 -s -B 10.40.2.1 -D -I "$W/iperf3.pid"
track_pidfile "$W/iperf3.pid"

# the limited program and the free one, side by side
tn run --link "wirefilter://speed=$RATE{vde://$W/lan}" --config eth,ip=10.40.2.11/24 -- \
    curl -sS -m 30 -o /dev/null -w '%{speed_download}\n' http://10.40.2.1/small \
    > "$W/limited.out" &
limited=$!
sleep 0.5                                  # the limited download is under way
tn run --link "vde://$W/lan" --config eth,ip=10.40.2.12/24 -- \
    curl -sS -m 30 -o /dev/null -w '%{speed_download}\n' http://10.40.2.1/big > "$W/free.out"
free_still_running=no
if kill -0 $limited 2>/dev/null; then free_still_running=yes; fi
wait $limited || die "the limited curl failed"
say "limited curl: $(cut -d. -f1 "$W/limited.out") B/s (its line: $RATE B/s of frames)"
say "free curl: $(cut -d. -f1 "$W/free.out") B/s, done while the limited one still ran: $free_still_running"

# iperf3 (the server sends, -R) through the same kind of limited line: what it received
# in 3 s, after a first second left out (-O 1: TCP's slow start)
tn run --link "wirefilter://speed=$RATE{vde://$W/lan}" --config eth,ip=10.40.2.13/24 -- \
    iperf3 -c 10.40.2.1 -R -O 1 -t 3 -J > "$W/iperf3.json" 2>/dev/null ||
    die "iperf3 failed: $(cat "$W/iperf3.json")"
received=$(python3 -c 'import json, sys
print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 8))' \
    "$W/iperf3.json")
say "limited iperf3: $received B/s received"

# a delayed link: 100 ms each way; curl's connect crosses it four times (ARP, then the
# TCP handshake), so it takes 400 ms more
connect() {
    tn run --link "$1" --config "eth,ip=$2/24" -- \
        curl -sS -m 10 -o /dev/null -w '%{time_connect}\n' http://10.40.2.1/
}
say "delayed curl connects in $(connect "wirefilter://delay=100{vde://$W/lan}" 10.40.2.14) s"
say "plain curl connects in $(connect "vde://$W/lan" 10.40.2.15) s"
