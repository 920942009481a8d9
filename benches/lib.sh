#!/usr/bin/env bash
# Shared by the benchmark scripts (sourced, not run): logging, the krunner binary, the
# realistic debootstrap image (built once, cached in $BENCH_DIR/image), a loopback registry
# and timing helpers. The caller sets `repo`, BENCH_DIR, TAG and REBUILD_IMAGE first.
# shellcheck shell=bash
# shellcheck disable=SC2154 # repo, BENCH_DIR, TAG, REBUILD_IMAGE and RES come from the caller

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
	exit 1
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
		cd "$rootfs" || exit 1
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

stop_registry() {
	if [[ -n $REG_PID ]]; then
		kill "$REG_PID" 2>/dev/null || true
		wait "$REG_PID" 2>/dev/null || true
		REG_PID=
	fi
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

# Samples by variant and key, in the caller's `declare -A RES=()`:
# record VARIANT KEY MICROSECONDS; med_ms VARIANT KEY prints their median in ms.
record() { RES[$1.$2]="${RES[$1.$2]:-} $3"; }
med_ms() {
	local -a v
	read -ra v <<<"${RES[$1.$2]:-}"
	msecs "$(median "${v[@]}")"
}
# to_us MILLISECONDS (krunner's timing line) prints microseconds.
to_us() { awk -v m="$1" 'BEGIN { printf "%d", m * 1000 }'; }


# ---------------------------------------------------------------- stand-in runner images
# The benches' runner images: busybox, root and runner (uid 1001, group docker 121) and a
# stand-in Runner.Listener that talks to the GitHub simulator. Each bench writes only what
# its stand-in does after decoding its JIT config.

# standin_image LAYOUT BUNDLE BODY_FILE: a new OCI layout at LAYOUT (tag $TAG) whose one layer
# is that tree with the stand-in made of the JIT preamble and the script in BODY_FILE.
standin_image() {
	local layout=$1 b=$2 body=$3 r l=opt/actions-runner/bin/Runner.Listener
	umoci init --layout "$layout"
	umoci new --image "$layout:$TAG"
	umoci unpack --image "$layout:$TAG" "$b" >/dev/null
	r=$b/rootfs
	mkdir -p "$r/bin" "$r/etc" "$r/home/runner" "$r/opt/actions-runner/bin" "$r/tmp" "$r/record" \
		"$r/proc" "$r/sys" "$r/dev"
	chmod 1777 "$r/tmp"
	cp "$(command -v busybox)" "$r/bin/busybox"
	for a in $(busybox --list); do [[ -e $r/bin/$a ]] || ln -s busybox "$r/bin/$a"; done
	printf 'root:x:0:0:root:/root:/bin/sh\nrunner:x:1001:1001:runner:/home/runner:/bin/sh\n' >"$r/etc/passwd"
	printf 'root:x:0:\nrunner:x:1001:\ndocker:x:121:runner\n' >"$r/etc/group"
	chown 1001:1001 "$r/home/runner" "$r/opt/actions-runner"
	{
		cat <<-'PREAMBLE'
			#!/bin/sh
			# The runner takes its JIT config from ACTIONS_RUNNER_INPUT_JITCONFIG (krunner keeps it off argv).
			cfg=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
			files=$(echo "$cfg" | base64 -d)
			runner=$(echo "$files" | sed 's/.*"\.runner":"\([^"]*\)".*/\1/' | base64 -d)
			creds=$(echo "$files" | sed 's/.*"\.credentials":"\([^"]*\)".*/\1/' | base64 -d)
			url=$(echo "$runner" | sed 's/.*"simRunnerUrl":"\([^"]*\)".*/\1/')
			name=$(echo "$runner" | sed 's/.*"agentName":"\([^"]*\)".*/\1/')
			secret=$(echo "$creds" | sed 's/.*"simSecret":"\([^"]*\)".*/\1/')
		PREAMBLE
		cat "$body"
	} >"$r/$l"
	chmod 755 "$r/$l"
	chown 1001:1001 "$r/$l"
	umoci repack --image "$layout:$TAG" "$b"
	rm -rf "$b"
}

# ---------------------------------------------------------------- the GitHub API simulator
# start_sim ARGS…: builds the simulator example when missing, starts it on a free port as
# --scope repo --principal bench/repo --token bench-pat plus ARGS (output in $WORK/sim.out),
# and sets SIM_PID (the caller's cleanup kills it) and SIM_PORT.
SIM_PID=
SIM_PORT=
start_sim() {
	local sim_bin=$repo/target/release/examples/github_sim
	if [[ ! -x $sim_bin ]]; then
		log "building the GitHub simulator (cargo build --release --example github_sim)"
		(cd "$repo" && cargo build --release --example github_sim) >&2
	fi
	"$sim_bin" --port 0 --scope repo --principal bench/repo --token bench-pat "$@" >"$WORK/sim.out" 2>&1 &
	# shellcheck disable=SC2034 # the caller kills it
	SIM_PID=$!
	SIM_PORT=
	for _ in $(seq 100); do
		SIM_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/sim.out")
		[[ -n $SIM_PORT ]] && return
		sleep 0.1
	done
	cat "$WORK/sim.out" >&2
	die "the simulator did not start"
}
