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

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	printf 'pull.sh: error: %s\n' "$*" >&2
	exit 1
}

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

find_krunner() {
	if [[ -z ${KRUNNER:-} ]]; then
		KRUNNER=$repo/target/release/krunner
		if [[ ! -x $KRUNNER ]]; then
			log "building krunner (cargo build --release)"
			(cd "$repo" && cargo build --release) >&2
		fi
	fi
	[[ -x $KRUNNER ]] || die "KRUNNER=$KRUNNER is not an executable"
	KRUNNER=$(realpath "$KRUNNER")
}

# ---------------------------------------------------------------- the image
# $BENCH_DIR/image/rootfs   debootstrap output (kept; a rebuild of the layout reuses it)
# $BENCH_DIR/image/layout   OCI layout, tag "bench", 3 gzip layers (the cache marker is its existence)
# $BENCH_DIR/image/stats    "entries files bytes" of the image's tree
build_image() {
	local img=$BENCH_DIR/image
	local rootfs=$img/rootfs layout=$img/layout
	mkdir -p "$img"
	if [[ $REBUILD_IMAGE == 1 ]]; then rm -rf "$layout"; fi
	if [[ -d $layout && -s $img/stats ]]; then
		log "image layout cached in $layout"
		return
	fi
	if [[ ! -d $rootfs ]]; then
		local mirror
		mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources | head -1)
		[[ -n $mirror ]] || die "no URIs: line in /etc/apt/sources.list.d/debian.sources"
		log "debootstrap bookworm (minbase + python3 perl git curl ...), about 2 minutes"
		rm -rf "$rootfs.tmp"
		if ! debootstrap --variant=minbase \
			--include=python3,perl,git,curl,ca-certificates,sudo,procps \
			bookworm "$rootfs.tmp" "$mirror" >"$img/debootstrap.log" 2>&1; then
			tail -20 "$img/debootstrap.log" >&2
			die "debootstrap failed (log: $img/debootstrap.log)"
		fi
		mv "$rootfs.tmp" "$rootfs"
	fi

	log "building the 3-layer OCI image with umoci"
	local tmp=$layout.tmp bundle=$img/bundle.tmp
	rm -rf "$tmp" "$bundle"
	umoci init --layout "$tmp"
	umoci new --image "$tmp:$TAG"
	umoci unpack --image "$tmp:$TAG" "$bundle" >/dev/null
	local dst=$bundle/rootfs
	# Layer 1: everything except /usr/share and /usr/lib/python3*. Device nodes in /dev are left
	# out, as in images built by docker (the runtime provides /dev).
	tar -C "$rootfs" --exclude=./usr/share --exclude='./usr/lib/python3*' --exclude='./dev/*' \
		-cf - . | tar -C "$dst" -xpf -
	umoci repack --refresh-bundle --image "$tmp:$TAG" "$bundle"
	# Layer 2: /usr/lib/python3*
	(
		cd "$rootfs"
		shopt -s nullglob
		dirs=(usr/lib/python3*)
		((${#dirs[@]})) || die "no usr/lib/python3* in $rootfs"
		tar -cf - "${dirs[@]}"
	) | tar -C "$dst" -xpf -
	umoci repack --refresh-bundle --image "$tmp:$TAG" "$bundle"
	# Layer 3: /usr/share
	tar -C "$rootfs" -cf - ./usr/share | tar -C "$dst" -xpf -
	umoci repack --refresh-bundle --image "$tmp:$TAG" "$bundle"
	umoci config --image "$tmp:$TAG" --config.cmd /bin/bash
	umoci gc --layout "$tmp"

	local entries files bytes
	entries=$(find "$dst" -mindepth 1 | wc -l)
	files=$(find "$dst" -type f | wc -l)
	bytes=$(du -sb "$dst" | cut -f1)
	rm -rf "$bundle"
	mv "$tmp" "$layout"
	echo "$entries $files $bytes" >"$img/stats"
}

# Sets LAYERS (blob paths, in order) and LAYER_SIZES from the layout's manifest.
read_layers() {
	local layout=$BENCH_DIR/image/layout mdigest manifest
	mdigest=$(grep -o '"digest":"sha256:[0-9a-f]\{64\}"' "$layout/index.json" | head -1 |
		sed 's/.*sha256:\([0-9a-f]*\)"/\1/')
	[[ -n $mdigest ]] || die "no manifest in $layout/index.json"
	manifest=$(<"$layout/blobs/sha256/$mdigest")
	LAYERS=()
	LAYER_SIZES=()
	local d
	# the layers array is the last array of the manifest; take the digests after '"layers"'
	for d in $(printf '%s' "${manifest#*\"layers\"}" | grep -o 'sha256:[0-9a-f]\{64\}'); do
		LAYERS+=("$layout/blobs/sha256/${d#sha256:}")
		LAYER_SIZES+=("$(stat -c %s "$layout/blobs/sha256/${d#sha256:}")")
	done
	((${#LAYERS[@]} == 3)) || die "expected 3 layers in the image, found ${#LAYERS[@]}"
	local l
	for l in "${LAYERS[@]}"; do
		gzip -t "$l" 2>/dev/null || die "layer $l is not gzip"
	done
}

# ---------------------------------------------------------------- the registry
REG_PID=
start_registry() {
	local regdir=$BENCH_DIR/registry port
	mkdir -p "$regdir/data"
	for port in $(shuf -i 20000-60000 -n 20); do
		# something already answers there: not free
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
		cat >"$regdir/config.yml" <<-EOF
			version: 0.1
			log: { level: error }
			storage: { filesystem: { rootdirectory: $regdir/data }, delete: { enabled: true } }
			http: { addr: 127.0.0.1:$port }
		EOF
		docker-registry serve "$regdir/config.yml" >"$regdir/log" 2>&1 &
		REG_PID=$!
		for _ in $(seq 100); do
			if curl -fs "http://127.0.0.1:$port/v2/" >/dev/null; then
				PORT=$port
				log "registry pid $REG_PID on 127.0.0.1:$PORT (storage $regdir/data)"
				return
			fi
			kill -0 "$REG_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill "$REG_PID" 2>/dev/null || true
		wait "$REG_PID" 2>/dev/null || true
		REG_PID=
	done
	cat "$regdir/log" >&2
	die "could not start docker-registry"
}

cleanup() {
	if [[ -n $REG_PID ]]; then
		kill "$REG_PID" 2>/dev/null || true
		wait "$REG_PID" 2>/dev/null || true
	fi
	rm -rf "$SHM_DIR" "$BENCH_DIR/run"
}

# ---------------------------------------------------------------- timing helpers
fstype() { df --output=fstype "$1" | tail -1; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
# now_us VAR: microseconds since the epoch, without a subshell
now_us() { printf -v "$1" '%s' "${EPOCHREALTIME/./}"; }

# median of the integers in "$@" (the mean of the two middle ones for an even count)
median() {
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print 0; exit }
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%d\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
secs() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1e6 }'; }
msecs() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1e3 }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

declare -A RES=() # "fs.metric" -> space-separated microseconds
record() { RES[$1.$2]="${RES[$1.$2]:-} $3"; }
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
