#!/bin/sh
# krunner guest agent: the workload of every guest, injected by the host into each run's clone
# at /.krunner/agent, so any image that meets the image contract works and the agent always
# matches the host's krunner. Needs only a POSIX sh, mount/umount, su, id, kill, cat and date
# (busybox is enough). It runs as root: under libkrun's init, or as the child of krunner's
# PID 1 under the namespace backend.
#
# Configuration: /.krunner/agent.conf, written by the host, never secret. One setting a line:
#   mount TAG PATH ro|rw   a virtio-fs share to mount (krun; the namespace backend pre-mounts)
#   secrets PATH           the per-run secrets share (holds jitconfig or token)
#   results PATH           the per-run results share (the agent writes "result" there)
#   control PATH           the per-run control share (read-only; the host creates "stop" there)
#   runner jit|token       run the actions runner once (else: run the command)
#   url URL / name NAME / labels L / group G / work DIR / user USER   (token mode, user)
#   root DIR               the runner's directory (default /opt/actions-runner)
#
# The workload never travels on the kernel command line (which cannot carry "--", quotes or
# newlines): the host writes it into the clone, one file per item, exact bytes.
#   /.krunner/argv/0, 1, …   command mode: the command and its arguments
#   /.krunner/env/NAME       the environment to add; the file's content is the value
#
# Command mode: rebuild the command from argv/, export env/, exec it.
#
# Runner mode, in order:
#   1. mount the shares;
#   2. read the registration from the secrets share, delete it and unmount the share, before
#      any process a workflow can see exists;
#   3. start podman's docker-compatible service on /var/run/docker.sock if podman exists;
#   4. run the runner as USER (uid 1001 in krunner's images) from /opt/actions-runner:
#      JIT: bin/Runner.Listener run, with the config in ACTIONS_RUNNER_INPUT_JITCONFIG;
#      token: config.sh --unattended --ephemeral --disableupdate … with the token in
#      ACTIONS_RUNNER_INPUT_TOKEN, then bin/Runner.Listener run. The runner reads any
#      --FLAG from ACTIONS_RUNNER_INPUT_FLAG and clears it; the registration is thus in no
#      process's argv (world-readable in /proc) and, passed through a pipe from a shell
#      builtin, in no file either;
#   5. forward SIGTERM/SIGINT to it, and stop it the same way when the host creates
#      CONTROL/stop; write its exit status and start/end times to RESULTS/result; exit with
#      its status.
# The runner and podman get the env/ variables too (the runner on top of a minimal
# environment). The runner also gets the image's /etc/krunner/runner.env (NAME=VALUE lines:
# what an image wants every job to see, e.g. RUNNER_TOOL_CACHE), and
# DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 when the image has no libicu, without which .NET
# would not start; the env/ variables win over both.
set -eu

conf=/.krunner/agent.conf
argv_dir=/.krunner/argv
env_dir=/.krunner/env
runner_root=/opt/actions-runner
runner_env=/etc/krunner/runner.env
secrets='' results='' control='' mode='' url='' name='' labels='' group='' work=_work user=runner
started=$(date +%s)
runner_started=''

log() { echo "krunner agent: $*" >&2; }

# write_result CODE: the host reads this file after the guest ends.
write_result() {
	[ -n "$results" ] || return 0
	{
		echo "exit_code=$1"
		echo "started=$started"
		echo "runner_started=$runner_started"
		echo "ended=$(date +%s)"
	} >"$results/result.tmp" && mv "$results/result.tmp" "$results/result"
}

fail() { # CODE MESSAGE
	log "$2"
	write_result "$1" || true
	exit "$1"
}

# is_name WORD: whether WORD can be a variable name (the host only writes such names).
is_name() {
	case "$1" in
	'' | [!A-Za-z_]* | *[!A-Za-z0-9_]*) return 1 ;;
	esac
}

# export_env: exports each env/NAME file as NAME, byte for byte. Its only state is its own
# positional parameters, so a variable named like one of the agent's keeps the host's value.
export_env() {
	set -- "$env_dir"/*
	while [ "$#" -gt 0 ]; do
		if [ -f "$1" ] && is_name "${1##*/}"; then
			# The x keeps trailing newlines, which $(…) would strip; eval only sees a name.
			export "${1##*/}=$(cat "$1" && printf x)"
			eval "${1##*/}=\${${1##*/}%x}"
		fi
		shift
	done
}

# load_conf: reads the configuration. A function, so that its `set --` leaves the script's own
# arguments (the command of exec mode) alone.
load_conf() {
	[ -r "$conf" ] || return 0
	while IFS= read -r line || [ -n "$line" ]; do
		# Split on blanks without globbing.
		set -f
		# shellcheck disable=SC2086
		set -- $line
		set +f
		[ "$#" -gt 0 ] || continue
		key=$1
		shift
		case "$key" in
		'#'*) ;;
		mount)
			[ "$#" -eq 3 ] || fail 125 "bad mount line in $conf: $line"
			mkdir -p "$2"
			if [ "$3" = ro ]; then
				mount -t virtiofs -o ro "$1" "$2" || fail 125 "cannot mount share $1 at $2"
			else
				mount -t virtiofs "$1" "$2" || fail 125 "cannot mount share $1 at $2"
			fi
			;;
		secrets) secrets=$1 ;;
		results) results=$1 ;;
		control) control=$1 ;;
		runner) mode=$1 ;;
		url) url=$1 ;;
		name) name=$1 ;;
		labels) labels=$1 ;;
		group) group=$* ;;
		work) work=$1 ;;
		user) user=$1 ;;
		root) runner_root=$1 ;;
		*) fail 125 "unknown setting in $conf: $key" ;;
		esac
	done <"$conf"
}
load_conf
# The guest's host name (the runner's name in `krunner run`): the host wrote /etc/hostname;
# libkrun's init does not apply it (the namespace backend has set it already).
if [ -s /etc/hostname ] && [ -w /proc/sys/kernel/hostname ]; then
	if read -r h </etc/hostname && [ "$(cat /proc/sys/kernel/hostname 2>/dev/null)" != "$h" ]; then
		printf '%s' "$h" 2>/dev/null >/proc/sys/kernel/hostname || log "warning: cannot set the host name $h"
	fi
fi

if [ -z "$mode" ]; then
	# Command mode (krunner exec): argv/0, argv/1, … until one is missing; the x keeps
	# trailing newlines, which $(…) would strip.
	set --
	i=0
	while [ -e "$argv_dir/$i" ]; do
		v=$(cat "$argv_dir/$i" && printf x) || fail 125 "cannot read $argv_dir/$i"
		set -- "$@" "${v%x}"
		i=$((i + 1))
	done
	[ "$#" -gt 0 ] || fail 125 "no command given"
	# Last: nothing of the agent runs with the workload's environment.
	export_env
	exec "$@"
fi

case "$mode" in
jit) secret_file=$secrets/jitconfig ;;
token) secret_file=$secrets/token ;;
*) fail 125 "unknown runner mode: $mode" ;;
esac
if [ -z "$secrets" ] || [ ! -r "$secret_file" ]; then
	fail 125 "no registration at $secret_file"
fi
registration=$(cat "$secret_file")
rm -f "$secret_file"
# Nothing a workflow starts may reach the share again: unmount it (virtio-fs under krun, a
# bind mount under the namespace backend) and remove its mount point; if that fails, leave
# at least an empty, closed directory.
if umount "$secrets" 2>/dev/null; then :; else log "warning: could not unmount $secrets"; fi
rmdir "$secrets" 2>/dev/null || chmod 000 "$secrets" 2>/dev/null || true
[ -n "$registration" ] || fail 125 "the registration in $secret_file is empty"

# A docker-compatible daemon for the workflow, when the image has one.
if command -v podman >/dev/null 2>&1; then
	mkdir -p /var/run
	(
		export_env
		exec podman system service --time=0 unix:///var/run/docker.sock
	) >/var/log/krunner-podman.log 2>&1 &
	i=0
	while [ ! -S /var/run/docker.sock ] && [ "$i" -lt 100 ]; do
		sleep 0.1 2>/dev/null || sleep 1
		i=$((i + 1))
	done
	if [ -S /var/run/docker.sock ]; then
		if ! { chgrp docker /var/run/docker.sock && chmod 660 /var/run/docker.sock; } 2>/dev/null; then
			log "warning: cannot give /var/run/docker.sock to group docker"
		fi
	else
		log "warning: podman did not create /var/run/docker.sock (see /var/log/krunner-podman.log)"
	fi
fi

id "$user" >/dev/null 2>&1 || fail 125 "the image has no user $user"
home=$(getent passwd "$user" 2>/dev/null | cut -d: -f6 || true)
[ -n "$home" ] || home=/home/$user

# as_user [--secret-env NAME] PROG ARGS…: become PROG, as the runner user with a minimal,
# explicit environment plus the env/ variables. With --secret-env, NAME is set to the first
# line of stdin (read by the runner user's shell, then stdin is /dev/null): the way a secret
# reaches PROG without being in any argv. It execs: call it in a subshell or a background job,
# whose pid is then the runner's own (so signals reach the runner, not a shell around it).
as_user() {
	secret_env=''
	if [ "$1" = --secret-env ]; then
		is_name "$2" || fail 125 "bad variable name $2"
		secret_env=$2
		shift 2
	fi
	if [ -n "$secret_env" ]; then
		set -- su -s /bin/sh \
			-c "IFS= read -r $secret_env && export $secret_env && exec \"\$0\" \"\$@\" </dev/null" \
			-- "$user" "$@"
	else
		# shellcheck disable=SC2016 # "$0" "$@" are for the inner sh, not this one
		set -- su -s /bin/sh -c 'exec "$0" "$@"' -- "$user" "$@"
	fi
	# env -i applies its NAME=VALUE words in order, the last one winning: each loop puts its
	# words before the earlier ones', so env/ (first here) wins over runner.env and the
	# globalization default.
	for f in "$env_dir"/*; do
		if [ -f "$f" ] && is_name "${f##*/}"; then
			v=$(cat "$f" && printf x) || exit 125
			set -- "${f##*/}=${v%x}" "$@"
		fi
	done
	if [ -r "$runner_env" ]; then
		while IFS= read -r l || [ -n "$l" ]; do
			case "$l" in
			*=*) is_name "${l%%=*}" && set -- "$l" "$@" ;;
			esac
		done <"$runner_env"
	fi
	[ -n "$have_icu" ] || set -- DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 "$@"
	exec env -i PATH="$PATH" HOME="$home" LANG=C.UTF-8 "$@"
}

runner_pid=''
# shellcheck disable=SC2317 # called by the trap
forward() {
	# The runner treats SIGINT and SIGTERM alike (cancel, finish the job step, exit);
	# background jobs of a non-interactive sh ignore SIGINT, so always send TERM.
	[ -z "$runner_pid" ] || kill -TERM "$runner_pid" 2>/dev/null || true
}
trap forward TERM INT

# watch_stop PID: polls for the host's stop request and then stops the runner as `forward`
# does. Under krun a signal to the VMM never reaches the guest; this is how a stop does.
# shellcheck disable=SC2317 # runs in the background
watch_stop() {
	while kill -0 "$1" 2>/dev/null; do
		if [ -e "$control/stop" ]; then
			log "stop requested by the host"
			kill -TERM "$1" 2>/dev/null || true
			return 0
		fi
		sleep 1
	done
}

# run_runner [--stdin VALUE] PROG ARGS…: start it in the background (VALUE as a line on its
# stdin, written by the printf builtin: in no argv, no file), wait through forwarded signals.
run_runner() {
	if [ "$1" = --stdin ]; then
		feed=$2
		shift 2
		# $! is the pipeline's last command: the runner, not printf.
		printf '%s\n' "$feed" | "$@" &
		feed=''
	else
		"$@" &
	fi
	runner_pid=$!
	runner_started=$(date +%s)
	watcher=''
	if [ -n "$control" ]; then
		watch_stop "$runner_pid" &
		watcher=$!
	fi
	while :; do
		rc=0
		wait "$runner_pid" || rc=$?
		# wait returns early (>128) when a trapped signal arrives; go on until it is gone.
		kill -0 "$runner_pid" 2>/dev/null || break
	done
	# The watcher ends with the runner; its status is not the run's.
	if [ -n "$watcher" ]; then
		kill "$watcher" 2>/dev/null || true
		wait "$watcher" 2>/dev/null || true
	fi
	return "$rc"
}

cd "$runner_root" 2>/dev/null || fail 125 "no actions runner at $runner_root"
# .NET needs ICU unless told to do without; an image made for a provided runner may lack it.
have_icu=''
for f in /usr/lib/libicuuc.so* /usr/lib64/libicuuc.so* /lib/libicuuc.so* /lib64/libicuuc.so* \
	/usr/lib/*/libicuuc.so* /lib/*/libicuuc.so* /usr/local/lib/libicuuc.so*; do
	if [ -e "$f" ]; then
		have_icu=1
		break
	fi
done
[ -n "$have_icu" ] || log "the image has no libicu: the runner gets DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1"
# The runner writes into its directory. A provided one belongs to uid 1001; an image whose
# runner user has another uid gets the directory itself (not its contents: a chown -R would
# copy the whole runner into the run's layer).
owner=$(stat -c %u "$runner_root" 2>/dev/null || echo '')
uid=$(id -u "$user")
if [ "$owner" != "$uid" ]; then
	chown "$user" "$runner_root" || log "warning: cannot give $runner_root to $user"
fi
# These lines land in the run's log on the host (the guest console): enough to tell how far a
# guest got.
log "starting the runner ($mode mode) as $user from $runner_root"
rc=0
if [ "$mode" = jit ]; then
	run_runner --stdin "$registration" \
		as_user --secret-env ACTIONS_RUNNER_INPUT_JITCONFIG "$runner_root/bin/Runner.Listener" run ||
		rc=$?
else
	set -- --unattended --ephemeral --disableupdate --url "$url" --name "$name" --work "$work"
	[ -z "$labels" ] || set -- "$@" --labels "$labels"
	[ -z "$group" ] || set -- "$@" --runnergroup "$group"
	(printf '%s\n' "$registration" | as_user --secret-env ACTIONS_RUNNER_INPUT_TOKEN \
		"$runner_root/config.sh" "$@") || fail $? "config.sh failed"
	set --
	run_runner as_user "$runner_root/bin/Runner.Listener" run || rc=$?
fi
registration=''
log "the runner exited with status $rc"
write_result "$rc"
exit "$rc"
