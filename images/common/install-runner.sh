#!/bin/sh
# Installs the GitHub Actions runner at /opt/actions-runner, owned by `runner`, with the .NET
# dependencies its bin/installdependencies.sh installs. Run as root while building an image.
#
# Environment (the runner Containerfiles pass their build arguments):
#   RUNNER_VERSION       e.g. 2.337.0
#   TARGETARCH           amd64 or arm64 (set by buildah/podman/docker build); default: uname -m
#   RUNNER_SHA256_X64    SHA-256 of actions-runner-linux-x64-$RUNNER_VERSION.tar.gz
#   RUNNER_SHA256_ARM64  SHA-256 of actions-runner-linux-arm64-$RUNNER_VERSION.tar.gz
#   RUNNER_IMAGE_OS      ImageOS for jobs (actions/setup-* use it to pick builds), or empty
# The checksum of the architecture being built is required: the release notes of each
# actions/runner release list them.
set -eu

dir=/opt/actions-runner
: "${RUNNER_VERSION:?RUNNER_VERSION is not set}"

arch=${TARGETARCH:-$(uname -m)}
case $arch in
  amd64 | x86_64)
    arch=x64
    sum=${RUNNER_SHA256_X64:-}
    ;;
  arm64 | aarch64)
    arch=arm64
    sum=${RUNNER_SHA256_ARM64:-}
    ;;
  *)
    echo "install-runner.sh: no actions runner for architecture $arch" >&2
    exit 1
    ;;
esac
if [ -z "$sum" ]; then
  echo "install-runner.sh: no SHA-256 given for the linux-$arch runner $RUNNER_VERSION" >&2
  exit 1
fi

name=actions-runner-linux-$arch-$RUNNER_VERSION.tar.gz
url=https://github.com/actions/runner/releases/download/v$RUNNER_VERSION/$name
tmp=$(mktemp -d)
curl -fsSL --retry 5 --retry-delay 5 -o "$tmp/$name" "$url"
if ! printf '%s  %s\n' "$sum" "$tmp/$name" | sha256sum -c - >/dev/null; then
  echo "install-runner.sh: $name does not match SHA-256 $sum" >&2
  exit 1
fi
mkdir -p "$dir"
tar -xzf "$tmp/$name" -C "$dir"
rm -rf "$tmp"

# The runner's own installer of its .NET dependencies (libicu, OpenSSL, Kerberos, lttng),
# with the distribution's package manager.
if command -v apt-get >/dev/null; then
  apt-get update
  "$dir/bin/installdependencies.sh"
  apt-get clean
  rm -rf /var/lib/apt/lists/*
else
  "$dir/bin/installdependencies.sh"
  dnf clean all
fi

# Environment the runner gives every job (the runner reads $dir/.env at start), as on the
# hosted runners: the tool cache the setup-* actions use.
{
  echo "LANG=C.UTF-8"
  echo "RUNNER_TOOL_CACHE=/opt/hostedtoolcache"
  echo "AGENT_TOOLSDIRECTORY=/opt/hostedtoolcache"
  if [ -n "${RUNNER_IMAGE_OS:-}" ]; then
    echo "ImageOS=$RUNNER_IMAGE_OS"
  fi
} >"$dir/.env"

chown -R runner:runner "$dir"
test -x "$dir/bin/Runner.Listener"
test -x "$dir/config.sh"
