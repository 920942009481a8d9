#!/usr/bin/env bash
# Jail benchmark: what a guest's network jail (its own network namespace, the nftables egress
# rules and a pasta process) costs per run, against the same run without it
# (`--egress-policy open`), under the namespace backend: the host-side milliseconds before the
# guest starts, the whole run, and pasta's memory while a guest runs. Prints figures; it is not
# a test.
#
# Usage: benches/jail.sh            (as root; see benches/README.md)
# Environment:
#   KRUNNER    krunner binary            [target/release/krunner, built if absent]
#   BENCH_DIR  work dir                  [/var/tmp/krunner-bench]
#   ROUNDS     runs per policy           [15]
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-15}
BENCH_DIR=${BENCH_DIR:-/var/tmp/krunner-bench}
REBUILD_IMAGE=0
TAG=jail
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root: the namespace backend and the jail need it"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
PATH=$PATH:/usr/sbin:/sbin
for cmd in docker-registry skopeo umoci busybox curl pasta nft; do
	command -v "$cmd" >/dev/null 2>&1 || die "missing $cmd (apt-get install docker-registry skopeo umoci busybox-static curl passt nftables)"
done

WORK=
cleanup() {
	stop_registry
	[[ -z $WORK ]] || rm -rf "$WORK"
}

# Samples per policy and timing (microseconds), see record in lib.sh.
declare -A RES=()

run_once() { # policy
	local err t0 t1 line kv k v
	err=$(mktemp)
	now_us t0
	"$KRUNNER" -v --cache-dir "$WORK/cache" exec --offline --backend namespace \
		--egress-policy "$1" "$REF" -- /bin/true 2>"$err" || { cat "$err" >&2 && die "krunner exec failed"; }
	now_us t1
	line=$(grep -o 'timings: .*' "$err" || true)
	rm -f "$err"
	[[ -n $line ]] || die "no timings line in krunner -v output"
	for kv in ${line#timings: }; do
		k=${kv%%=*}
		v=${kv#*=}
		[[ $v == - ]] && continue
		record "$1" "${k%_ms}" "$(to_us "$v")"
	done
	record "$1" wall $((t1 - t0))
}

# pasta's resident and proportional memory (kB) while one jailed guest sleeps.
pasta_memory() {
	local pid="" rss pss
	"$KRUNNER" -q --cache-dir "$WORK/cache" exec --offline --backend namespace "$REF" -- sleep 5 &
	local k=$!
	for _ in $(seq 100); do
		pid=$(pgrep -f "pasta.*$WORK/cache/runs" | head -1 || true)
		[[ -n $pid ]] && break
		sleep 0.05
	done
	[[ -n $pid ]] || die "no pasta process seen"
	sleep 1
	rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
	pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup")
	wait "$k"
	echo "$rss $pss"
}

main() {
	find_krunner
	mkdir -p "$BENCH_DIR"
	BENCH_DIR=$(realpath "$BENCH_DIR")
	WORK=$(mktemp -d "$BENCH_DIR/jail.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	local body=$WORK/body
	echo 'exit 0' >"$body"
	standin_image "$WORK/layout" "$WORK/bundle" "$body"
	start_registry
	REF=127.0.0.1:$PORT/bench/jail:$TAG
	skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$TAG" "docker://$REF" >/dev/null
	"$KRUNNER" --cache-dir "$WORK/cache" -q pull "$REF" >/dev/null
	stop_registry
	local load_start r
	load_start=$(loadavg)
	run_once public # warm-up: page cache, first pasta exec
	RES=()
	for ((r = 0; r < ROUNDS; r++)); do
		# alternate so that drift hits both alike
		run_once public
		run_once open
		log "round $((r + 1))/$ROUNDS"
	done
	local mem rss pss
	mem=$(pasta_memory)
	read -r rss pss <<<"$mem"
	echo
	echo "== krunner jail benchmark (namespace backend, busybox image, /bin/true) =="
	echo "krunner:  $KRUNNER"
	echo "pasta:    $(command -v pasta) ($(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo '?'))"
	echo "host:     $(nproc) CPUs, $(uname -r)"
	echo "rounds:   $ROUNDS per policy, alternating; load average $load_start at start, $(loadavg) at end"
	echo
	printf '%-46s %10s %10s %10s\n' "median, ms" "public" "open" "cost"
	local m a b
	for m in jail host_before_guest total wall; do
		a=$(med_ms public "$m")
		b=$(med_ms open "$m")
		printf '%-46s %10s %10s %10s\n' "$(case $m in
			jail) echo "jail (namespace, rules, pasta ready)" ;;
			host_before_guest) echo "host work before the guest command starts" ;;
			total) echo "whole run incl. guest and cleanup" ;;
			wall) echo "wall time of krunner exec (process)" ;;
			esac)" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.1f", a - b }')"
	done
	echo
	printf 'pasta per guest while it runs: RSS %.1f MB, PSS %.1f MB\n' "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(awk -v k="$pss" 'BEGIN { print k / 1024 }')"
}

main "$@"
