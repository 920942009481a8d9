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
  # lint of the repo's shell scripts
  shellcheck
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
echo "tests/setup.sh: build and test dependencies installed"
