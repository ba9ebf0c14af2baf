#!/bin/bash
# Scenario 4 of docs/scenarios.md: a VPN for some processes only.
#
# A stack whose only interface is an encrypted cable to a remote LAN, the VDE way:
#   cmd://ssh GATEWAY vde_plug /remote/switch
# ssh carries the Ethernet frames to the remote end, where vde_plug plugs them into the
# LAN's switch. The programs run on that stack reach the remote LAN; every other process
# on the machine does not even have a route to it.
#
# The script builds the world in namespaces: "this machine", a "gateway" running a
# private sshd (its own config, host key and authorized key, made here), and a "server" on
# the remote LAN (a tap on the LAN's switch).
#
# usage (as root, for the namespaces and sshd): vpn-for-some-processes.sh
. "$(dirname "$0")/lib.sh"
need ssh ssh-keygen vde_plug
[ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd is not installed (Debian: openssh-server)"

ns_add here                       # this machine
ns_add gateway                    # the remote site's ssh gateway
ns_add server                     # a server on the remote LAN
ip -n "$(ns here)" link add vpn0 type veth peer name vpn1 netns "$(ns gateway)"
ip -n "$(ns here)" addr add 10.40.4.1/30 dev vpn0
ip -n "$(ns here)" link set vpn0 up
ip -n "$(ns gateway)" addr add 10.40.4.2/30 dev vpn1
ip -n "$(ns gateway)" link set vpn1 up

# the remote LAN (no route leads there from this machine): a switch, and a server on it at 192.168.77.1
switch lan
tap_on "$(ns server)" lan 192.168.77.1/24 tap0
www "$W/www" "the remote LAN's server"
httpd_in "$(ns server)" 192.168.77.1 "$W/www"

# the real network: a site on the gateway, which every process of this machine reaches
www "$W/www-gw" "a site on the real network"
httpd_in "$(ns gateway)" 10.40.4.2 "$W/www-gw"

# the gateway's sshd: a private one, with keys made here
mkdir -m 700 "$W/ssh"
ssh-keygen -q -t ed25519 -N '' -C gateway -f "$W/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -C vpn-user -f "$W/ssh/id_ed25519"
cp "$W/ssh/id_ed25519.pub" "$W/ssh/authorized_keys"
cat > "$W/ssh/sshd_config" <<EOC
ListenAddress 10.40.4.2
HostKey $W/ssh/host_key
AuthorizedKeysFile $W/ssh/authorized_keys
# the keys live in a temporary directory under /tmp, which StrictModes would refuse
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
EOC
mkdir -p /run/sshd                 # sshd's privilege separation directory
ip netns exec "$(ns gateway)" /usr/sbin/sshd -D -e -f "$W/ssh/sshd_config" 2> "$W/sshd.log" &
track $!
# this machine's ssh client: the gateway's host key is known, no questions asked
printf '10.40.4.2 %s\n' "$(cut -d' ' -f1,2 "$W/ssh/host_key.pub")" > "$W/ssh/known_hosts"
cat > "$W/ssh/config" <<EOC
Host gateway
    HostName 10.40.4.2
    User root
    IdentityFile $W/ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $W/ssh/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
EOC
wait_until "sshd" ip netns exec "$(ns here)" ssh -F "$W/ssh/config" gateway true

# watch the cable's way out of this machine (tshark, when installed)
if command -v tshark >/dev/null; then
    ip netns exec "$(ns here)" tshark -n -i vpn0 -w "$W/cable.pcap" 2> "$W/tshark.log" &
    tshark=$!
    track $tshark
    wait_until "tshark" grep -q "Capturing on" "$W/tshark.log"
fi

# the VPN stack, published: the programs run on it use the cable, no others
ip netns exec "$(ns here)" $THREADNET stack "$W/vpn.stack" \
    --link "cmd://ssh -F $W/ssh/config gateway vde_plug $W/lan" \
    --config eth,ip=192.168.77.5/24 -m 0600 -d -p "$W/vpn.pid"
track_pidfile "$W/vpn.pid"

seen=$(ip netns exec "$(ns here)" $THREADNET run --stack "$W/vpn.stack" -- \
    curl -sS -m 10 http://192.168.77.1/cgi-bin/ip)
say "curl on the VPN stack: the remote server saw $seen"
page=$(ip netns exec "$(ns here)" $THREADNET run --stack "$W/vpn.stack" -- \
    busybox wget -q -O - http://192.168.77.1/)
say "busybox wget on the VPN stack: $page"
if out=$(ip netns exec "$(ns here)" curl -sS -m 3 http://192.168.77.1/ 2>&1); then
    die "a plain curl reached the remote LAN: $out"
fi
say "plain curl on this machine: ${out#curl: }"
say "plain curl on the real network: $(ip netns exec "$(ns here)" curl -sS -m 5 http://10.40.4.2/)"

if [ -n "${tshark:-}" ]; then                # the page crossed this machine's link encrypted
    sleep 1                                   # let tshark write what it has, then stop
    kill $tshark; wait $tshark || true
    frames=$(tshark -n -r "$W/cable.pcap" -Y 'tcp.port == 22' 2>/dev/null | wc -l)
    clear=$(grep -a -c "the remote LAN's server" "$W/cable.pcap" || true)
    plain=$(grep -a -c "a site on the real network" "$W/cable.pcap" || true)
    say "on the wire: $frames ssh frames; in clear, the remote page $clear times," \
        "the real network's page $plain times"
fi
