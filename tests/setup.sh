#!/usr/bin/env bash
# Installs what building krunner and running its test suite need on Debian 12 (as root).
# Everything comes from Debian's own packages; nothing is downloaded from elsewhere.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "tests/setup.sh: run as root (it uses apt-get)" >&2
  exit 1
fi

packages=(
  # bindgen (sys/ crate) and C dependencies of crates
  clang libclang-dev pkg-config
  # the test suite's local registry, reference unpacker and image tools
  docker-registry skopeo umoci busybox-static apache2-utils
  # the emulated KVM host that runs real libkrun guests (tests/l1.sh): QEMU in software, its
  # initramfs (busybox-static above, cpio), module dependencies of its kernel (kmod)
  qemu-system-x86 cpio kmod e2fsprogs
  # the guests' network jail: pasta (passt), nft (nftables), ip and ss (iproute2)
  passt nftables iproute2
  # rootless krunner (tests/it/rootless.rs): newuidmap/newgidmap, and setpriv (util-linux) to
  # run it as the test user
  uidmap util-linux
  # lint of the repo's shell scripts
  shellcheck
  # the package tests (tests/it/package.rs): a Debian 12 root for the .deb (tests/package.sh),
  # dpkg-shlibdeps and strip for cargo-deb, rpm to read the .rpm, systemd-analyze for the
  # unit, man-db to render the man pages, PyYAML to read the release workflow
  debootstrap dpkg-dev binutils rpm systemd man-db python3-yaml
  ca-certificates
)

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# The packaged registry service listens on every interface with its own config: the tests
# start their own instances on 127.0.0.1, so make sure the packaged one is not running.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
# The rootless tests' ordinary user, with a subordinate id range of its own (as `adduser`
# gives every new user on Debian) and no password.
if ! id krunner-rootless >/dev/null 2>&1; then
  useradd --create-home --shell /usr/sbin/nologin krunner-rootless
fi
if ! grep -q '^krunner-rootless:' /etc/subuid || ! grep -q '^krunner-rootless:' /etc/subgid; then
  usermod --add-subuids 300000-365535 --add-subgids 300000-365535 krunner-rootless
fi
# libkrunfw (the guest kernel libkrun loads at run time) is packaged only in Debian
# testing/unstable, as libkrunfw5 with no dependencies. Fetch that one .deb with apt from the
# unstable suite of the mirror this machine already uses (read from its own sources, so no
# host name is written here) and unpack it into a private directory: the system's apt
# sources and installed packages are left untouched. The krun tests find it there.
libkrunfw_dir=${KRUNNER_TEST_LIBKRUNFW_DIR:-/var/tmp/krunner-test/libkrunfw}
if ! ls "$libkrunfw_dir"/libkrunfw.so.5 >/dev/null 2>&1; then
  mirror=""
  if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources | head -1)
  fi
  if [[ -z $mirror && -r /etc/apt/sources.list ]]; then
    mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list)
  fi
  if [[ -n $mirror ]]; then
    work=$(mktemp -d)
    # apt downloads as the _apt user: let it write there (and keep its warnings quiet).
    chmod 0755 "$work"
    mkdir -p "$work/lists/partial"
    chown -R _apt "$work/lists" 2>/dev/null || true
    echo "deb $mirror sid main" >"$work/sources.list"
    opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists")
    chown _apt "$work" 2>/dev/null || true
    if apt-get "${opts[@]}" update -qq >/dev/null 2>&1 && (cd "$work" && apt-get "${opts[@]}" download -qq libkrunfw5 >/dev/null 2>&1); then
      mkdir -p "$work/x" "$libkrunfw_dir"
      dpkg -x "$work"/libkrunfw5_*.deb "$work/x"
      find "$work/x" -name 'libkrunfw.so.5*' -exec cp -a {} "$libkrunfw_dir"/ \;
      echo "tests/setup.sh: libkrunfw unpacked into $libkrunfw_dir"
    else
      echo "tests/setup.sh: could not fetch libkrunfw5 from unstable; krun tests will say so and skip" >&2
    fi
    rm -rf "$work"
  fi
fi

# The package test's Debian 12 root (debootstrapped once, cached in /var/tmp/krunner-test),
# made in the background while cargo compiles the packaging tools below.
bash "$(dirname "$0")/package.sh" prepare &
debian_root=$!

# cargo-deb and cargo-generate-rpm make krunner's .deb and .rpm (packaging/build.sh), from
# crates.io, pinned to the versions the release workflow uses, compiled once when missing.
# Built for speed of compiling, as only the tests use them here: cargo-deb as a debug build
# (1.5 instead of 2.8 CPU-minutes; it packages as fast, its own release profile is -O1 and the
# work is strip's and liblzma's); cargo-generate-rpm at -O0 but for what hashes and compresses
# the payload (5.5 instead of 10 CPU-minutes, mostly its PGP signing code, never used here;
# 12 s instead of 4 s per package).
if command -v cargo >/dev/null 2>&1; then
  rpm_fast=(--config profile.release.opt-level=0)
  for crate in rpm sha2 sha1 md-5 digest block-buffer generic-array flate2 zlib-rs crc32fast \
    zstd zstd-safe zstd-sys; do
    rpm_fast+=(--config "profile.release.package.$crate.opt-level=3")
  done
  if ! command -v cargo-deb >/dev/null 2>&1; then
    cargo install --locked --quiet --debug cargo-deb@3.8.0 ||
      echo "tests/setup.sh: could not install cargo-deb; the package tests will say so" >&2
  fi
  if ! command -v cargo-generate-rpm >/dev/null 2>&1; then
    cargo install --locked --quiet "${rpm_fast[@]}" cargo-generate-rpm@0.21.1 ||
      echo "tests/setup.sh: could not install cargo-generate-rpm; the package tests will say so" >&2
  fi
else
  echo "tests/setup.sh: no cargo on PATH: cargo-deb and cargo-generate-rpm not installed" >&2
fi

# The emulated KVM host's kernel (Debian's, downloaded with apt, unpacked, never installed) and
# initramfs, cached in /var/tmp/krunner-test/l1.
if ! bash "$(dirname "$0")/l1.sh" prepare; then
  echo "tests/setup.sh: could not prepare the emulated KVM host; the real-guest tests will say why" >&2
fi

if ! wait "$debian_root"; then
  echo "tests/setup.sh: could not prepare the Debian 12 root; the package test will say why" >&2
fi

echo "tests/setup.sh: build and test dependencies installed"
