#!/usr/bin/env bash
# Scale sets: how long a burst of jobs waits for runners, warm (`--min-idle 2`) against cold
# (`--min-idle 0`), and how many guests each way starts per job. `krunner run --scale-set`
# under the namespace backend against the GitHub API simulator's Actions service (1 s long
# polls); a stand-in scale-set runner stamps /proc/uptime when it comes online and when it
# starts its job. Rounds alternate the two; medians are printed with their ratio. Prints
# figures; not a test.
#
# Usage: benches/scaleset.sh          (see benches/README.md)
# Environment:
#   KRUNNER     krunner binary          [target/release/krunner, built if absent]
#   BENCH_DIR   work dir                [/var/tmp/krunner-bench]
#   ROUNDS      rounds per variant      [3]
#   BURST       jobs queued at once     [4]
#   MAX         --max                   [4]
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/krunner-bench}
ROUNDS=${ROUNDS:-3}
BURST=${BURST:-4}
MAX=${MAX:-4}
TAG=bench
REBUILD_IMAGE=0
declare -A RES=()
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root: the namespace backend needs it"
for cmd in docker-registry skopeo umoci busybox curl jq; do
	command -v "$cmd" >/dev/null 2>&1 || die "missing $cmd (apt-get install ${cmd/busybox/busybox-static})"
done

KPID=
WORK=
cleanup() {
	[[ -z $KPID ]] || kill -9 "$KPID" 2>/dev/null || true
	stop_registry
	[[ -z $SIM_PID ]] || kill "$SIM_PID" 2>/dev/null || true
	[[ -z $WORK || -n ${KEEP:-} ]] || rm -rf "$WORK"
}

# The stand-in scale-set runner (after lib.sh's JIT preamble): online, then ask for a job.
build_image() {
	local body=$WORK/standin.sh
	cat >"$body" <<-'STANDIN'
		wget -q -O /dev/null --post-data="$secret" "$url/online" || exit 7
		cut -d' ' -f1 /proc/uptime > "/record/$name.online"
		(while sleep 1; do wget -q -O /dev/null --post-data="$secret" "$url/heartbeat" 2>/dev/null; done) &
		trap 'kill $! 2>/dev/null; exit 0' TERM
		while :; do
			out=$(wget -q -O- "$url/job?secret=$secret" 2>/dev/null) || true
			case "$out" in *'"jobId"'*) break ;; esac
			sleep 0.2
		done
		cut -d' ' -f1 /proc/uptime > "/record/$name.started"
		wget -q -O /dev/null --post-data="$secret" "$url/job-started" || exit 8
		sleep 1
		wget -q -O /dev/null --post-data="$secret" "$url/job-finished" || exit 9
		exit 0
	STANDIN
	standin_image "$1" "$WORK/bundle" "$body"
}

uptime_us() { awk '{ printf "%.0f", $1 * 1000000 }' /proc/uptime; }

# one_round VARIANT MIN_IDLE: a krunner serving the set, a burst once its warm runners are
# online, the waits and the guest count recorded.
one_round() {
	local variant=$1 min_idle=$2 rec=$WORK/record-$1-$RANDOM id t0 f i
	mkdir -p "$rec"
	chmod 777 "$rec"
	KRUNNER_TOKEN=bench-pat KRUNNER_SCALESET_MIN_IDLE_AGE_MS=1000 "$KRUNNER" --cache-dir "$WORK/cache" -q \
		run --backend namespace --pull never --api-url "http://127.0.0.1:$SIM_PORT" -p bench/repo \
		-i "$IMAGE" --name-prefix "b$variant" -M "$rec:/record" --scale-set bench-set \
		--min-idle "$min_idle" --max "$MAX" -c 1 --host-cpus "$MAX" >"$WORK/krunner-$variant.log" 2>&1 &
	KPID=$!
	for _ in $(seq 300); do
		id=$(curl -fsS "http://127.0.0.1:$SIM_PORT/_sim/scalesets" | jq -r '.[] | select(.name == "bench-set") | .id' | tail -1)
		[[ -n $id ]] && (($(find "$rec" -name '*.online' | wc -l) >= min_idle)) && break
		sleep 0.1
	done
	[[ -n $id ]] || die "no scale set"
	sleep 1
	t0=$(uptime_us)
	for ((i = 0; i < BURST; i++)); do
		curl -fsS -X POST -d '{"labels":["bench-set"]}' "http://127.0.0.1:$SIM_PORT/_sim/scalesets/$id/jobs" >/dev/null
	done
	for _ in $(seq 600); do
		(($(find "$rec" -name '*.started' | wc -l) >= BURST)) && break
		sleep 0.1
	done
	log "$variant: $(find "$rec" -name "*.started" | wc -l) jobs started, $(find "$rec" -name "*.online" | wc -l) runners"
	for f in "$rec"/*.started; do
		record "$variant" wait "$(($(awk '{ printf "%.0f", $1 * 1000000 }' "$f") - t0))"
	done
	# Until every job is done, then stop.
	for _ in $(seq 600); do
		[[ $(curl -fsS "http://127.0.0.1:$SIM_PORT/_sim/scalesets/$id/jobs" | jq '[.[] | select(.state != "completed")] | length') == 0 ]] && break
		sleep 0.1
	done
	kill -INT "$KPID"
	wait "$KPID" || { tail -20 "$WORK/krunner-$variant.log" >&2; die "krunner ($variant) failed"; }
	KPID=
	record "$variant" guests "$(find "$rec" -name '*.online' | wc -l)"
}

main() {
	find_krunner
	mkdir -p "$BENCH_DIR"
	BENCH_DIR=$(realpath "$BENCH_DIR")
	WORK=$(mktemp -d "$BENCH_DIR/scaleset.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	start_sim --poll-wait-ms 1000
	log "building the stand-in image"
	build_image "$WORK/layout" >/dev/null
	start_registry
	IMAGE=127.0.0.1:$PORT/bench/scaleset:latest
	skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$TAG" "docker://$IMAGE" >/dev/null
	"$KRUNNER" --cache-dir "$WORK/cache" -q pull "$IMAGE" >/dev/null
	local i
	for ((i = 1; i <= ROUNDS; i++)); do
		log "round $i/$ROUNDS"
		one_round cold 0
		one_round warm 2
	done
	local -a g
	echo
	echo "== scale sets: a burst of $BURST jobs, --max $MAX (namespace backend, GitHub simulator, 1 s long polls) =="
	echo "krunner:  $KRUNNER ($("$KRUNNER" --version 2>/dev/null | head -1 || echo '?'))"
	echo "host:     $(nproc) CPUs, $(uname -r); load average $(loadavg)"
	echo "rounds:   $ROUNDS per variant, alternating"
	echo
	printf '%-58s %9s ms\n' "job queued -> its runner starts it, cold (--min-idle 0), median" "$(med_ms cold wait)"
	printf '%-58s %9s ms\n' "job queued -> its runner starts it, warm (--min-idle 2), median" "$(med_ms warm wait)"
	printf '%-58s %9s\n' "  ratio warm / cold" "$(awk -v a="$(med_ms warm wait)" -v b="$(med_ms cold wait)" 'BEGIN { printf "%.3f", a / b }')"
	read -ra g <<<"${RES[cold.guests]}"
	printf '%-58s %9s\n' "guests started per job, cold (median over rounds)" "$(awk -v n="$(median "${g[@]}")" -v b="$BURST" 'BEGIN { printf "%.2f", n / b }')"
	read -ra g <<<"${RES[warm.guests]}"
	printf '%-58s %9s\n' "guests started per job, warm (incl. the idle ones)" "$(awk -v n="$(median "${g[@]}")" -v b="$BURST" 'BEGIN { printf "%.2f", n / b }')"
	echo "note: the namespace backend boots no kernel; a microVM adds its boot (seconds) to every cold wait."
}

main "$@"
