#!/usr/bin/env bash
# GitHub API budget benchmark: how many API requests per hour `krunner run -n 8` sends, idle
# (every runner online, no job), busy (every runner in a long job) and with short jobs back to
# back (requests per job), against the GitHub API simulator under the namespace backend. Reads
# krunner's own counter (`krunner_github_api_calls_total` of --metrics) at the start and the
# end of a window in steady state and scales the difference to an hour. Prints figures; not a
# test.
#
# Usage: sudo benches/api.sh        (see benches/README.md)
# Environment:
#   KRUNNER     krunner binary              [target/release/krunner, built if absent]
#   BENCH_DIR   work dir                    [/var/tmp/krunner-bench]
#   SLOTS       runner loops (-n)           [8]
#   WINDOW      seconds measured per phase  [300]
#   WARMUP      seconds after the runners are up, before measuring [60]
#   JOB_SECS    the short jobs' length      [30]
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/krunner-bench}
SLOTS=${SLOTS:-8}
WINDOW=${WINDOW:-300}
WARMUP=${WARMUP:-60}
JOB_SECS=${JOB_SECS:-30}
TAG=bench
REBUILD_IMAGE=0
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root: the namespace backend needs it"
for cmd in docker-registry skopeo umoci busybox curl; do
	command -v "$cmd" >/dev/null 2>&1 || die "missing $cmd"
done

KPID=
WORK=
cleanup() {
	[[ -z $KPID ]] || kill -KILL "$KPID" 2>/dev/null || true
	stop_registry
	[[ -z $SIM_PID ]] || kill "$SIM_PID" 2>/dev/null || true
	[[ -z $WORK ]] || rm -rf "$WORK"
}

# A runner image: busybox, user runner (1001), and a stand-in Runner.Listener that reports to
# the simulator as /record/mode says: "idle" (online, no job), "busy" (a job that does not
# end), or a number (a job of that many seconds, then the next runner).
build_runner_image() {
	local body=$WORK/standin.sh
	cat >"$body" <<-'STANDIN'
		wget -q -O- --post-data="$secret" "$url/online" >/dev/null || exit 7
		touch "/record/$name.online"
		mode=$(cat /record/mode)
		trap 'exit 0' TERM
		if [ "$mode" = idle ]; then sleep 100000 & wait $!; exit 0; fi
		wget -q -O- --post-data="$secret" "$url/job-started" >/dev/null || exit 8
		if [ "$mode" = busy ]; then sleep 100000 & wait $!; exit 0; fi
		sleep "$mode"
		wget -q -O- --post-data="$secret" "$url/job-finished" >/dev/null || exit 9
		touch "/record/$name.finished"
	STANDIN
	standin_image "$1" "$WORK/bundle" "$body"
}

# calls ADDR: krunner_github_api_calls_total from the metrics endpoint.
calls() {
	curl -fsS "http://$1/metrics" | awk '$1 == "krunner_github_api_calls_total" { print $2 }'
}

# phase MODE: runs krunner with the stand-in in MODE; prints "requests_per_hour jobs_in_window".
phase() {
	local mode=$1 rec=$WORK/record-$1 port c0 c1 jobs0 jobs1
	mkdir -p "$rec"
	chmod 777 "$rec"
	echo "$mode" >"$rec/mode"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	KRUNNER_TOKEN=bench-pat "$KRUNNER" --cache-dir "$WORK/cache" -q run --backend namespace \
		-n "$SLOTS" --max-concurrent-boots "$SLOTS" --pull never --metrics "127.0.0.1:$port" \
		--api-url "http://127.0.0.1:$SIM_PORT" -p bench/repo -i "$REF" --name-prefix "api-$mode" \
		-M "$rec:/record" >"$WORK/krunner-$mode.log" 2>&1 &
	KPID=$!
	for _ in $(seq 600); do
		(($(find "$rec" -name '*.online' | wc -l) >= SLOTS)) && break
		sleep 0.2
	done
	sleep "$WARMUP"
	c0=$(calls "127.0.0.1:$port")
	jobs0=$(find "$rec" -name '*.finished' | wc -l)
	sleep "$WINDOW"
	c1=$(calls "127.0.0.1:$port")
	jobs1=$(find "$rec" -name '*.finished' | wc -l)
	kill -INT "$KPID"
	sleep 2
	kill -INT "$KPID" 2>/dev/null || true
	wait "$KPID" || true
	KPID=
	echo "$(((c1 - c0) * 3600 / WINDOW)) $((c1 - c0)) $((jobs1 - jobs0))"
}

main() {
	find_krunner
	mkdir -p "$BENCH_DIR"
	BENCH_DIR=$(realpath "$BENCH_DIR")
	WORK=$(mktemp -d "$BENCH_DIR/api.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	log "building the stand-in runner image"
	build_runner_image "$WORK/layout" >/dev/null
	start_registry
	REF=127.0.0.1:$PORT/bench/runner:latest
	skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$TAG" "docker://$REF" >/dev/null
	# shellcheck disable=SC2119 # start_sim takes simulator options; none needed here
	start_sim
	"$KRUNNER" --cache-dir "$WORK/cache" -q pull "$REF" >/dev/null

	local idle busy jobs n finished per_job
	log "phase 1/3: -n $SLOTS idle (${WARMUP} s warm-up, ${WINDOW} s measured)"
	read -r idle _ _ < <(phase idle)
	log "phase 2/3: -n $SLOTS busy in jobs that do not end"
	read -r busy _ _ < <(phase busy)
	log "phase 3/3: -n $SLOTS, jobs of $JOB_SECS s back to back"
	read -r jobs n finished < <(phase "$JOB_SECS")
	per_job=$(awk -v n="$n" -v d="$finished" 'BEGIN { if (d > 0) printf "%.1f", n / d; else print "?" }')
	echo
	echo "== GitHub API requests per hour, krunner run -n $SLOTS (simulator, 5,000/h budget) =="
	echo "krunner:  $KRUNNER ($("$KRUNNER" --version 2>/dev/null || echo '?'))"
	echo "window:   ${WINDOW} s per phase after ${WARMUP} s warm-up; load average $(loadavg)"
	printf '%-44s %8s /h\n' "idle (online, no job)" "$idle"
	printf '%-44s %8s /h\n' "busy (every runner in a long job)" "$busy"
	printf '%-44s %8s /h   (%s jobs, %s requests per job)\n' "jobs of $JOB_SECS s back to back" "$jobs" "$finished" "$per_job"
}

main "$@"
