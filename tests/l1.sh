#!/usr/bin/env bash
# The emulated KVM host ("L1") for krun tests: an x86 machine that QEMU emulates in software
# (TCG, `-cpu max`, so it has AMD SVM), running Debian 12's own kernel with kvm_amd loaded. libkrun
# guests ("L2") boot on L1's KVM, which our hosts' nested PVM KVM cannot do itself.
#
#   tests/l1.sh prepare                 fetch the kernel, build the initramfs (cached)
#   tests/l1.sh run [OPTIONS] -- CMD…   boot L1, run CMD there, print its output, exit with its status
#                                       (3: CMD did not finish within --timeout in a healthy L1;
#                                       4: L1 itself froze, crashed or reported a kernel lockup)
#   tests/l1.sh check                   say whether L1 can be prepared here, and why not
#
# run options: --mem MIB (default 6144), --cpus N (default 2), --timeout SECONDS (default 1800),
#              --env NAME (repeatable: pass NAME=$NAME from this environment into L1),
#              --keep DIR (repeatable: a directory below /tmp, /run or /root that CMD needs;
#              the working directory is kept always),
#              --preload FILE (repeatable: copy FILE into L1's memory and bind it over its path,
#              so that running it never pages through 9p)
#
# What L1 sees: the host's whole root file system read-only at the same paths (9p, so the built
# krunner, test binaries, python3, docker-registry, libkrunfw are all there), with a fresh ext4 disk on
# /tmp and fresh tmpfs on /run and /root (the working directory and --keep directories below them stay visible),
# its own /proc, /sys, /dev (with /dev/kvm),
# loopback up and a dummy default route (no other network). CMD runs as root through `sh -c` in the same working
# directory, with TMPDIR=/tmp and KRUNNER_IT_IN_L1=1. Its stdout and stderr are copied to ours
# as it runs; the L1 console (kernel messages) of the last run is kept in $L1_DIR/console.log.
#
# Everything comes from Debian's packages (qemu-system-x86, busybox-static, cpio, kmod, and the
# kernel package that linux-image-amd64 depends on, downloaded with apt and unpacked, never
# installed). Cache: $KRUNNER_L1_DIR (default /var/tmp/krunner-test/l1).
set -euo pipefail

L1_DIR=${KRUNNER_L1_DIR:-/var/tmp/krunner-test/l1}
# tun (pasta), nf_tables with reject (the guests' egress rules), veth (the jail tests' own
# networks), dummy (L1's stand-in for an outside interface, below).
# virtio_blk and ext4 carry L1's /tmp: idmapped mounts (the VMM's user namespace) need a file
# system that supports them, which tmpfs does only from Linux 6.3 on.
modules=(virtio_pci 9pnet_virtio 9p overlay kvm_amd vsock tun nf_tables nft_reject_inet veth dummy virtio_blk ext4)

die() {
  echo "tests/l1.sh: $*" >&2
  exit 2
}

# missing: the tools L1 needs that this host lacks, one per line.
missing() {
  local t
  for t in qemu-system-x86_64 busybox cpio depmod modprobe apt-get dpkg mkfs.ext4; do
    command -v "$t" >/dev/null 2>&1 || echo "$t"
  done
  [[ -e /usr/share/qemu/qboot.rom || -e /usr/share/seabios/bios-256k.bin ]] || echo "qemu firmware"
}

check() {
  local m
  m=$(missing)
  if [[ -n $m ]]; then
    echo "tests/l1.sh: cannot run the emulated KVM host: missing $(echo "$m" | paste -sd, -) (tests/setup.sh installs qemu-system-x86, busybox-static, cpio and kmod)" >&2
    return 1
  fi
  [[ $(uname -m) == x86_64 ]] || {
    echo "tests/l1.sh: the emulated KVM host is x86_64 (AMD SVM under TCG); this host is $(uname -m)" >&2
    return 1
  }
}

# The kernel package linux-image-amd64 points at, downloaded and unpacked into $L1_DIR/kernel.
fetch_kernel() {
  local pkg work
  if [[ -f $L1_DIR/kernel/version ]]; then
    return 0
  fi
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
  if [[ -z $pkg ]]; then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
  fi
  [[ -n $pkg ]] || die "apt knows no linux-image-amd64 (run apt-get update)"
  work=$(mktemp -d)
  chmod 0755 "$work"
  chown _apt "$work" 2>/dev/null || true
  (cd "$work" && apt-get download -qq "$pkg" >/dev/null 2>&1) || {
    rm -rf "$work"
    die "cannot download $pkg with apt-get"
  }
  rm -rf "$L1_DIR/kernel.new"
  mkdir -p "$L1_DIR/kernel.new"
  dpkg -x "$work"/"$pkg"_*.deb "$L1_DIR/kernel.new"
  rm -rf "$work"
  local version
  version=$(basename "$(ls -d "$L1_DIR"/kernel.new/lib/modules/*)")
  cp "$L1_DIR"/kernel.new/boot/vmlinuz-"$version" "$L1_DIR/kernel.new/vmlinuz"
  depmod -b "$L1_DIR/kernel.new" "$version"
  echo "$version" >"$L1_DIR/kernel.new/version"
  rm -rf "$L1_DIR/kernel"
  mv "$L1_DIR/kernel.new" "$L1_DIR/kernel"
}

# The initramfs: static busybox, the modules in load order, and /init (below).
build_initramfs() {
  local version root m dep list
  version=$(cat "$L1_DIR/kernel/version")
  if [[ -f $L1_DIR/initramfs.cpio.gz && $L1_DIR/initramfs.cpio.gz -nt $0 ]]; then
    return 0
  fi
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,proc,sys,dev,host,modules}
  cp "$(command -v busybox)" "$root/bin/busybox"
  # busybox-static must be static: L1 has no libraries of its own.
  if ldd "$root/bin/busybox" >/dev/null 2>&1; then
    rm -rf "$root"
    die "$(command -v busybox) is not static (install busybox-static)"
  fi
  list=()
  for m in "${modules[@]}"; do
    while read -r _ dep _; do
      [[ " ${list[*]} " == *" $dep "* ]] || list+=("$dep")
    done < <(modprobe -d "$L1_DIR/kernel" -S "$version" --show-depends "$m" | grep '^insmod ')
  done
  : >"$root/modules/order"
  for dep in "${list[@]}"; do
    cp "$dep" "$root/modules/"
    basename "$dep" >>"$root/modules/order"
  done
  init_script >"$root/init"
  chmod 0755 "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$L1_DIR/initramfs.cpio.gz.new"
  mv "$L1_DIR/initramfs.cpio.gz.new" "$L1_DIR/initramfs.cpio.gz"
  rm -rf "$root"
}

# L1's /init: modules, the host root, the scratch file systems, then the job in $JOB (a 9p
# share holding `job.sh`, which writes `output` and `status` there).
init_script() {
  cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/modules/$m" || echo "l1: insmod $m failed"; done </modules/order
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro host /host || { echo "l1: cannot mount the host root"; poweroff -f; }
mkdir -p /job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job /job || { echo "l1: cannot mount the job share"; poweroff -f; }
h=/host
mount -t proc proc $h/proc
mount -t sysfs sys $h/sys
mount -t devtmpfs dev $h/dev
mkdir -p $h/dev/pts $h/dev/shm 2>/dev/null
# What udev would add (bash's process substitution needs /dev/fd).
ln -sf /proc/self/fd $h/dev/fd
ln -sf /proc/self/fd/0 $h/dev/stdin
ln -sf /proc/self/fd/1 $h/dev/stdout
ln -sf /proc/self/fd/2 $h/dev/stderr
mount -t devpts devpts $h/dev/pts
mount -t tmpfs shm $h/dev/shm
# Fresh tmpfs on /tmp, /run and /root; the paths the job needs that lie below them (the
# working directory, a target directory) are bound back from the host's view.
for d in /tmp /run /root; do
	mkdir -p /saved$d
	mount --bind $h$d /saved$d
	if [ $d = /tmp ] && mount -t ext4 -o noatime /dev/vda $h$d; then
		chmod 1777 $h$d
	else
		mount -t tmpfs -o mode=1777 tmp $h$d
	fi
done
chmod 0700 $h/root
while read -r p; do
	for d in /tmp /run /root; do
		case $p in $d/*) mkdir -p "$h$p" && mount --bind "/saved$p" "$h$p" ;; esac
	done
done </job/keep
# Preloaded files (the test binaries, libkrunfw) are copied into L1's memory and bound over
# their paths: their pages never again go through 9p, which is slow under emulation.
mkdir -p /preload
mount -t tmpfs preload /preload
n=0
while read -r p; do
	[ -f "$h$p" ] || { echo "l1: preload: no file $p"; continue; }
	n=$((n + 1))
	cp "$h$p" /preload/$n && mount --bind /preload/$n "$h$p" || echo "l1: preload of $p failed"
done </job/preload
# The whole cgroup v2 hierarchy: krunner gives each run a cgroup of its own (our hosts keep the
# memory controller in cgroup v1, so its cgroup tests run here). An empty tmpfs if that fails.
mount -t cgroup2 cgroup2 $h/sys/fs/cgroup 2>/dev/null || mount -t tmpfs cgroup $h/sys/fs/cgroup 2>/dev/null || true
jobdir=$(cat /job/path)
mkdir -p $h$jobdir
mount --bind /job $h$jobdir
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# A default route, as every real host has: pasta (the guests' network jail) copies its
# addresses from the interface that holds it. A dummy device drops whatever is sent there, so
# L1 still reaches nothing outside (192.0.2.0/24 is TEST-NET-1).
ip link set dummy0 up && ip addr add 192.0.2.2/24 dev dummy0 && ip route add default via 192.0.2.1 ||
	echo "l1: no dummy0 for a default route: jailed guests cannot start"
echo "l1: ready, /dev/kvm: $(ls /dev/kvm 2>&1)"
# When the host asks (it creates /job/dump on a timeout), write what every task is waiting on,
# so that a stalled job leaves evidence. Nothing here reads /proc/PID/cmdline or ps's args:
# those take the target's mm lock, which a task stuck in its exit can hold for ever.
(
	while sleep 2; do
		# The host's sign that L1 as a whole still runs (see run's freeze check).
		: >/job/alive
		[ -e /job/dump ] || continue
		{
			echo "== tasks (pid tid state wchan comm) and kernel stacks of the blocked ones"
			for t in /proc/[0-9]*/task/[0-9]*; do
				st=$(sed -n 's/^State:[[:space:]]*//p' $t/status 2>/dev/null)
				echo "$t $st $(cat $t/wchan 2>/dev/null) $(cat $t/comm 2>/dev/null)"
				case $st in R* | D* | Z*) timeout -s KILL 5 cat $t/stack 2>/dev/null | sed 's/^/    /' ;; esac
			done
			echo "== parents"
			for p in /proc/[0-9]*; do echo "${p#/proc/} ppid $(sed -n 's/^PPid:[[:space:]]*//p' $p/status 2>/dev/null) $(cat $p/comm 2>/dev/null)"; done
			echo "== dmesg"
			dmesg | tail -n 60
			echo "== meminfo"
			head -n 5 /proc/meminfo
		} >/job/dump.out 2>&1
		rm -f /job/dump
	done
) &
# The host root becomes the job's `/` in a mount namespace of its own by a move, as switch_root
# does, not by a plain chroot: the kernel refuses user namespaces (the VMM's jail) to a chrooted
# process.
unshare -m sh -c "mount --make-rprivate / && cd $h && mount --move . / && exec chroot . /bin/sh $jobdir/job.sh"
sync
poweroff -f
EOF
}

prepare() {
  check || exit 2
  mkdir -p "$L1_DIR"
  exec 9>"$L1_DIR/.lock"
  flock 9
  fetch_kernel
  build_initramfs
}

run() {
  local mem=6144 cpus=2 timeout=1800 envs=() keep=("$PWD") preload=()
  while [[ $# -gt 0 ]]; do
    case $1 in
    --mem) mem=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --keep) keep+=("$(realpath "$2")"); shift 2 ;;
    --preload) preload+=("$(realpath "$2")"); shift 2 ;;
    --) shift; break ;;
    *) die "unknown run option $1" ;;
    esac
  done
  [[ $# -gt 0 ]] || die "run: no command (tests/l1.sh run -- CMD…)"
  prepare
  local job
  job=$(mktemp -d "${TMPDIR:-/tmp}/krunner-l1-job.XXXXXX")
  # shellcheck disable=SC2064 # expand $job now
  trap "rm -rf '$job'" EXIT
  echo "$job" >"$job/path"
  printf '%s\n' "${keep[@]}" >"$job/keep"
  printf '%s\n' "${preload[@]}" | grep . >"$job/preload" || true
  {
    echo "#!/bin/sh"
    echo "# written by tests/l1.sh"
    printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
    echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    echo "export HOME=/root TMPDIR=/tmp KRUNNER_IT_IN_L1=1 LANG=C.UTF-8"
    local e
    for e in "${envs[@]}"; do
      [[ -v $e ]] && printf 'export %s=%q\n' "$e" "${!e}"
    done
    printf '%q ' "$@"
    printf '>%q 2>&1 </dev/null\n' "$job/output"
    printf 'echo $? >%q\n' "$job/status"
  } >"$job/job.sh"
  : >"$job/output"
  # /tmp's disk (see the module list): sparse, journal-less, thrown away with the job.
  truncate -s 32G "$job/scratch.img"
  mkfs.ext4 -q -F -O ^has_journal -m 0 "$job/scratch.img"
  local firmware=()
  # qboot starts a -kernel boot in well under a second; SeaBIOS takes several under TCG.
  [[ -e /usr/share/qemu/qboot.rom ]] && firmware=(-bios /usr/share/qemu/qboot.rom)
  qemu-system-x86_64 -accel tcg,thread=multi -machine q35 -cpu max -smp "$cpus" -m "$mem" \
    "${firmware[@]}" \
    -kernel "$L1_DIR/kernel/vmlinuz" -initrd "$L1_DIR/initramfs.cpio.gz" \
    -append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=5 softlockup_all_cpu_backtrace=1" \
    -display none -serial "file:$job/console.log" -no-reboot -nodefaults -nic none \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$job,mount_tag=job,security_model=none" \
    -drive "file=$job/scratch.img,if=virtio,format=raw,cache=unsafe,discard=unmap" \
    </dev/null >"$job/qemu.log" 2>&1 &
  local qemu=$!
  tail -n +1 -f --pid="$qemu" "$job/output" &
  local tailer=$!
  local waited=0 froze=0
  while kill -0 "$qemu" 2>/dev/null; do
    # A frozen L1 (its own init loop stops touching $job/alive; seen now and then under TCG,
    # with nothing on its console) is given up after 120 s instead of at the timeout.
    if [[ -e $job/alive ]] && (($(date +%s) - $(stat -c %Y "$job/alive") > 120)); then
      echo "tests/l1.sh: L1 froze: no sign of life for 120 s (QEMU: $(ps -o pcpu=,stat= -p "$qemu") %CPU/state); stopping it" >&2
      kill -KILL "$qemu" 2>/dev/null || true
      froze=1
      break
    fi
    if ((waited >= timeout)); then
      echo "tests/l1.sh: L1 did not finish within ${timeout}s; what its tasks wait on:" >&2
      : >"$job/dump"
      local w=0
      while [[ -e $job/dump ]] && ((w < 60)); do sleep 1; w=$((w + 1)); done
      cat "$job/dump.out" >&2 2>/dev/null || echo "(L1 wrote no dump within 60 s)" >&2
      echo "tests/l1.sh: stopping L1" >&2
      kill "$qemu" 2>/dev/null || true
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  wait "$qemu" 2>/dev/null || true
  wait "$tailer" 2>/dev/null || true
  cp "$job/console.log" "$L1_DIR/console.log" 2>/dev/null || true
  if [[ ! -s $job/status ]]; then
    echo "tests/l1.sh: the command did not finish in L1; QEMU said:" >&2
    cat "$job/qemu.log" >&2
    echo "tests/l1.sh: L1 console ($L1_DIR/console.log), last lines:" >&2
    tail -n 40 "$L1_DIR/console.log" >&2
    # 4: L1 itself failed: it froze, QEMU ended before the timeout (a panic of L1's kernel
    # ends it, -no-reboot), or L1's kernel reported a lockup, stall or bug of its own.
    # 3: L1 was healthy and CMD simply did not finish.
    if ((froze)) || ((waited < timeout)) ||
      grep -qE 'soft lockup|hard LOCKUP|rcu.*stall|BUG:|Oops|Kernel panic' "$L1_DIR/console.log"; then
      exit 4
    fi
    exit 3
  fi
  exit "$(cat "$job/status")"
}

case ${1:-} in
prepare) prepare ;;
check) check ;;
run) shift; run "$@" ;;
*) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
