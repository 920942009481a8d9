#!/usr/bin/env bash
# Pool benchmark: `krunner run -n 8` under the namespace backend against the GitHub API
# simulator (no added latency) with a stand-in runner that registers online, takes a short job
# and finishes. Prints krunner's own memory (guests excluded) and the slot turnaround: from
# one runner's end to the next runner online in the same slot. Prints figures; not a test.
#
# Usage: benches/run.sh            (see benches/README.md)
# Environment:
#   KRUNNER     krunner binary         [target/release/krunner, built if absent]
#   BENCH_DIR   work dir               [/var/tmp/krunner-bench]
#   SLOTS       runner loops (-n)      [8]
#   REPEAT      runs per loop (-r)     [5]
#   JOB_SECS    the stand-in's job     [1]
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/krunner-bench}
SLOTS=${SLOTS:-8}
REPEAT=${REPEAT:-5}
JOB_SECS=${JOB_SECS:-1}
TAG=bench
REBUILD_IMAGE=0
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root: the namespace backend needs it"
for cmd in docker-registry skopeo umoci busybox; do
	command -v "$cmd" >/dev/null 2>&1 || die "missing $cmd (apt-get install ${cmd/busybox/busybox-static})"
done

WORK=
cleanup() {
	stop_registry
	[[ -z $SIM_PID ]] || kill "$SIM_PID" 2>/dev/null || true
	[[ -z $WORK ]] || rm -rf "$WORK"
}

# A runner image: busybox, user runner (1001), and a stand-in Runner.Listener that reports to
# the simulator and stamps /proc/uptime (shared with the host under namespaces) into /record.
build_runner_image() {
	local body=$WORK/standin.sh
	cat >"$body" <<-'STANDIN'
		wget -q -O- --post-data="$secret" "$url/online" >/dev/null || exit 7
		cut -d' ' -f1 /proc/uptime > "/record/$name.online"
		wget -q -O- --post-data="$secret" "$url/job-started" >/dev/null || exit 8
		sleep "$(cat /record/job-secs)"
		wget -q -O- --post-data="$secret" "$url/job-finished" >/dev/null || exit 9
		cut -d' ' -f1 /proc/uptime > "/record/$name.finished"
	STANDIN
	standin_image "$1" "$WORK/bundle" "$body"
}

# sample_rss PID: prints "parent_rss_kb total_rss_kb total_pss_kb" for krunner (the parent)
# and all krunner processes (the parent plus its VM children: ns-child and PID 1 per guest),
# guests excluded. RSS counts the pages the processes share (the binary) once per process;
# PSS divides them among the sharers, so its sum is the memory they really take.
sample_rss() {
	local parent total=0 pss=0 pid comm rss p
	parent=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0)
	for pid in /proc/[0-9]*; do
		comm=$(cat "$pid/comm" 2>/dev/null || true)
		[[ $comm == krunner || $comm == krunner-init ]] || continue
		rss=$(awk '/^VmRSS:/ { print $2 }' "$pid/status" 2>/dev/null || echo 0)
		p=$(awk '/^Pss:/ { print $2 }' "$pid/smaps_rollup" 2>/dev/null || echo 0)
		total=$((total + ${rss:-0}))
		pss=$((pss + ${p:-0}))
	done
	echo "${parent:-0} $total $pss"
}

main() {
	find_krunner
	mkdir -p "$BENCH_DIR"
	BENCH_DIR=$(realpath "$BENCH_DIR")
	WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM

	log "building the stand-in runner image"
	build_runner_image "$WORK/layout" >/dev/null
	start_registry
	local ref=127.0.0.1:$PORT/bench/runner:latest
	skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$TAG" "docker://$ref" >/dev/null

	# shellcheck disable=SC2119 # start_sim takes simulator options; none needed here
	start_sim

	local rec=$WORK/record cache=$WORK/cache
	mkdir -p "$rec"
	chmod 777 "$rec"
	echo "$JOB_SECS" >"$rec/job-secs"
	"$KRUNNER" --cache-dir "$cache" -q pull "$ref" >/dev/null
	log "krunner run -n $SLOTS -r $REPEAT (namespace backend, simulator on 127.0.0.1:$SIM_PORT)"
	local t0 t1
	now_us t0
	KRUNNER_TOKEN=bench-pat "$KRUNNER" --cache-dir "$cache" -q run --backend namespace \
		-n "$SLOTS" -r "$REPEAT" --max-concurrent-boots "$SLOTS" --pull never \
		--api-url "http://127.0.0.1:$SIM_PORT" -p bench/repo -i "$ref" --name-prefix bench \
		-M "$rec:/record" >"$WORK/krunner.log" 2>&1 &
	local kpid=$! max_parent=0 max_total=0 max_pss=0 p t q
	while kill -0 "$kpid" 2>/dev/null; do
		read -r p t q < <(sample_rss "$kpid")
		((p > max_parent)) && max_parent=$p
		((t > max_total)) && max_total=$t
		((q > max_pss)) && max_pss=$q
		sleep 0.05
	done
	wait "$kpid" || { tail -20 "$WORK/krunner.log" >&2; die "krunner run failed"; }
	now_us t1

	# Turnaround per slot: finished(seq k) → online(seq k+1), from /proc/uptime stamps.
	local -a turns=()
	local s k prev next
	local -a names
	for ((s = 0; s < SLOTS; s++)); do
		mapfile -t names < <(find "$rec" -maxdepth 1 -name "bench-$s-*.online" -printf '%f\n' | sed 's/\.online$//' | sort -t- -k3 -n)
		for ((k = 1; k < ${#names[@]}; k++)); do
			prev=$rec/${names[k - 1]}.finished
			next=$rec/${names[k]}.online
			[[ -f $prev && -f $next ]] || continue
			turns+=("$(awk -v a="$(cat "$prev")" -v b="$(cat "$next")" 'BEGIN { printf "%d", (b - a) * 1000000 }')")
		done
	done
	local runs
	runs=$(find "$rec" -name '*.finished' | wc -l)
	echo
	echo "== krunner run benchmark (namespace backend, GitHub simulator, stand-in runner) =="
	echo "krunner:  $KRUNNER ($("$KRUNNER" --version 2>/dev/null || echo '?'))"
	echo "host:     $(nproc) CPUs, $(uname -r); load average $(loadavg)"
	echo "pool:     -n $SLOTS -r $REPEAT, job $JOB_SECS s each: $runs runs finished in $(secs $((t1 - t0))) s"
	echo
	printf '%-52s %10s\n' "krunner parent RSS, max" "$(awk -v k="$max_parent" 'BEGIN { printf "%.1f MB", k / 1024 }')"
	printf '%-52s %10s\n' "krunner processes (parent + VM children), RSS sum, max" "$(awk -v k="$max_total" 'BEGIN { printf "%.1f MB", k / 1024 }')"
	printf '%-52s %10s\n' "krunner processes (parent + VM children), PSS sum, max" "$(awk -v k="$max_pss" 'BEGIN { printf "%.1f MB", k / 1024 }')"
	if ((${#turns[@]})); then
		printf '%-52s %7s ms   (n=%d, max %s ms)\n' "slot turnaround (runner end -> next runner online), median" \
			"$(msecs "$(median "${turns[@]}")")" "${#turns[@]}" "$(msecs "$(printf '%s\n' "${turns[@]}" | sort -n | tail -1)")"
	else
		echo "no turnaround measured (fewer than 2 runs per slot?)"
	fi
	echo "targets: krunner's own RSS <= 50 MB; turnaround <= 300 ms (guest boot excluded: the namespace backend has none)"
	echo "note: /proc/uptime has 10 ms resolution."
}

main "$@"
