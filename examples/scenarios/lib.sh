# Shared helpers of the scenario scripts (docs/scenarios.md). Sourced, not run.
#
# The scripts build their own small world to show a scenario end to end: a switch, and
# network namespaces standing in for other machines (a server, a gateway). They need root
# for the namespaces and taps only; the programs that matter run as ordinary users where
# the scenario says so. Everything they start is ended by PID, and every namespace they
# made is deleted, when they exit (even on Ctrl-C or an error).
#
# Environment:
#   THREADNET    how to run threadnet (default: threadnet)
#   TN_PYTHONPATH  PYTHONPATH for threadnet run as another user (default: none)
#   TN_WORKDIR   an empty directory to work in (default: a new one under /tmp, removed)
#   TN_PREFIX    prefix of the namespaces' names (default: tnsc<PID>)

set -eu

say() { printf '%s\n' "$*"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# need TOOL...: stop at once, saying what is missing
need() {
    for _t in "$@"; do
        command -v "$_t" >/dev/null || die "$_t is not installed (scripts/test lists the packages)"
    done
}
# need_user USER: an existing account
need_user() {
    id "$1" >/dev/null 2>&1 || die "there is no user $1: name existing users, or useradd $1"
}
[ "$(id -u)" = 0 ] || die "run as root: the scenario makes network namespaces and taps"
need ip setpriv vde_switch vde_plug2tap busybox curl

THREADNET=${THREADNET:-threadnet}
TN_PREFIX=${TN_PREFIX:-tnsc$$}
if [ -n "${TN_WORKDIR:-}" ]; then
    W=$TN_WORKDIR
    _own_workdir=
else
    W=$(mktemp -d /tmp/tn-scenario-XXXXXX)
    _own_workdir=1
fi
chmod 755 "$W"
_pids=""
_namespaces=""

tn() { $THREADNET "$@"; }                      # threadnet, as root

# as_user USER CMD...: run CMD as USER with no privileges and a clean environment
as_user() {
    _u=$1; shift
    setpriv --reuid="$_u" --regid="$(id -g "$_u")" --clear-groups \
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp PYTHONPATH="${TN_PYTHONPATH:-}" "$@"
}

# as_user_bg USER CMD...: the same in the background, ended at exit
as_user_bg() {
    _u=$1; shift
    setpriv --reuid="$_u" --regid="$(id -g "$_u")" --clear-groups \
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp PYTHONPATH="${TN_PYTHONPATH:-}" "$@" &
    track $!
}

track() { _pids="$_pids $1"; }                 # end this PID at exit
track_pidfile() {                             # ... the PID a daemon writes to FILE
    _i=0
    while [ ! -s "$1" ]; do
        _i=$((_i + 1)); [ $_i -lt 100 ] || die "no pidfile $1"; sleep 0.1
    done
    track "$(cat "$1")"
}

# ns NAME: the name of our namespace NAME; ns_add NAME: make it, its loopback up
ns() { printf '%s-%s' "$TN_PREFIX" "$1"; }
ns_add() {
    _n=$(ns "$1")
    ip netns add "$_n"
    _namespaces="$_namespaces $_n"
    ip -n "$_n" link set lo up
}
in_ns() { _n=$1; shift; ip netns exec "$_n" "$@"; }

# switch NAME [vde_switch options]: Debian's vde_switch at $W/NAME (console $W/NAME.mgmt)
switch() {
    _s=$1; shift
    vde_switch -s "$W/$_s" -M "$W/$_s.mgmt" -d -p "$W/$_s.pid" "$@"
    track_pidfile "$W/$_s.pid"
}

# tap_on NS SWITCH ADDR/PLEN TAP: a tap in NS with ADDR, joined to the switch by vde_plug2tap
tap_on() {
    _n=$1 _sw=$2 _a=$3 _t=$4
    in_ns "$_n" ip tuntap add dev "$_t" mode tap
    ip -n "$_n" addr add "$_a" dev "$_t"
    ip -n "$_n" link set "$_t" up
    in_ns "$_n" vde_plug2tap -s "$W/$_sw" -d -P "$W/$_n-$_t.pid" "$_t"
    track_pidfile "$W/$_n-$_t.pid"
}

# www DIR TEXT: a web root whose index.html says TEXT and whose /cgi-bin/ip answers with
# the client's address as the server sees it (REMOTE_ADDR)
www() {
    mkdir -p "$1/cgi-bin"
    printf '%s\n' "$2" > "$1/index.html"
    printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%%s\\n" "$REMOTE_ADDR"\n' \
        > "$1/cgi-bin/ip"
    chmod 755 "$1" "$1/cgi-bin" "$1/cgi-bin/ip"
    chmod 644 "$1/index.html"
}

# httpd_in NS ADDR DIR: the kernel's busybox httpd in NS on ADDR:80, serving DIR
httpd_in() {
    ip netns exec "$1" busybox httpd -f -p "$2:80" -h "$3" &
    track $!
    wait_until "busybox httpd on $2" in_ns "$1" curl -s -o /dev/null -m 2 "http://$2/"
}

# wait_until WHAT CMD...: retry CMD for up to 20 s
wait_until() {
    _what=$1; shift
    _i=0
    until "$@" >/dev/null 2>&1; do
        _i=$((_i + 1)); [ $_i -lt 100 ] || die "timed out waiting for $_what"; sleep 0.2
    done
}

_alive() {                                     # running (not gone, not a zombie)
    [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != "" ] &&
        [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}

cleanup() {
    trap - EXIT INT TERM
    for _p in $_pids; do kill "$_p" 2>/dev/null || true; done
    for _n in $_namespaces; do           # whatever still runs inside, by PID
        for _p in $(ip netns pids "$_n" 2>/dev/null); do kill "$_p" 2>/dev/null || true; done
    done
    for _p in $_pids; do                 # daemons remove their sockets on SIGTERM
        _i=0
        while _alive "$_p" && [ $_i -lt 30 ]; do _i=$((_i + 1)); sleep 0.1; done
        kill -9 "$_p" 2>/dev/null || true
    done
    for _n in $_namespaces; do
        for _p in $(ip netns pids "$_n" 2>/dev/null); do kill -9 "$_p" 2>/dev/null || true; done
        ip netns del "$_n" 2>/dev/null || true
    done
    if [ -n "$_own_workdir" ]; then rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
