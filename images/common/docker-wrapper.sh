#!/bin/sh
# krunner's docker CLI wrapper, installed as `docker` in front of the real CLI (`docker.orig`).
#
# Inside a krunner guest, networking is libkrun's TSI: there are no bridge networks, so a
# container only reaches anything on the host network. This wrapper adds `--network host` to
# `docker run`, `docker create`, `docker container run` and `docker container create`, and
# gives every service of `docker compose up|run|create` `network_mode: host` (through one
# extra compose file), unless the user chose a network. Everything else, and every global
# option, goes to the real CLI untouched.
#
# The real CLI is `$DOCKER_ORIG` when set, else `docker.orig` on PATH. POSIX sh: it also runs
# under dash and busybox ash.
set -u

me='docker (krunner wrapper)'

orig=${DOCKER_ORIG:-}
if [ -z "$orig" ]; then
  orig=$(command -v docker.orig 2>/dev/null) || orig=
fi
if [ -z "$orig" ]; then
  printf '%s: the real docker CLI (docker.orig) is not on PATH\n' "$me" >&2
  exit 127
fi

# quote WORD: sets $q to WORD as one single-quoted shell word (for eval).
quote() {
  q='' rest=$1
  while :; do
    case $rest in
      *\'*)
        q="$q${rest%%\'*}'\\''"
        rest=${rest#*\'}
        ;;
      *)
        q="'$q$rest'"
        return
        ;;
    esac
  done
}

# Walk the arguments once. `head` collects (quoted) everything up to the insertion point and
# `tail` the rest; `mode` says what the next argument can be:
#   global          docker's global options, then the subcommand
#   container       after `container`: run/create, or anything else
#   runopts         options of run/create, up to the image
#   compose_global  compose's own options, then its subcommand
#   rest            nothing more to learn
head='' tail='' mode=global want='' sub='' network_given=0
compose_files=0 compose_stdin=0 project_dir='' env_files=''
for a do
  quote "$a"
  case $mode in
    global)
      head="$head $q"
      if [ -n "$want" ]; then
        want=
        continue
      fi
      case $a in
        --config | -c | --context | -H | --host | -l | --log-level | --tlscacert | --tlscert | --tlskey) want=value ;;
        --config=* | --context=* | --host=* | --log-level=* | --tlscacert=* | --tlscert=* | --tlskey=*) ;;
        -c?* | -H?* | -l?*) ;; # a short option with its value attached
        -D | --debug | --debug=* | --tls | --tls=* | --tlsverify | --tlsverify=*) ;;
        run | create)
          sub=$a
          mode=runopts
          ;;
        container) mode=container ;;
        compose) mode=compose_global ;;
        # Anything else (another command, --version, --help, an option we do not know and so
        # cannot tell whether it takes a value) goes through as it is.
        *) mode=rest ;;
      esac
      ;;
    container)
      head="$head $q"
      case $a in
        run | create)
          sub="container $a"
          mode=runopts
          ;;
        *) mode=rest ;;
      esac
      ;;
    runopts)
      # Only the options before the image are docker's; what follows is the container's.
      tail="$tail $q"
      if [ -n "$want" ]; then
        want=
        continue
      fi
      case $a in
        --network | --net)
          network_given=1
          want=value
          ;;
        --network=* | --net=*) network_given=1 ;;
        --) mode=rest ;;
        --*=*) ;;
        --detach | --interactive | --tty | --rm | --privileged | --init | --read-only | \
          --publish-all | --no-healthcheck | --oom-kill-disable | --sig-proxy | \
          --disable-content-trust | --quiet | --help | --use-api-socket) ;;
        --*) want=value ;; # every other long option of run/create takes a value
        -?*)
          # A group of short options (-it, -p80:80, -dp 80:80): the first one that takes a
          # value takes the rest of the group, or the next argument.
          g=${a#-}
          while [ -n "$g" ]; do
            c=${g%"${g#?}"}
            g=${g#?}
            case $c in
              [acehlmpuvw])
                [ -z "$g" ] && want=value
                break
                ;;
            esac
          done
          ;;
        *) mode=rest ;; # the image
      esac
      ;;
    compose_global)
      if [ -n "$want" ]; then
        head="$head $q"
        case $want in
          file)
            compose_files=$((compose_files + 1))
            [ "$a" = - ] && compose_stdin=1
            ;;
          dir) project_dir=$a ;;
          envfile) env_files="$env_files $q" ;;
        esac
        want=
        continue
      fi
      case $a in
        -f | --file) want='file' ;;
        -f?* | --file=*)
          compose_files=$((compose_files + 1))
          case $a in -f- | --file=-) compose_stdin=1 ;; esac
          ;;
        --project-directory | --workdir) want=dir ;;
        --project-directory=* | --workdir=*) project_dir=${a#*=} ;;
        --env-file) want=envfile ;;
        --env-file=*)
          quote "${a#*=}"
          env_files="$env_files $q"
          quote "$a"
          ;;
        -p | --project-name | --profile | --ansi | --parallel | --progress | --log-level) want=value ;;
        -p?* | --*=*) ;;
        --compatibility | --dry-run | --all-resources | --verbose | --no-ansi) ;;
        up | run | create)
          sub="compose $a"
          mode=rest
          tail="$tail $q"
          continue
          ;;
        *) mode=rest ;;
      esac
      head="$head $q"
      ;;
    rest)
      tail="$tail $q"
      ;;
  esac
done

case $sub in
  run | create | "container run" | "container create")
    if [ "$network_given" = 0 ]; then
      eval "exec \"\$orig\"$head --network host$tail"
    fi
    exec "$orig" "$@"
    ;;
  "compose "*) ;;
  *) exec "$orig" "$@" ;;
esac

# docker compose up|run|create. `head` is `[docker options] compose [compose options]`, so the
# real CLI can tell us about the project exactly as the command would see it.

if [ "$compose_stdin" = 1 ]; then
  printf '%s: the compose file comes from stdin, so its services keep their networks (give them network_mode: host)\n' "$me" >&2
  exec "$orig" "$@"
fi

services=$(eval "\"\$orig\"$head config --services" </dev/null 2>/dev/null) || exec "$orig" "$@"
config=$(eval "\"\$orig\"$head config" </dev/null 2>/dev/null) || exec "$orig" "$@"

# Services that chose their networking: a network_mode, or a network other than the implicit
# `default` (the normalized model gives every other service `networks: {default: …}`). The
# model compose prints is YAML with two-space indentation.
chosen=$(printf '%s\n' "$config" | awk '
  /^[^ #]/ { in_services = ($0 ~ /^services:[ \t]*$/); svc = ""; next }
  !in_services { next }
  /^  [^ #]/ {
    svc = substr($0, 3); sub(/:.*/, "", svc); gsub(/["\047]/, "", svc)
    in_networks = 0; next
  }
  svc == "" { next }
  /^    network_mode:/ { print svc; next }
  /^    networks:/ { in_networks = 1; next }
  /^    [^ ]/ { in_networks = 0; next }
  in_networks && /^      [^ ]/ {
    n = substr($0, 7); sub(/:.*/, "", n); gsub(/["\047]/, "", n)
    if (n != "default") print svc
  }
')

body=
for s in $services; do
  case " $(printf '%s' "$chosen" | tr '\n' ' ') " in
    *" $s "*) continue ;;
  esac
  body="$body  \"$s\":
    network_mode: host
"
done
if [ -z "$body" ]; then
  exec "$orig" "$@"
fi

override_dir=$(mktemp -d "${TMPDIR:-/tmp}/krunner-compose.XXXXXX") || exec "$orig" "$@"
override=$override_dir/host-network.yaml
{
  echo "# Written by krunner's docker wrapper: libkrun's TSI networking has no bridge networks,"
  echo "# so these services use the guest's (host) network."
  echo "services:"
  printf '%s' "$body"
} >"$override" || exec "$orig" "$@"

if [ "$compose_files" -gt 0 ]; then
  # The user named the files: ours goes last, so it wins.
  quote "$override"
  eval "exec \"\$orig\"$head -f $q$tail"
fi

# No -f: compose takes COMPOSE_FILE (from the environment, or the .env file), else the files
# it finds by name in the project directory or its parents. Give it the same list plus ours,
# through COMPOSE_FILE, so the command line stays as the user wrote it.
sep=${COMPOSE_PATH_SEPARATOR:-:}
files=${COMPOSE_FILE:-}

# dotenv_get FILE KEY: the last KEY=value in FILE, without quotes.
dotenv_get() {
  [ -f "$1" ] || return 0
  sed -n "s/^[[:blank:]]*\(export[[:blank:]]\{1,\}\)\{0,1\}$2[[:blank:]]*=[[:blank:]]*//p" "$1" |
    tail -n 1 | sed "s/^\"\(.*\)\"[[:blank:]]*\$/\1/; s/^'\(.*\)'[[:blank:]]*\$/\1/"
}

# dotenv_files: the COMPOSE_FILE that compose would read from its env files (--env-file, else
# .env in the project directory), if any.
dotenv_files() {
  if [ -n "$env_files" ]; then
    eval "set -- $env_files"
  else
    set -- "${project_dir:-.}/.env"
  fi
  found=''
  for e do
    v=$(dotenv_get "$e" COMPOSE_FILE)
    [ -n "$v" ] && found=$v
  done
  printf '%s' "$found"
}

[ -n "$files" ] || files=$(dotenv_files)

if [ -z "$files" ]; then
  dir=$(cd "${project_dir:-.}" 2>/dev/null && pwd) || dir=
  while [ -n "$dir" ]; do
    for n in compose.yaml compose.yml docker-compose.yml docker-compose.yaml; do
      if [ -f "$dir/$n" ]; then
        files="$dir/$n"
        break
      fi
    done
    if [ -n "$files" ]; then
      for n in compose.override.yml compose.override.yaml docker-compose.override.yml docker-compose.override.yaml; do
        if [ -f "$dir/$n" ]; then
          files="$files$sep$dir/$n"
          break
        fi
      done
      break
    fi
    [ "$dir" = / ] && break
    dir=$(dirname "$dir")
  done
fi

if [ -z "$files" ]; then
  exec "$orig" "$@"
fi
COMPOSE_FILE="$files$sep$override"
export COMPOSE_FILE
exec "$orig" "$@"
