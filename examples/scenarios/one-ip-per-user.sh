#!/bin/bash
# Scenario 1 of docs/scenarios.md: one IP address per user.
#
# Each user runs a stack of their own, published with mode 0600: only that user (and root)
# may connect to it, so only their programs get its address. A server on the LAN (the
# kernel's busybox httpd, in a namespace) sees a distinct source address per user, and a
# user who tries the other's stack is refused before the program starts. A third stack,
# root's, is for a team: mode 0660 and USER1's group let USER1 in, and not USER2.
#
# usage (as root, for the namespace): one-ip-per-user.sh [USER1 USER2]   (alice bob)
. "$(dirname "$0")/lib.sh"
U1=${1:-alice}
U2=${2:-bob}
need_user "$U1"
need_user "$U2"

switch lan -m 0666                       # any user may plug into the LAN
ns_add server
tap_on "$(ns server)" lan 10.40.1.1/24 tap0
www "$W/www" "the server"
httpd_in "$(ns server)" 10.40.1.1 "$W/www"

mkdir -m 1777 "$W/run"                   # like /tmp: anyone may publish here, sticky
for u in "$U1" "$U2"; do
    case $u in "$U1") addr=10.40.1.11 ;; *) addr=10.40.1.12 ;; esac
    # each user publishes their own stack; -m 0600: nobody else may connect to it
    as_user "$u" $THREADNET stack "$W/run/$u.stack" --link "vde://$W/lan" \
        --config "eth,ip=$addr/24" -m 0600 -d -p "$W/run/$u.pid"
    track_pidfile "$W/run/$u.pid"
done
# and root publishes one for a team: mode 0660 and the group of USER1, USER2 not in it
g=$(id -gn "$U1")
tn stack "$W/run/team.stack" --link "vde://$W/lan" --config eth,ip=10.40.1.20/24 \
    -m 0660 -g "$g" -d -p "$W/run/team.pid"
track_pidfile "$W/run/team.pid"
for s in "$U1" "$U2" team; do
    ls -l "$W/run/$s.stack" | awk '{print $1, $3, $4, $NF}' | sed "s|$W/run/||"
done

for u in "$U1" "$U2"; do
    # any program, here curl, on the user's stack: the server sees the user's address
    seen=$(as_user "$u" $THREADNET run --stack "$W/run/$u.stack" -- \
        curl -sS -m 10 http://10.40.1.1/cgi-bin/ip)
    say "$u's curl: the server saw $seen"
done

# the team's stack: its group's members may use it
seen=$(as_user "$U1" $THREADNET run --stack "$W/run/team.stack" -- \
    curl -sS -m 10 http://10.40.1.1/cgi-bin/ip)
say "$U1's curl on the team's stack: the server saw $seen"

# the other user's stack is not theirs to use: refused, and curl never runs
if err=$(as_user "$U2" $THREADNET run --stack "$W/run/$U1.stack" -- \
        curl -sS -m 10 http://10.40.1.1/cgi-bin/ip 2>&1); then
    die "$U2 used $U1's stack: $err"
fi
case $err in
    *"[Errno 13]"*) say "$U2 on $U1's stack: refused (EACCES)" ;;
    *) die "$U2 on $U1's stack failed, but not as expected: $err" ;;
esac
if err=$(as_user "$U1" $THREADNET run --stack "$W/run/$U2.stack" -- \
        busybox wget -q -O - http://10.40.1.1/cgi-bin/ip 2>&1); then
    die "$U1 used $U2's stack: $err"
fi
case $err in
    *"[Errno 13]"*) say "$U1 on $U2's stack: refused (EACCES)" ;;
    *) die "$U1 on $U2's stack failed, but not as expected: $err" ;;
esac
if err=$(as_user "$U2" $THREADNET run --stack "$W/run/team.stack" -- \
        curl -sS -m 10 http://10.40.1.1/cgi-bin/ip 2>&1); then
    die "$U2 used the team's stack: $err"
fi
case $err in
    *"[Errno 13]"*) say "$U2 on the team's stack: refused (EACCES)" ;;
    *) die "$U2 on the team's stack failed, but not as expected: $err" ;;
esac
