#!/usr/bin/env bash
# Builds krunner's .deb and .rpm from an already built binary:
#
#   packaging/build.sh [--profile release|dev] [--target TRIPLE] [--out DIR] [--fast]
#
# 1. runs that binary to write the shell completions (`krunner completions SHELL`) and man
#    pages (`krunner man DIR`, gzipped) under target/packaging/, so they come from the same clap
#    definitions as --help (the binary must run here: build each architecture on its own
#    machine, as the release workflow does);
# 2. cargo deb --no-build (Cargo.toml [package.metadata.deb]): the binary stripped, the unit
#    from packaging/krunner.service, /etc/krunner/krunner.env as a conffile, the postinst;
# 3. cargo generate-rpm (Cargo.toml [package.metadata.generate-rpm]) from a stripped copy.
#
# Needs cargo-deb and cargo-generate-rpm (`cargo install --locked cargo-deb cargo-generate-rpm`),
# dpkg-dev (dpkg-shlibdeps for the .deb's dependencies), binutils (strip) and gzip. Prints the
# paths of the two packages. --fast compresses less (the test suite's packages).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
target=""
out=target/packaging
fast=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) fast=(--fast); shift ;;
    *) echo "packaging/build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Cargo's directory for a profile: dev builds land in debug/.
profile_dir=$profile
[[ $profile == dev ]] && profile_dir=debug
bin=target/${target:+$target/}$profile_dir/krunner
if [[ ! -x $bin ]]; then
  echo "packaging/build.sh: $bin is missing: build it first (cargo build --profile $profile${target:+ --target $target})" >&2
  exit 1
fi

# The completions and man pages: fixed paths, which Cargo.toml's asset lists name.
assets=target/packaging
rm -rf "$assets/completions" "$assets/man"
mkdir -p "$assets/completions" "$assets/man" "$out"
"$bin" completions bash >"$assets/completions/krunner.bash"
"$bin" completions zsh >"$assets/completions/_krunner"
"$bin" completions fish >"$assets/completions/krunner.fish"
"$bin" man "$assets/man"
# -n: no timestamp in the gzip header, so the same binary gives the same package.
gzip -9n "$assets"/man/*.1

target_args=()
[[ -n $target ]] && target_args=(--target "$target")

cargo deb --no-build --profile "$profile" "${target_args[@]}" --strip --no-dbgsym \
  --no-separate-debug-symbols "${fast[@]}" --output "$out" >"$assets/deb.out"
tail -n 1 "$assets/deb.out"

# cargo-generate-rpm packages what its asset list names, unstripped: give it a stripped copy
# at the path Cargo.toml's [package.metadata.generate-rpm] names.
strip -o "$assets/krunner" "$bin"
payload=zstd
[[ ${#fast[@]} -gt 0 ]] && payload=gzip
cargo generate-rpm --payload-compress "$payload" "${target_args[@]}" --output "$out"
ls "$out"/krunner-*.rpm
