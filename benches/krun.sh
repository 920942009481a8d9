#!/usr/bin/env bash
# Real-guest benchmark: libkrun microVMs under krunner, per guest. On a host whose KVM cannot run
# libkrun guests (our nested PVM hosts) it re-runs itself inside the emulated KVM host of
# tests/l1.sh, where every time is emulated (only ratios within one run mean anything) and every
# memory figure is real. Prints figures; not a test.
#
#   1. `krunner -vv exec --backend krun IMAGE -- echo first` ROUNDS times (and the same under the
#      namespace backend for reference): host work before the guest starts (krunner's timing
#      line), time to the guest's first line, whole run. The same krun rounds again with
#      `--user-namespace off`: what the VMM's jail (user namespace, idmapped mounts, its tree)
#      costs per guest, from the child's own setup time (its start -> entering libkrun).
#   2. `krunner run --backend krun -n 1 -r RUNS` against the GitHub simulator with a stand-in
#      runner (busybox nc, a 2 s job): time from the JIT request to the runner online, slot
#      turnaround (job finished -> next runner online), from the simulator's request log.
#   3. While a guest idles: the VMM process's RSS and PSS, total and beyond guest RAM (the guest
#      memory mapping's own resident pages excluded).
#
# Usage: sudo benches/krun.sh     Environment: ROUNDS [7], RUNS [5], MEM (guest MiB) [512],
#        KRUNNER [target/release/krunner, built if absent], BENCH_DIR [/var/tmp/krunner-bench]
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/krunner-bench}
ROUNDS=${ROUNDS:-7}
RUNS=${RUNS:-5}
MEM=${MEM:-512}
TAG=bench
REBUILD_IMAGE=0
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root"
FW=${KRUNNER_TEST_LIBKRUNFW_DIR:-/var/tmp/krunner-test/libkrunfw}
[[ -e $FW/libkrunfw.so.5 ]] || die "no libkrunfw.so.5 in $FW (tests/setup.sh unpacks it)"

# Where guests can boot: real KVM here, else inside the emulated KVM host.
if [[ -z ${KRUNNER_IT_IN_L1:-} ]] && { [[ ! -e /dev/kvm ]] || [[ -e /sys/module/kvm_pvm && ! -e /sys/module/kvm_amd && ! -e /sys/module/kvm_intel ]]; }; then
	find_krunner
	sim_bin=$repo/target/release/examples/github_sim
	[[ -x $sim_bin ]] || (cd "$repo" && cargo build --release --example github_sim) >&2
	log "this host's KVM cannot run libkrun guests: running inside the emulated KVM host (tests/l1.sh)"
	export KRUNNER ROUNDS RUNS MEM
	# BENCH_DIR is read-only in L1 (the host's root is shared read-only): work on L1's tmpfs.
	exec bash "$repo/tests/l1.sh" run --env KRUNNER --env ROUNDS --env RUNS --env MEM -- \
		env BENCH_DIR=/tmp/krunner-bench bash "$repo/benches/krun.sh"
fi
find_krunner
for cmd in docker-registry skopeo umoci busybox; do
	command -v "$cmd" >/dev/null 2>&1 || die "missing $cmd"
done

SIM_PID=
WORK=
cleanup() {
	stop_registry
	[[ -z $SIM_PID ]] || kill "$SIM_PID" 2>/dev/null || true
	[[ -z $WORK ]] || rm -rf "$WORK"
}

# The stand-in runner: HTTP through busybox nc (busybox wget has crashed in emulated guests).
build_runner_image() {
	local body=$WORK/standin.sh
	cat >"$body" <<-'STANDIN'
		post() {
		  hp=${1#http://}; path=/${hp#*/}; hp=${hp%%/*}
		  printf 'POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %s\r\n\r\n%s' \
		    "$path" "$hp" "${#2}" "$2" | nc "${hp%:*}" "${hp##*:}" | head -n 1 | grep -q ' 2[0-9][0-9] '
		}
		post "$url/online" "$secret" || exit 7
		post "$url/job-started" "$secret" || exit 8
		sleep "$(cat /record/job-secs)"
		post "$url/job-finished" "$secret" || exit 9
	STANDIN
	standin_image "$1" "$WORK/bundle" "$body"
}

# vmm_memory PID: "rss_kb pss_kb guest_rss_kb guest_pss_kb" of a VM child; the guest's RAM is
# the anonymous mappings of at least half the guest's size (libkrun maps it in one or two
# regions around the PCI hole).
vmm_memory() {
	awk -v min=$((MEM * 1024 / 2)) '
		/^[0-9a-f]+-[0-9a-f]+ / { big = 0; next }
		/^Size:/ { big = ($2 >= min) }
		/^Rss:/ { rss += $2; if (big) grss += $2 }
		/^Pss:/ { pss += $2; if (big) gpss += $2 }
		END { printf "%d %d %d %d\n", rss, pss, grss, gpss }' "/proc/$1/smaps" 2>/dev/null || echo "0 0 0 0"
}

# exec_round BACKEND REF [FLAGS…]: prints "host_before_guest_us first_line_us total_us setup_us".
exec_round() {
	local backend=$1 ref=$2 t0 first='' line host setup
	shift 2
	now_us t0
	while IFS= read -r line; do
		if [[ -z $first && $line == first ]]; then
			now_us first
		fi
		if [[ $line == *host_before_guest_ms=* ]]; then
			host=${line##*host_before_guest_ms=}
			host=${host%% *}
			setup=${line##*setup_ms=}
			setup=${setup%% *}
		fi
	done < <("$KRUNNER" --cache-dir "$WORK/cache" -vv exec --offline --backend "$backend" \
		--libkrunfw-dir "$FW" -c 1 -m "$MEM" "$@" "$ref" -- echo first 2>&1)
	local t1
	now_us t1
	[[ $setup =~ ^[0-9.]+$ ]] || setup=0
	awk -v h="${host:-0}" -v f="$((${first:-$t1} - t0))" -v t="$((t1 - t0))" -v s="$setup" \
		'BEGIN { printf "%d %d %d %d\n", h * 1000, f, t, s * 1000 }'
}

main() {
	mkdir -p "$BENCH_DIR"
	WORK=$(mktemp -d "$BENCH_DIR/krun.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	local sim_bin=$repo/target/release/examples/github_sim
	[[ -x $sim_bin ]] || die "build the simulator first: cargo build --release --example github_sim"

	log "building the stand-in runner image"
	build_runner_image "$WORK/layout" >/dev/null
	start_registry
	local ref=127.0.0.1:$PORT/bench/runner:latest
	skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$TAG" "docker://$ref" >/dev/null
	"$KRUNNER" --cache-dir "$WORK/cache" -q pull "$ref" >/dev/null

	log "exec: $ROUNDS rounds per backend, alternating"
	local -a k_host=() k_first=() k_total=() k_setup=() n_host=() n_first=() n_total=()
	local -a o_host=() o_first=() o_total=() o_setup=()
	local i h f t su
	for ((i = 0; i < ROUNDS; i++)); do
		read -r h f t su < <(exec_round krun "$ref")
		k_host+=("$h") k_first+=("$f") k_total+=("$t") k_setup+=("$su")
		read -r h f t su < <(exec_round namespace "$ref")
		n_host+=("$h") n_first+=("$f") n_total+=("$t")
		read -r h f t su < <(exec_round krun "$ref" --user-namespace off)
		o_host+=("$h") o_first+=("$f") o_total+=("$t") o_setup+=("$su")
	done

	log "memory: one idle guest (-m $MEM)"
	"$KRUNNER" --cache-dir "$WORK/cache" -q exec --offline --backend krun --libkrunfw-dir "$FW" \
		-c 1 -m "$MEM" "$ref" -- sh -c 'echo up; sleep 30' >"$WORK/idle.out" 2>&1 &
	local idle=$! vmm='' rss pss grss gpss
	for _ in $(seq 600); do
		grep -q up "$WORK/idle.out" 2>/dev/null && break
		sleep 0.1
	done
	sleep 2
	vmm=$(pgrep -f '__krun-child' | head -1 || true)
	read -r rss pss grss gpss < <(vmm_memory "${vmm:-0}")
	kill "$idle" 2>/dev/null || true
	wait "$idle" 2>/dev/null || true

	log "run: -n 1 -r $RUNS against the simulator"
	"$sim_bin" --port 0 --scope repo --principal bench/repo --token bench-pat >"$WORK/sim.out" 2>&1 &
	SIM_PID=$!
	local sim_port=''
	for _ in $(seq 100); do
		sim_port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/sim.out")
		[[ -n $sim_port ]] && break
		sleep 0.1
	done
	[[ -n $sim_port ]] || die "the simulator did not start"
	mkdir -p "$WORK/record"
	chmod 777 "$WORK/record"
	echo 2 >"$WORK/record/job-secs"
	KRUNNER_TOKEN=bench-pat "$KRUNNER" --cache-dir "$WORK/cache" -q run --backend krun \
		--libkrunfw-dir "$FW" -c 1 -m "$MEM" -n 1 -r "$RUNS" --pull never \
		--api-url "http://127.0.0.1:$sim_port" -p bench/repo -i "$ref" --name-prefix bench \
		-M "$WORK/record:/record:ro" >"$WORK/krunner.log" 2>&1 || {
		tail -20 "$WORK/krunner.log" >&2
		die "krunner run failed"
	}
	python3 - "$sim_port" >"$WORK/run.tsv" <<-'PY'
		import json, sys, urllib.request
		log = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_sim/requests"))
		jit = [r["wall_ms"] for r in log if r["path"].endswith("/generate-jitconfig")]
		online = [r["wall_ms"] for r in log if r["path"].endswith("/online")]
		done = [r["wall_ms"] for r in log if r["path"].endswith("/job-finished")]
		for j, o in zip(jit, online):
		    print("online", (o - j) * 1000)
		for d, o in zip(done, online[1:]):
		    print("turn", (o - d) * 1000)
	PY
	mapfile -t online < <(awk '$1 == "online" { print $2 }' "$WORK/run.tsv")
	mapfile -t turns < <(awk '$1 == "turn" { print $2 }' "$WORK/run.tsv")

	echo
	echo "== real libkrun guests: krunner $("$KRUNNER" --version 2>/dev/null | head -1) =="
	echo "host:   $(nproc) CPUs, $(uname -r); load average $(loadavg)$([[ -n ${KRUNNER_IT_IN_L1:-} ]] && echo ' (inside the emulated KVM host: times are emulated, only ratios count; memory is real)')"
	echo "guest:  -c 1 -m $MEM, busybox image; medians of $ROUNDS exec rounds, $RUNS runner turns"
	echo
	printf '%-48s %12s %12s %8s\n' "" "krun" "namespace" "ratio"
	row() {
		local name=$1 a b
		a=$(median "${@:2:ROUNDS}")
		b=$(median "${@:2+ROUNDS:ROUNDS}")
		printf '%-48s %9s ms %9s ms %7.1fx\n' "$name" "$(msecs "$a")" "$(msecs "$b")" \
			"$(awk -v a="$a" -v b="$b" 'BEGIN { print (b > 0 ? a / b : 0) }')"
	}
	row "host work before the guest starts" "${k_host[@]}" "${n_host[@]}"
	row "time to the guest's first line" "${k_first[@]}" "${n_first[@]}"
	row "whole exec (boot, command, shutdown, cleanup)" "${k_total[@]}" "${n_total[@]}"
	echo
	printf '%-48s %12s %12s %8s\n' "the VMM's jail" "userns on" "userns off" "ratio"
	row "VM child setup (its start -> entering libkrun)" "${k_setup[@]}" "${o_setup[@]}"
	row "host work before the guest starts" "${k_host[@]}" "${o_host[@]}"
	row "whole exec" "${k_total[@]}" "${o_total[@]}"
	echo
	if ((${#online[@]})); then
		printf '%-48s %9s ms   (n=%d)\n' "run: JIT request -> runner online, median" "$(msecs "$(median "${online[@]}")")" "${#online[@]}"
	fi
	if ((${#turns[@]})); then
		printf '%-48s %9s ms   (n=%d)\n' "run: slot turnaround (job end -> next online)" "$(msecs "$(median "${turns[@]}")")" "${#turns[@]}"
	fi
	echo
	printf '%-48s %9.1f MB\n' "VMM process RSS (idle guest, -m $MEM)" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
	printf '%-48s %9.1f MB\n' "VMM process PSS" "$(awk -v k="$pss" 'BEGIN { print k / 1024 }')"
	printf '%-48s %9.1f MB\n' "  of which guest RAM resident (RSS)" "$(awk -v k="$grss" 'BEGIN { print k / 1024 }')"
	printf '%-48s %9.1f MB\n' "VMM RSS beyond guest RAM" "$(awk -v a="$rss" -v b="$grss" 'BEGIN { print (a - b) / 1024 }')"
	printf '%-48s %9.1f MB\n' "VMM PSS beyond guest RAM" "$(awk -v a="$pss" -v b="$gpss" 'BEGIN { print (a - b) / 1024 }')"
}

main "$@"
