#!/usr/bin/env bash
# Launch benchmark: the per-run clone of the realistic image (overlay vs a full copy), and the
# host-side time from `krunner exec` to the guest command running under the namespace backend,
# split into clone, prepare, spawn and setup. Prints figures; it is not a test.
#
# Usage: benches/launch.sh            (see benches/README.md)
# Environment:
#   KRUNNER       krunner binary            [target/release/krunner, built if absent]
#   BENCH_DIR     work dir, reused          [/var/tmp/krunner-bench] (shares the image with pull.sh)
#   ROUNDS        runs per method           [15]
#   REBUILD_IMAGE =1 rebuilds the image layout
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-15}
BENCH_DIR=${BENCH_DIR:-/var/tmp/krunner-bench}
REBUILD_IMAGE=${REBUILD_IMAGE:-0}
TAG=bench
REPO_PATH=bench/debian:latest
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root: the namespace backend and overlay mounts need it"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
PATH=$PATH:/usr/sbin:/sbin
for cmd in docker-registry skopeo umoci debootstrap curl; do
	command -v "$cmd" >/dev/null 2>&1 || die "missing $cmd (apt-get install $cmd)"
done

CACHE=
cleanup() {
	stop_registry
	[[ -z $CACHE ]] || rm -rf "$CACHE"
}

# One `krunner -v exec` with METHOD; appends its timings (microseconds) to RES via record.
declare -A RES=()

run_once() { # method
	local err t0 t1 line k v
	err=$(mktemp)
	now_us t0
	KRUNNER_CLONE_METHOD=$1 "$KRUNNER" -v --cache-dir "$CACHE" exec --offline --backend namespace \
		"$REF" -- /bin/true 2>"$err" || { cat "$err" >&2 && die "krunner exec failed"; }
	now_us t1
	line=$(grep -o 'timings: .*' "$err" || true)
	rm -f "$err"
	[[ -n $line ]] || die "no timings line in krunner -v output"
	for kv in ${line#timings: }; do
		k=${kv%%=*}
		v=${kv#*=}
		[[ $v == - || $k == run ]] && continue
		record "$1" "${k%_ms}" "$(to_us "$v")"
	done
	record "$1" wall $((t1 - t0))
}

main() {
	find_krunner
	mkdir -p "$BENCH_DIR"
	BENCH_DIR=$(realpath "$BENCH_DIR")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	build_image
	start_registry
	REF=127.0.0.1:$PORT/$REPO_PATH
	skopeo copy -q --dest-tls-verify=false "oci:$BENCH_DIR/image/layout:$TAG" "docker://$REF" >/dev/null
	CACHE=$BENCH_DIR/launch-cache
	rm -rf "$CACHE"
	"$KRUNNER" --cache-dir "$CACHE" -q pull "$REF" >/dev/null
	stop_registry
	local load_start entries files bytes r
	load_start=$(loadavg)
	read -r entries files bytes <"$BENCH_DIR/image/stats"
	for ((r = 0; r < ROUNDS; r++)); do
		# alternate the methods so drift hits both alike
		run_once overlay
		run_once copy
		log "round $((r + 1))/$ROUNDS"
	done
	local ratio
	ratio=$(awk -v a="$(med_ms copy clone)" -v b="$(med_ms overlay clone)" 'BEGIN { printf "%.0f", a / (b > 0 ? b : 0.001) }')
	echo
	echo "== krunner launch benchmark (namespace backend) =="
	echo "krunner:  $KRUNNER ($("$KRUNNER" --version 2>/dev/null || echo '?'))"
	echo "host:     $(nproc) CPUs, $(uname -r); cache on $(fstype "$CACHE") under $CACHE"
	printf 'image:    %s, %s MB unpacked, %d entries\n' "$REF" "$(mb "$bytes")" "$entries"
	echo "rounds:   $ROUNDS per method, alternating; load average $load_start at start, $(loadavg) at end"
	echo
	printf '%-44s %10s %10s\n' "median, ms" "overlay" "full copy"
	local m
	for m in clone prepare spawn setup host_before_guest total wall; do
		printf '%-44s %10s %10s\n' "$(case $m in
			clone) echo "clone (host side)" ;;
			prepare) echo "prepare (agent, config, resolv.conf, spec)" ;;
			spawn) echo "spawn (exec of the VM child)" ;;
			setup) echo "setup (namespaces, mounts, /dev, PID 1)" ;;
			host_before_guest) echo "host work before the guest command starts" ;;
			total) echo "whole run incl. guest and cleanup" ;;
			wall) echo "wall time of krunner exec (process)" ;;
			esac)" "$(med_ms overlay "$m")" "$(med_ms copy "$m")"
	done
	echo
	echo "full copy / overlay clone time: ${ratio}x"
	echo "targets: clone <= 20 ms (overlay: $(med_ms overlay clone) ms); host work before the guest <= 50 ms (overlay: $(med_ms overlay host_before_guest) ms)"
	echo "note: under the overlay method the mount itself happens in the VM child and is counted in 'setup'."
}

main "$@"
