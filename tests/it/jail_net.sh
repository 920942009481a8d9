#!/bin/sh
# The network of the jail tests (tests/it/jail.rs), made inside the network and mount
# namespaces that `unshare --net --mount` gave this script, so nothing of it touches the host:
#
#   this namespace ("the host" for krunner)      the "world" namespace (the internet)
#   lo: 127.0.0.1:8081 secret service            lo: 203.0.113.10 (TEST-NET-3, public)
#       127.0.0.1:8082 service to allow              10.1.2.3, 10.9.9.9 (RFC 1918)
#   v-out 192.0.2.2/24, default via 192.0.2.1 ---   169.254.169.254 (metadata)
#   lo: 198.51.100.7 (another host address)       v-world 192.0.2.1/24
#   *:8083 host service on every address         *:8080 answers WORLD on each of them
#
# Usage: jail_net.sh DIR MODE KRUNNER ARGS...
#   MODE once: run KRUNNER ARGS... once;
#   MODE pair: run it twice at the same time with KRUNNER_MOUNT=DIR/gN:/s (N = 1, 2); once
#              both guests have written /s/state, record the host's listeners on port 8090
#              in DIR/host-listeners and let them go on (DIR/gN/go).
set -eu
D=$1
MODE=$2
shift 2

ip link set lo up
: >"$D/world"
unshare --net="$D/world" true
w() { nsenter --net="$D/world" "$@"; }
ip link add v-out type veth peer name v-world
ip link set v-world netns "$D/world"
w ip link set lo up
w ip link set v-world up
w ip addr add 192.0.2.1/24 dev v-world
# On loopback: not every kernel has dummy devices.
for a in 203.0.113.10 10.1.2.3 10.9.9.9 169.254.169.254; do
  w ip addr add "$a/32" dev lo
done
ip addr add 192.0.2.2/24 dev v-out
ip link set v-out up
ip route add default via 192.0.2.1
ip addr add 198.51.100.7/32 dev lo

for s in world secret allowed host; do
  mkdir -p "$D/www/$s"
done
echo WORLD >"$D/www/world/index.html"
echo SECRET >"$D/www/secret/index.html"
echo ALLOWED >"$D/www/allowed/index.html"
echo HOST >"$D/www/host/index.html"
# Their output goes nowhere: a server holding our stdout would keep the test waiting.
pids=""
serve() { "$@" </dev/null >/dev/null 2>&1 & pids="$pids $!"; }
trap 'kill $pids 2>/dev/null || true' EXIT
# The krunners of MODE pair still running: SIGTERM, then up to 60 s to clean up, then SIGKILL.
stop_guests() {
  for f in "$D/g1.pid" "$D/g2.pid"; do
    [ -e "$f" ] || continue
    p=$(cat "$f")
    kill -TERM "$p" 2>/dev/null || continue
    n=0
    while kill -0 "$p" 2>/dev/null && [ "$n" -lt 600 ]; do
      n=$((n + 1))
      sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
  done
}
serve nsenter --net="$D/world" busybox httpd -f -p 8080 -h "$D/www/world"
serve busybox httpd -f -p 127.0.0.1:8081 -h "$D/www/secret"
serve busybox httpd -f -p 127.0.0.1:8082 -h "$D/www/allowed"
serve busybox httpd -f -p 8083 -h "$D/www/host"
# The servers are up once each answers.
for p in 8081 8082 8083; do
  i=0
  until printf 'GET / HTTP/1.0\r\n\r\n' | timeout 2 busybox nc 127.0.0.1 "$p" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 100 ] || { echo "jail_net.sh: server on port $p never came up" >&2; exit 99; }
    sleep 0.05
  done
done

case $MODE in
once)
  "$@"
  ;;
pair)
  for g in 1 2; do
    KRUNNER_MOUNT="$D/g$g:/s" "$@" >"$D/g$g.out" 2>&1 &
    echo $! >"$D/g$g.pid"
  done
  # Should a guest not come up, stop both krunners (they clean up on SIGTERM) and show what
  # they printed: a krunner left running would hold its VM past this test.
  trap 'kill $pids 2>/dev/null || true; stop_guests' EXIT
  i=0
  until [ -e "$D/g1/state" ] && [ -e "$D/g2/state" ]; do
    i=$((i + 1))
    if [ "$i" -ge 3000 ]; then
      echo "jail_net.sh: the guests never started listening" >&2
      for g in 1 2; do
        echo "--- guest $g printed:" >&2
        cat "$D/g$g.out" >&2
      done
      exit 98
    fi
    sleep 0.1
  done
  ss -ltnH | grep ':8090 ' >"$D/host-listeners" || true
  touch "$D/g1/go" "$D/g2/go"
  st=0
  wait "$(cat "$D/g1.pid")" || st=$?
  wait "$(cat "$D/g2.pid")" || st=$?
  rm -f "$D/g1.pid" "$D/g2.pid"
  cat "$D/g1.out" "$D/g2.out"
  exit "$st"
  ;;
esac
