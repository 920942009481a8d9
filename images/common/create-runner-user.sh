#!/bin/sh
# Creates the `runner` user as on GitHub's hosted runners: uid 1001 with a group of its own,
# in group `docker`, home /home/runner, passwordless sudo. Also the hosted runners' tool cache
# directory. Run as root while building an image; needs useradd/groupadd (shadow) and sudo.
set -eu

getent group docker >/dev/null || groupadd --system docker
getent group runner >/dev/null || groupadd --gid 1001 runner
useradd --uid 1001 --gid runner --groups docker \
  --home-dir /home/runner --create-home --shell /bin/bash runner

install -d -m 0755 /etc/sudoers.d
printf 'runner ALL=(ALL) NOPASSWD:ALL\n' >/etc/sudoers.d/runner
chmod 0440 /etc/sudoers.d/runner
# The sudoers syntax check catches a broken file here rather than in every job.
visudo -cf /etc/sudoers.d/runner >/dev/null

install -d -o runner -g runner -m 0755 /opt/hostedtoolcache
