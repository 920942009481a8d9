#!/bin/sh
# Builds krunner's runner images with buildah, one platform at a time (other architectures
# through qemu-user-static), and optionally pushes them as multi-arch images:
#
#   REPO/runner-DISTRO-base:TAG   the base layer
#   REPO/runner-DISTRO:TAG        base + what the actions runner needs from the OS (what
#                                 `krunner --image DISTRO` uses; krunner provides the runner)
#
# for each TAG given (default: latest).
# Used by .github/workflows/images.yml, and by hand (see images/README.md).
set -eu

usage() {
  cat <<'EOF'
usage: images/build.sh [OPTIONS] DISTRO...      (DISTRO: ubuntu, fedora)

  -r, --repo REPO             image repository prefix (default: ghcr.io/krunner, or
                              $KRUNNER_IMAGE_REPO)
  -p, --platforms LIST        comma-separated platforms (default: the host's, e.g. linux/amd64)
  -t, --tag TAG               tag to apply (repeatable; default: latest)
      --push                  push the images (log in to the registry first)
  -h, --help                  this help
EOF
}

die() {
  echo "build.sh: $*" >&2
  exit 1
}

repo=${KRUNNER_IMAGE_REPO:-ghcr.io/krunner}
platforms=
tags=
push=0
distros=
while [ $# -gt 0 ]; do
  case $1 in
    -r | --repo)
      [ $# -ge 2 ] || die "$1 needs a value"
      repo=$2
      shift
      ;;
    -p | --platforms)
      [ $# -ge 2 ] || die "$1 needs a value"
      platforms=$2
      shift
      ;;
    -t | --tag)
      [ $# -ge 2 ] || die "$1 needs a value"
      tags="$tags $2"
      shift
      ;;
    --push) push=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*) die "unknown option $1 (see --help)" ;;
    ubuntu | fedora) distros="$distros $1" ;;
    *) die "unknown distribution $1 (ubuntu or fedora)" ;;
  esac
  shift
done
[ -n "$distros" ] || {
  usage >&2
  exit 2
}
[ -n "$tags" ] || tags=latest
if [ -z "$platforms" ]; then
  case $(uname -m) in
    x86_64) platforms=linux/amd64 ;;
    aarch64) platforms=linux/arm64 ;;
    *) die "unsupported host architecture $(uname -m)" ;;
  esac
fi
command -v buildah >/dev/null || die "buildah is not installed"

here=$(cd "$(dirname "$0")" && pwd)

labels=
if [ -n "${GITHUB_REPOSITORY:-}" ]; then
  labels="--label org.opencontainers.image.source=${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY"
fi
if [ -n "${GITHUB_SHA:-}" ]; then
  labels="$labels --label org.opencontainers.image.revision=$GITHUB_SHA"
fi

for distro in $distros; do
  base_list=krunner-build/runner-$distro-base
  runner_list=krunner-build/runner-$distro
  buildah manifest rm "$base_list" >/dev/null 2>&1 || true
  buildah manifest rm "$runner_list" >/dev/null 2>&1 || true
  buildah manifest create "$base_list" >/dev/null
  buildah manifest create "$runner_list" >/dev/null

  for platform in $(printf '%s' "$platforms" | tr ',' ' '); do
    arch=${platform#linux/}
    arch=${arch%%/*}
    base=localhost/krunner-build/runner-$distro-base:$arch
    runner=localhost/krunner-build/runner-$distro:$arch
    echo "build.sh: $distro base for $platform" >&2
    # shellcheck disable=SC2086 # $labels is a list of options
    buildah build --platform "$platform" --pull=newer $labels \
      -f "$here/$distro/Containerfile.base" -t "$base" "$here"
    echo "build.sh: $distro runner layer for $platform" >&2
    # shellcheck disable=SC2086 # $labels is a list of options
    buildah build --platform "$platform" --pull=never $labels \
      --build-arg "BASE=$base" \
      -f "$here/$distro/Containerfile" -t "$runner" "$here"
    buildah manifest add "$base_list" "containers-storage:$base" >/dev/null
    buildah manifest add "$runner_list" "containers-storage:$runner" >/dev/null
  done

  if [ "$push" = 1 ]; then
    for tag in $tags; do
      echo "build.sh: pushing $repo/runner-$distro-base:$tag" >&2
      buildah manifest push --all "$base_list" "docker://$repo/runner-$distro-base:$tag"
    done
    for tag in $tags; do
      echo "build.sh: pushing $repo/runner-$distro:$tag" >&2
      buildah manifest push --all "$runner_list" "docker://$repo/runner-$distro:$tag"
    done
  else
    echo "build.sh: built $runner_list ($platforms); not pushed (use --push)" >&2
  fi
done
