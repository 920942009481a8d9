#!/bin/sh
# Writes /etc/krunner/runner.env: the environment the runner gives every job, as on GitHub's
# hosted runners (LANG, the tool cache the setup-* actions use, ImageOS). krunner's guest
# agent reads this file (KEY=value lines) and hands them to the runner: the runner at
# /opt/actions-runner comes from the host, so its own .env is not the image's to write.
# Run as root while building an image, after create-runner-user.sh.
#
# Environment:
#   RUNNER_IMAGE_OS  ImageOS for jobs (actions/setup-* use it to pick builds), or empty
#   ROOT             prefix of the paths written (default: none), for tests
set -eu

root=${ROOT:-}
install -d -m 0755 "$root/etc/krunner"
{
  echo "LANG=C.UTF-8"
  echo "RUNNER_TOOL_CACHE=/opt/hostedtoolcache"
  echo "AGENT_TOOLSDIRECTORY=/opt/hostedtoolcache"
  if [ -n "${RUNNER_IMAGE_OS:-}" ]; then
    echo "ImageOS=$RUNNER_IMAGE_OS"
  fi
} >"$root/etc/krunner/runner.env"
chmod 0644 "$root/etc/krunner/runner.env"

# The tool cache itself, owned by runner, comes with the user (create-runner-user.sh).
if [ ! -d "$root/opt/hostedtoolcache" ]; then
  echo "runner-env.sh: no /opt/hostedtoolcache (create-runner-user.sh makes it)" >&2
  exit 1
fi
