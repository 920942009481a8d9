#!/usr/bin/env bash
# What providing the actions runner from the host costs per run, against a runner baked into
# the image: `krunner run -n 1 -r 1` under the namespace backend against the GitHub API
# simulator, which also serves a stand-in runner release (--runner-release). Both images are
# busybox plus the runner user; "baked" also holds that release's tree at /opt/actions-runner,
# so both guests run the very same Runner.Listener. Rounds alternate the two; medians are
# printed with their ratio, then the one-time cost (download, verify, unpack) and the disk
# each way takes. Prints figures; not a test.
#
# Usage: benches/runner.sh            (see benches/README.md)
# Environment:
#   KRUNNER     krunner binary         [target/release/krunner, built if absent]
#   BENCH_DIR   work dir               [/var/tmp/krunner-bench]
#   ROUNDS      rounds per variant     [10]
#   PER_START   runs per krunner start [5]: the per-run figure is a start's wall time over these
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/krunner-bench}
ROUNDS=${ROUNDS:-10}
PER_START=${PER_START:-5}
TAG=bench
REBUILD_IMAGE=0
VERSION=2.330.0
declare -A RES=()
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root: the namespace backend needs it"
for cmd in docker-registry skopeo umoci busybox curl; do
	command -v "$cmd" >/dev/null 2>&1 || die "missing $cmd (apt-get install ${cmd/busybox/busybox-static})"
done

WORK=
cleanup() {
	stop_registry
	[[ -z $SIM_PID ]] || kill "$SIM_PID" 2>/dev/null || true
	[[ -z $WORK ]] || rm -rf "$WORK"
}

# os_image LAYOUT BUNDLE [TARBALL]: busybox, root and runner (uid 1001), and with TARBALL that
# runner release unpacked at /opt/actions-runner, owned by the runner user.
os_image() {
	local layout=$1 b=$2 tarball=${3:-} r
	umoci init --layout "$layout"
	umoci new --image "$layout:$TAG"
	umoci unpack --image "$layout:$TAG" "$b" >/dev/null
	r=$b/rootfs
	mkdir -p "$r/bin" "$r/etc" "$r/home/runner" "$r/tmp" "$r/proc" "$r/sys" "$r/dev"
	chmod 1777 "$r/tmp"
	cp "$(command -v busybox)" "$r/bin/busybox"
	for a in $(busybox --list); do [[ -e $r/bin/$a ]] || ln -s busybox "$r/bin/$a"; done
	printf 'root:x:0:0:root:/root:/bin/sh\nrunner:x:1001:1001:runner:/home/runner:/bin/sh\n' >"$r/etc/passwd"
	printf 'root:x:0:\nrunner:x:1001:\ndocker:x:121:runner\n' >"$r/etc/group"
	chown 1001:1001 "$r/home/runner"
	if [[ -n $tarball ]]; then
		mkdir -p "$r/opt/actions-runner"
		tar -xzf "$tarball" -C "$r/opt/actions-runner"
		chown -R 1001:1001 "$r/opt/actions-runner"
	fi
	umoci repack --image "$layout:$TAG" "$b"
	rm -rf "$b"
}

# one_run VARIANT RUNS IMAGE ARGS…: one `krunner run -n 1 -r RUNS`, its wall time over RUNS
# recorded.
one_run() {
	local variant=$1 runs=$2 image=$3 t0 t1
	shift 3
	now_us t0
	KRUNNER_TOKEN=bench-pat "$KRUNNER" --cache-dir "$WORK/cache" -q run --backend namespace \
		-n 1 -r "$runs" --pull never --api-url "http://127.0.0.1:$SIM_PORT" -p bench/repo -i "$image" \
		--name-prefix "bench-$variant" --runner-releases-url "$RELEASES" "$@" \
		>"$WORK/krunner.log" 2>&1 || { tail -20 "$WORK/krunner.log" >&2; die "krunner run ($variant) failed"; }
	now_us t1
	record "$variant" run "$(((t1 - t0) / runs))"
}

main() {
	find_krunner
	mkdir -p "$BENCH_DIR"
	BENCH_DIR=$(realpath "$BENCH_DIR")
	WORK=$(mktemp -d "$BENCH_DIR/runner.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	start_sim --runner-release "$VERSION"
	RELEASES=http://127.0.0.1:$SIM_PORT/repos/actions/runner/releases
	local asset=actions-runner-linux-x64-$VERSION.tar.gz
	curl -fsS -o "$WORK/$asset" "http://127.0.0.1:$SIM_PORT/_sim/runner-releases/download/v$VERSION/$asset"

	log "building the two images"
	os_image "$WORK/os" "$WORK/b1" >/dev/null
	os_image "$WORK/baked" "$WORK/b2" "$WORK/$asset" >/dev/null
	start_registry
	local os=127.0.0.1:$PORT/bench/os-only:latest baked=127.0.0.1:$PORT/bench/baked:latest
	skopeo copy -q --dest-tls-verify=false "oci:$WORK/os:$TAG" "docker://$os" >/dev/null
	skopeo copy -q --dest-tls-verify=false "oci:$WORK/baked:$TAG" "docker://$baked" >/dev/null
	"$KRUNNER" --cache-dir "$WORK/cache" -q pull "$os" >/dev/null
	"$KRUNNER" --cache-dir "$WORK/cache" -q pull "$baked" >/dev/null

	log "first provided run: downloads, verifies and unpacks the runner"
	one_run first 1 "$os" --runner provided
	one_run warm-baked 1 "$baked" --runner image
	local i
	for ((i = 1; i <= ROUNDS; i++)); do
		log "round $i/$ROUNDS"
		one_run baked 1 "$baked" --runner image
		one_run provided 1 "$os" --runner provided
		one_run baked-n "$PER_START" "$baked" --runner image
		one_run provided-n "$PER_START" "$os" --runner provided
	done
	local b p bn pn
	b=$(med_ms baked run)
	p=$(med_ms provided run)
	bn=$(med_ms baked-n run)
	pn=$(med_ms provided-n run)
	echo
	echo "== the provided runner against a baked one (namespace backend, GitHub simulator) =="
	echo "krunner:  $KRUNNER ($("$KRUNNER" --version 2>/dev/null | head -1 || echo '?'))"
	echo "host:     $(nproc) CPUs, $(uname -r); load average $(loadavg); cache on $(fstype "$WORK")"
	echo "rounds:   $ROUNDS per variant, alternating; a start = krunner run -n 1 -r N (start, then per run: register, guest, job, cleanup)"
	echo
	printf '%-60s %9s ms\n' "-r 1, whole start: runner baked into the image, median" "$b"
	printf '%-60s %9s ms\n' "-r 1, whole start: runner provided by the host, median" "$p"
	printf '%-60s %9s\n' "  ratio provided / baked" "$(awk -v a="$p" -v b="$b" 'BEGIN { printf "%.3f", a / b }')"
	printf '%-60s %9s ms\n' "-r $PER_START, per run: runner baked into the image, median" "$bn"
	printf '%-60s %9s ms\n' "-r $PER_START, per run: runner provided by the host, median" "$pn"
	printf '%-60s %9s\n' "  ratio provided / baked" "$(awk -v a="$pn" -v b="$bn" 'BEGIN { printf "%.3f", a / b }')"
	printf '%-60s %9s ms\n' "first provided start (download + verify + unpack), -r 1" "$(med_ms first run)"
	echo
	printf '%-60s %9s KB\n' "the runner tree in the cache (once per version)" "$(du -sk "$WORK/cache/runners" | cut -f1)"
	printf '%-60s %9s KB\n' "the stand-in tarball" "$(($(stat -c %s "$WORK/$asset") / 1024))"
	echo "note: a provided runner is an overlay layer: nothing of it is copied per run, whatever its size"
	echo "      (the real runner is ~200 MB unpacked; this stand-in is a few KB)."
}

main "$@"
