#!/usr/bin/env bash
# A fresh Debian 12 root file system to install krunner's .deb into (tests/it/package.rs).
#
#   tests/package.sh root DIR          copy the cached Debian 12 root into DIR (made if needed)
#   tests/package.sh run DIR -- CMD…   run CMD chrooted in DIR, as root, with /proc, /sys and
#                                      /dev; exits with CMD's status
#   tests/package.sh prepare           only make the cache
#   tests/package.sh boot DIR STATE    boot DIR's systemd as PID 1 of its own namespaces (pid,
#                                      mount, uts, ipc, cgroup; the host's network) and wait
#                                      until it runs; STATE is a file this writes for in/halt
#   tests/package.sh in STATE -- CMD…  run CMD in that booted system (nsenter)
#   tests/package.sh halt STATE        kill that system and remove its cgroup
#
# The root is debootstrapped once (minbase, plus what the test runs inside: systemd for
# systemd-analyze, man-db, bash-completion) from the Debian mirror this machine's apt already
# uses (read from its sources, so no host name is written here), with the packages krunner's
# .deb depends on already downloaded into its apt cache, and kept as
# $KRUNNER_TEST_DIR/debian12-root-KEY/ (default /var/tmp/krunner-test). KEY is a hash of the
# recipe below: changing it builds a new one. A root older than 30 days is rebuilt too (its
# apt lists would name package versions the mirror no longer has), and so is a half-made one.
#
# `run` works in a private mount namespace (unshare -m), so its mounts vanish with it; the root
# is bind-mounted onto itself first, because pivot_root (krunner's namespace backend) refuses a
# root that is not a mount point, as a plain chroot directory is not.
set -euo pipefail

suite=bookworm
variant=minbase
include=(systemd man-db bash-completion ca-certificates)
# Downloaded (not installed) into the root's apt cache: the .deb's Depends and what they pull,
# so installing the package needs no network.
predownload=(passt nftables)
recipe="1 $suite $variant ${include[*]} / ${predownload[*]}"
key=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
cache_dir=${KRUNNER_TEST_DIR:-/var/tmp/krunner-test}
cache=$cache_dir/debian12-root-$key

die() {
  echo "tests/package.sh: $*" >&2
  exit 1
}

# The mirror this machine's apt uses (deb822 sources first, then the one-line format).
mirror() {
  local m=""
  if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    m=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources | awk '{ print $1; exit }')
  fi
  if [[ -z $m && -r /etc/apt/sources.list ]]; then
    m=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list)
  fi
  [[ -n $m ]] || die "no Debian mirror in /etc/apt/sources.list{,.d/debian.sources}"
  printf '%s\n' "$m"
}

# Runs "$@" in $1 as its root with the API file systems, in a private mount namespace.
in_root() {
  local dir=$1
  shift
  # The inner script's $1, $dir and $@ are its own, expanded there, not here.
  # shellcheck disable=SC2016
  unshare --mount --propagation private -- /bin/sh -ec '
    dir=$1; shift
    mount --bind "$dir" "$dir"
    mount -t proc proc "$dir/proc"
    mount --rbind /sys "$dir/sys"
    mount --rbind /dev "$dir/dev"
    # Moved onto / rather than chrooted into: the kernel refuses a user namespace (krunner
    # gives each guest one) to a chrooted process.
    cd "$dir"
    mount --move . /
    exec chroot . /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"
  ' sh "$dir" "$@"
}

# Boots $1's systemd in the background: PID 1 of new pid, mount, uts, ipc and cgroup
# namespaces, in a cgroup of its own (krunner-test-PID under the root of a cgroup v2
# hierarchy mounted in a private mount namespace: on a v1 or hybrid host that hierarchy has
# no controllers, which systemd copes with, but it needs one all the same). Writes "HOST_PID_OF_SYSTEMD CGROUP" to $2 and waits until systemd is up.
boot() {
  local dir=$1 state=$2 cg=krunner-test-$$ pid systemd="" i c
  rm -f "$state"
  # The inner scripts' variables are their own, expanded there, not here.
  # shellcheck disable=SC2016
  setsid unshare --mount --propagation private -- /bin/bash -ec '
    dir=$1 cg=$2
    m=$(mktemp -d)
    mount -t cgroup2 cgroup2 "$m"
    mkdir "$m/$cg"
    echo $$ >"$m/$cg/cgroup.procs"
    umount "$m"
    rmdir "$m"
    exec unshare --pid --fork --mount --uts --ipc --cgroup -- /bin/sh -ec "
      mount --bind \"$dir\" \"$dir\"
      mount -t proc proc \"$dir/proc\"
      mount --rbind /sys \"$dir/sys\"
      mount -t cgroup2 cgroup2 \"$dir/sys/fs/cgroup\"
      mount --rbind /dev \"$dir/dev\"
      # Shared, as systemd expects of a container manager (it does so itself only when it
      # boots a machine): LoadCredential= moves each credential mount into place through
      # this propagation, and a unit would find its credentials directory empty otherwise.
      # Moved onto / rather than chrooted into: the kernel refuses user namespaces to a
      # chrooted process.
      cd \"$dir\"
      mount --move . /
      mount --make-rshared /
      exec chroot . /usr/bin/env -i container=krunner-test \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd
    "
  ' sh "$dir" "$cg" </dev/null >"$dir.boot.log" 2>&1 &
  pid=$!
  # systemd is the child of that process (the last unshare, which forked into the pid
  # namespace) once it has exec'd systemd; the shell's earlier children come and go.
  for ((i = 0; i < 100; i++)); do
    for c in $(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true); do
      [[ $(cat "/proc/$c/comm" 2>/dev/null) == systemd ]] && systemd=$c
    done
    [[ -n $systemd ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $systemd ]] || die "systemd did not start in $dir: $(cat "$dir.boot.log")"
  echo "$systemd $cg" >"$state"
  # running, or degraded when a unit of the minimal system fails: either is up. Until
  # systemd listens on its private socket, systemctl cannot connect: ask again.
  local up=""
  for ((i = 0; i < 300; i++)); do
    up=$(timeout 60 bash "$0" in "$state" -- systemctl is-system-running --wait 2>&1 || true)
    case $up in
      running | degraded) return ;;
      *"Failed to connect to bus"*) sleep 0.1 ;;
      *) break ;;
    esac
  done
  die "systemd in $dir is not up: $up"
}

# Runs "${@:2}" in the system booted with state file $1.
in_booted() {
  local state=$1 systemd
  shift
  read -r systemd _ <"$state"
  exec nsenter -t "$systemd" -m -p -u -i -C -r -w /usr/bin/env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

# Kills the system booted with state file $1 (PID 1 takes its namespace with it) and removes
# its cgroup tree, deepest first.
halt() {
  local state=$1 systemd cg i
  [[ -f $state ]] || return 0
  read -r systemd cg <"$state"
  kill -KILL "$systemd" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$systemd" 2>/dev/null || break
    sleep 0.1
  done
  # shellcheck disable=SC2016
  unshare --mount --propagation private -- /bin/bash -ec '
    m=$(mktemp -d)
    mount -t cgroup2 cgroup2 "$m"
    if [ -d "$m/$1" ]; then
      for ((i = 0; i < 100; i++)); do
        find "$m/$1" -depth -type d -exec rmdir {} + 2>/dev/null && break
        sleep 0.1
      done
    fi
    umount "$m"
    rmdir "$m"
  ' sh "$cg"
  rm -f "$state"
}

prepare() {
  if [[ -f $cache/.complete ]] && [[ -z $(find "$cache/.complete" -mtime +30) ]]; then
    return
  fi
  command -v debootstrap >/dev/null || die "needs debootstrap (apt-get install debootstrap)"
  mkdir -p "$cache_dir"
  # Roots of an older recipe, or this one half made or stale, go first.
  rm -rf "$cache_dir"/debian12-root-*
  local m start=$SECONDS
  m=$(mirror)
  local tmp=$cache.tmp
  rm -rf "$tmp"
  echo "tests/package.sh: debootstrapping Debian 12 into $cache (once; 1-3 minutes)" >&2
  if ! debootstrap --variant="$variant" --include="$(IFS=,; echo "${include[*]}")" \
    "$suite" "$tmp" "$m" >"$cache_dir/debootstrap.log" 2>&1; then
    tail -n 20 "$cache_dir/debootstrap.log" >&2
    die "debootstrap failed (whole log: $cache_dir/debootstrap.log)"
  fi
  # The same mirror for updates and security fixes would need more host names; the release
  # suite is all the test installs from.
  echo "deb $m $suite main" >"$tmp/etc/apt/sources.list"
  in_root "$tmp" apt-get update -qq
  # debootstrap's own .debs are installed already: only the predownloaded ones are kept, so
  # that each test's copy of the root is small.
  in_root "$tmp" apt-get clean
  in_root "$tmp" apt-get install -qq --download-only "${predownload[@]}" >/dev/null
  touch "$tmp/.complete"
  mv "$tmp" "$cache"
  echo "tests/package.sh: Debian 12 root ready in $((SECONDS - start)) s" >&2
}

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot, mounts)"
case ${1:-} in
  prepare)
    prepare
    ;;
  root)
    [[ $# -eq 2 ]] || die "usage: tests/package.sh root DIR"
    prepare
    mkdir -p "$2"
    cp -a --reflink=auto "$cache"/. "$2"/
    rm -f "$2/.complete"
    ;;
  boot)
    [[ $# -eq 3 ]] || die "usage: tests/package.sh boot DIR STATE"
    boot "$2" "$3"
    ;;
  in)
    [[ $# -ge 4 && $3 == -- ]] || die "usage: tests/package.sh in STATE -- CMD..."
    state=$2
    shift 3
    in_booted "$state" "$@"
    ;;
  halt)
    [[ $# -eq 2 ]] || die "usage: tests/package.sh halt STATE"
    halt "$2"
    ;;
  run)
    [[ $# -ge 4 && $3 == -- ]] || die "usage: tests/package.sh run DIR -- CMD..."
    dir=$2
    shift 3
    in_root "$dir" "$@"
    ;;
  *)
    die "usage: tests/package.sh prepare | root DIR | run DIR -- CMD... | boot DIR STATE | in STATE -- CMD... | halt STATE"
    ;;
esac
