#!/bin/sh
# krunner guest agent: the workload of every guest, injected by the host into each run's
# clone at /.krunner/agent. It needs only a POSIX sh and `mount` (busybox is enough).
#
# 1. Mount the shares listed in /.krunner/agent.conf ("mount TAG GUEST_PATH rw|ro"; under the
#    namespace backend the host has mounted them already and lists none).
# 2. Run the command given after "--" and exit with its status.
set -eu

conf=/.krunner/agent.conf
if [ -r "$conf" ]; then
  while read -r kind tag path mode; do
    case "$kind" in
      mount)
        mkdir -p "$path"
        if [ "$mode" = ro ]; then
          mount -t virtiofs -o ro "$tag" "$path"
        else
          mount -t virtiofs "$tag" "$path"
        fi
        ;;
      ''|'#'*) ;;
      *) echo "krunner agent: unknown line in $conf: $kind" >&2; exit 125 ;;
    esac
  done < "$conf"
fi

[ "${1:-}" = "--" ] && shift
if [ "$#" -eq 0 ]; then
  echo "krunner agent: no command given" >&2
  exit 125
fi
exec "$@"
