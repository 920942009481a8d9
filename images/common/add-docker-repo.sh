#!/bin/sh
# Adds Docker's package repository (download.docker.com) for the docker CLI and its compose and
# buildx plugins, on Ubuntu (apt) or Fedora (dnf). The signing key is fetched over HTTPS and
# must have Docker's published fingerprint, or nothing is added. Run as root while building an
# image; needs curl and gpg.
set -eu

# Docker's repository signing keys: one for the Debian/Ubuntu repositories, one for the RPM
# ones (Fedora, CentOS, RHEL).
deb_fpr=9DC858229FC7DD38854AE2D88D81803C0EBFCD88
rpm_fpr=060A61C51B558A7F742B77AAC52FEB6B621E9F35

# shellcheck source=/dev/null # the build image's, not ours
. /etc/os-release
case $ID in
  ubuntu | debian)
    key=/etc/apt/keyrings/docker.asc
    want=$deb_fpr
    ;;
  fedora)
    key=/etc/pki/rpm-gpg/docker-ce.asc
    want=$rpm_fpr
    ;;
  *)
    echo "add-docker-repo.sh: no Docker repository for $ID" >&2
    exit 1
    ;;
esac

install -d -m 0755 "$(dirname "$key")"
curl -fsSL --retry 5 -o "$key" "https://download.docker.com/linux/$ID/gpg"
chmod 0644 "$key"
gnupghome=$(mktemp -d)
fpr=$(GNUPGHOME=$gnupghome gpg --batch --show-keys --with-colons "$key" |
  awk -F: '$1 == "fpr" { print $10; exit }')
rm -rf "$gnupghome"
if [ "$fpr" != "$want" ]; then
  echo "add-docker-repo.sh: the key from download.docker.com has fingerprint '$fpr', not $want" >&2
  rm -f "$key"
  exit 1
fi

case $ID in
  ubuntu | debian)
    printf 'deb [arch=%s signed-by=%s] https://download.docker.com/linux/%s %s stable\n' \
      "$(dpkg --print-architecture)" "$key" "$ID" "$VERSION_CODENAME" \
      >/etc/apt/sources.list.d/docker.list
    ;;
  fedora)
    rpm --import "$key"
    # Written by hand rather than with `dnf config-manager`, whose syntax changed with dnf5.
    # shellcheck disable=SC2016 # $releasever and $basearch are dnf's variables
    printf '%s\n' \
      '[docker-ce-stable]' \
      'name=Docker CE Stable - $basearch' \
      'baseurl=https://download.docker.com/linux/fedora/$releasever/$basearch/stable' \
      'enabled=1' \
      'gpgcheck=1' \
      "gpgkey=file://$key" \
      >/etc/yum.repos.d/docker-ce.repo
    ;;
esac
