#!/usr/bin/env bash
# Pull benchmark: krunner cold/warm pull against skopeo+umoci and a parallel `tar -xzf`,
# on tmpfs and on disk, from a loopback docker-registry. Prints figures; it is not a test.
#
# Usage: benches/pull.sh            (see benches/README.md)
# Environment:
#   KRUNNER       krunner binary            [target/release/krunner, built if absent]
#   BENCH_DIR     work dir, reused          [/var/tmp/krunner-bench]
#   ROUNDS        cold rounds per fs        [5]
#   WARM_ROUNDS   warm re-pulls per fs      [15]
#   SHM_DIR       tmpfs work dir, wiped     [/dev/shm/krunner-bench]
#   REBUILD_IMAGE =1 rebuilds the image layout (debootstrap is reused if present)
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME must use '.' as its decimal point

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
WARM_ROUNDS=${WARM_ROUNDS:-15}
BENCH_DIR=${BENCH_DIR:-/var/tmp/krunner-bench}
SHM_DIR=${SHM_DIR:-/dev/shm/krunner-bench}
REBUILD_IMAGE=${REBUILD_IMAGE:-0}
TAG=bench
REPO_PATH=bench/debian:latest
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

# ---------------------------------------------------------------- requirements
check_requirements() {
	local -a missing=() pkgs=()
	local cmd pkg
	for cmd in docker-registry:docker-registry skopeo:skopeo umoci:umoci debootstrap:debootstrap \
		curl:curl tar:tar gzip:gzip; do
		pkg=${cmd#*:}
		cmd=${cmd%%:*}
		# debootstrap lives in /usr/sbin, which a non-login root shell may not have on PATH
		if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$cmd ]]; then
			missing+=("$cmd")
			pkgs+=("$pkg")
		fi
	done
	if ((${#missing[@]})); then
		printf 'pull.sh: missing: %s\n  install with: apt-get install %s\n' \
			"${missing[*]}" "${pkgs[*]}" >&2
		exit 1
	fi
	command -v hyperfine >/dev/null 2>&1 ||
		log "note: hyperfine not found (optional, not used; apt-get install hyperfine for ad-hoc runs)"
	[[ $EUID -eq 0 ]] || die "run as root (debootstrap, and umoci/tar must restore ownership like krunner)"
	[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
	[[ $WARM_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "WARM_ROUNDS must be a positive integer"
	PATH=$PATH:/usr/sbin:/sbin
}

cleanup() {
	stop_registry
	rm -rf "$SHM_DIR" "$BENCH_DIR/run"
}

declare -A RES=() # "fs.metric" -> space-separated microseconds (record: lib.sh)
med_of() {
	local -a v
	read -ra v <<<"${RES[$1.$2]:-}"
	median "${v[@]}"
}

# ---------------------------------------------------------------- the measurements
KRUNNER_ROOTFS=
run_krunner_cold() { # dir fs
	local c=$1/k-cache t0 t1 out
	rm -rf "$c"
	mkdir -p "$c"
	now_us t0
	if ! out=$("$KRUNNER" --cache-dir "$c" -q pull "$REF" 2>"$1/k.err"); then
		cat "$1/k.err" >&2
		die "krunner pull failed"
	fi
	now_us t1
	[[ -d $out ]] || die "krunner printed '$out', which is not a directory"
	record "$2" krunner $((t1 - t0))
	KRUNNER_ROOTFS=$out
}

run_peer() { # dir fs
	local l=$1/s-layout b=$1/s-bundle t0 t1 t2
	rm -rf "$l" "$b"
	now_us t0
	skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$l:$TAG" >/dev/null 2>"$1/s.err" ||
		{ cat "$1/s.err" >&2 && die "skopeo copy failed"; }
	now_us t1
	umoci unpack --image "$l:$TAG" "$b" >/dev/null 2>"$1/u.err" ||
		{ cat "$1/u.err" >&2 && die "umoci unpack failed"; }
	now_us t2
	record "$2" peer $((t2 - t0))
	record "$2" skopeo $((t1 - t0))
	record "$2" umoci $((t2 - t1))
}

run_tar() { # dir fs
	local t0 t1 i
	local -a pids=()
	for i in "${!LAYERS[@]}"; do rm -rf "$1/t$i"; done
	now_us t0
	for i in "${!LAYERS[@]}"; do
		mkdir "$1/t$i"
		tar -xzf "${LAYERS[$i]}" -C "$1/t$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || die "tar -xzf failed"; done
	now_us t1
	record "$2" tar $((t1 - t0))
}

count_entries() { find "$1" -mindepth 1 | wc -l; }

SANITY=
bench_fs() { # fs-name dir
	local fs=$1 dir=$2 r j step
	rm -rf "$dir"
	mkdir -p "$dir"
	log "$fs: $ROUNDS rounds in $dir ($(fstype "$dir"))"
	local -a steps=(krunner peer tar)
	for ((r = 0; r < ROUNDS; r++)); do
		# rotate the order each round so no tool always runs first or last
		for ((j = 0; j < 3; j++)); do
			step=${steps[(r + j) % 3]}
			case $step in
			krunner) run_krunner_cold "$dir" "$fs" ;;
			peer) run_peer "$dir" "$fs" ;;
			tar) run_tar "$dir" "$fs" ;;
			esac
		done
		if [[ -z $SANITY ]]; then
			local nk nu
			nk=$(count_entries "$KRUNNER_ROOTFS")
			nu=$(count_entries "$dir/s-bundle/rootfs")
			if ((nk == nu)); then
				SANITY="same number of entries: krunner $nk, umoci $nu (OK)"
			else
				SANITY="DIFFERENT number of entries: krunner $nk, umoci $nu (MISMATCH)"
			fi
			log "sanity: $SANITY"
		fi
		# remove this round's output, outside the timed part
		rm -rf "$dir/k-cache" "$dir/s-layout" "$dir/s-bundle" "$dir"/t[0-9]*
		log "$fs: round $((r + 1))/$ROUNDS: krunner $(secs "${RES[$fs.krunner]##* }") s," \
			"skopeo+umoci $(secs "${RES[$fs.peer]##* }") s, tar $(secs "${RES[$fs.tar]##* }") s"
	done

	# warm re-pull: one cold pull, then the same tag again and again
	local c=$dir/k-warm first out t0 t1 i
	rm -rf "$c"
	mkdir -p "$c"
	first=$("$KRUNNER" --cache-dir "$c" -q pull "$REF" 2>"$dir/k.err") ||
		{ cat "$dir/k.err" >&2 && die "krunner pull failed"; }
	for ((i = 0; i < WARM_ROUNDS; i++)); do
		now_us t0
		out=$("$KRUNNER" --cache-dir "$c" -q pull "$REF" 2>"$dir/k.err") ||
			{ cat "$dir/k.err" >&2 && die "krunner warm pull failed"; }
		now_us t1
		[[ $out == "$first" ]] || die "warm pull printed '$out', the cold pull '$first'"
		record "$fs" warm $((t1 - t0))
	done
	rm -rf "$dir"
}

# ---------------------------------------------------------------- report
row() { printf '%-34s %8s s %8s s\n' "$1" "$(secs "$(med_of tmpfs "$2")")" "$(secs "$(med_of disk "$2")")"; }
verdict() { # value target: "met" when value <= target
	awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "met" : "MISSED" }'
}

report() {
	local entries files bytes total=0 s i
	read -r entries files bytes <"$BENCH_DIR/image/stats"
	local -a parts=()
	for i in "${!LAYER_SIZES[@]}"; do
		s=${LAYER_SIZES[$i]}
		total=$((total + s))
		parts+=("$(mb "$s")")
	done
	local fs rk rp ratio_t ratio_d wt wd
	echo
	echo "== krunner pull benchmark =="
	echo "krunner:  $KRUNNER ($("$KRUNNER" --version 2>/dev/null || echo '?'))"
	echo "host:     $(nproc) CPUs, $(uname -r); disk = $(fstype "$BENCH_DIR") under $BENCH_DIR, tmpfs = $SHM_DIR"
	echo "image:    $REF, 3 gzip layers $(mb "$total") MB (${parts[0]} + ${parts[1]} + ${parts[2]} MB)"
	printf 'unpacked: %s MB, %d files, %d entries\n' "$(mb "$bytes")" "$files" "$entries"
	echo "rounds:   $ROUNDS cold (order rotated each round), $WARM_ROUNDS warm; page cache not dropped"
	echo "load:     1-min load average $LOAD_START at start, $(loadavg) at end (other work on the machine skews every figure)"
	echo
	printf '%-34s %10s %10s\n' "median wall time" "tmpfs" "disk"
	row "krunner cold pull" krunner
	row "skopeo copy + umoci unpack" peer
	row "  skopeo copy" skopeo
	row "  umoci unpack" umoci
	row "parallel tar -xzf (3 layers)" tar
	rk=$(med_of tmpfs krunner)
	rp=$(med_of tmpfs peer)
	ratio_t=$(awk -v a="$rk" -v b="$rp" 'BEGIN { printf "%.2f", a / b }')
	rk=$(med_of disk krunner)
	rp=$(med_of disk peer)
	ratio_d=$(awk -v a="$rk" -v b="$rp" 'BEGIN { printf "%.2f", a / b }')
	printf '%-34s %9sx %9sx   target <=0.50x tmpfs (%s), <=0.75x disk (%s)\n' \
		"ratio krunner / (skopeo+umoci)" "$ratio_t" "$ratio_d" \
		"$(verdict "$ratio_t" 0.50)" "$(verdict "$ratio_d" 0.75)"
	wt=$(msecs "$(med_of tmpfs warm)")
	wd=$(msecs "$(med_of disk warm)")
	printf '%-34s %7s ms %7s ms   target <100 ms (%s, %s)\n' "krunner warm re-pull" "$wt" "$wd" \
		"$(verdict "$wt" 99.999)" "$(verdict "$wd" 99.999)"
	echo
	echo "sanity:   $SANITY"
	echo "raw:      $BENCH_DIR/last-results.tsv (microseconds)"
	{
		printf 'fs\tmetric\tmicroseconds...\n'
		local k
		for k in "${!RES[@]}"; do printf '%s\t%s\t%s\n' "${k%%.*}" "${k#*.}" "${RES[$k]# }" | tr ' ' '\t'; done | sort
	} >"$BENCH_DIR/last-results.tsv"
}

# ---------------------------------------------------------------- main
main() {
	check_requirements
	find_krunner
	mkdir -p "$BENCH_DIR"
	BENCH_DIR=$(realpath "$BENCH_DIR")
	mkdir -p "$SHM_DIR"
	[[ $(fstype "$SHM_DIR") == tmpfs ]] ||
		log "warning: SHM_DIR=$SHM_DIR is not on a tmpfs"
	trap cleanup EXIT
	trap 'exit 130' INT TERM

	build_image
	read_layers
	LOAD_START=$(loadavg)
	awk -v l="$LOAD_START" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }' &&
		log "warning: load average $LOAD_START on $(nproc) CPUs: the figures will be noisy"
	local entries files bytes total=0 s
	read -r entries files bytes <"$BENCH_DIR/image/stats"
	for s in "${LAYER_SIZES[@]}"; do total=$((total + s)); done
	log "image: layers $(for s in "${LAYER_SIZES[@]}"; do printf '%s MB ' "$(mb "$s")"; done)= $(mb "$total") MB gzip;" \
		"unpacked $(mb "$bytes") MB, $files files, $entries entries"

	start_registry
	REF=127.0.0.1:$PORT/$REPO_PATH
	log "pushing the image to $REF"
	skopeo copy -q --dest-tls-verify=false "oci:$BENCH_DIR/image/layout:$TAG" "docker://$REF" >/dev/null

	bench_fs tmpfs "$SHM_DIR"
	bench_fs disk "$BENCH_DIR/run"
	report
}

main "$@"
