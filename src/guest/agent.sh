#!/bin/sh
# krunner guest agent: the workload of every guest, injected by the host into each run's clone
# at /.krunner/agent, so any image that meets the image contract works and the agent always
# matches the host's krunner. Needs only a POSIX sh, mount/umount, su, id, kill and date
# (busybox is enough). It runs as root: under libkrun's init, or as the child of krunner's
# PID 1 under the namespace backend.
#
# Configuration: /.krunner/agent.conf, written by the host, never secret. One setting a line:
#   mount TAG PATH ro|rw   a virtio-fs share to mount (krun; the namespace backend pre-mounts)
#   secrets PATH           the per-run secrets share (holds jitconfig or token)
#   results PATH           the per-run results share (the agent writes "result" there)
#   runner jit|token       run the actions runner once (else: run the command after "--")
#   url URL / name NAME / labels L / group G / work DIR / user USER   (token mode, user)
#
# Runner mode, in order:
#   1. mount the shares;
#   2. read the registration from the secrets share, delete it and unmount the share, before
#      any process a workflow can see exists;
#   3. start podman's docker-compatible service on /var/run/docker.sock if podman exists;
#   4. run the runner as USER (uid 1001 in krunner's images) from /opt/actions-runner:
#      JIT: bin/Runner.Listener run --jitconfig CONFIG (its documented, single-use input);
#      token: config.sh --unattended --ephemeral --disableupdate …, then bin/Runner.Listener run;
#   5. forward SIGTERM/SIGINT to it; write its exit status and start/end times to
#      RESULTS/result; exit with its status.
set -eu

conf=/.krunner/agent.conf
runner_root=/opt/actions-runner
secrets='' results='' mode='' url='' name='' labels='' group='' work=_work user=runner
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
		runner) mode=$1 ;;
		url) url=$1 ;;
		name) name=$1 ;;
		labels) labels=$1 ;;
		group) group=$* ;;
		work) work=$1 ;;
		user) user=$1 ;;
		*) fail 125 "unknown setting in $conf: $key" ;;
		esac
	done <"$conf"
}
load_conf

if [ -z "$mode" ]; then
	# Command mode (krunner exec): run what follows "--".
	[ "${1:-}" = "--" ] && shift
	[ "$#" -gt 0 ] || fail 125 "no command given"
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
# bind mount under the namespace backend) and leave an empty, closed directory.
if umount "$secrets" 2>/dev/null; then :; else log "warning: could not unmount $secrets"; fi
chmod 000 "$secrets" 2>/dev/null || true
[ -n "$registration" ] || fail 125 "the registration in $secret_file is empty"

# A docker-compatible daemon for the workflow, when the image has one.
if command -v podman >/dev/null 2>&1; then
	mkdir -p /var/run
	podman system service --time=0 unix:///var/run/docker.sock >/var/log/krunner-podman.log 2>&1 &
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

# as_user PROG ARGS…: become PROG, as the runner user with a minimal, explicit environment.
# It execs: call it in a subshell or a background job, whose pid is then the runner's own (so
# signals reach the runner, not a shell around it).
as_user() {
	# shellcheck disable=SC2016 # "$0" "$@" are for the inner sh, not this one
	exec env -i PATH="$PATH" HOME="$home" LANG=C.UTF-8 \
		su -s /bin/sh -c 'exec "$0" "$@"' -- "$user" "$@"
}

runner_pid=''
# shellcheck disable=SC2317 # called by the trap
forward() {
	# The runner treats SIGINT and SIGTERM alike (cancel, finish the job step, exit);
	# background jobs of a non-interactive sh ignore SIGINT, so always send TERM.
	[ -z "$runner_pid" ] || kill -TERM "$runner_pid" 2>/dev/null || true
}
trap forward TERM INT

# run_runner PROG ARGS…: start it in the background, wait through forwarded signals.
run_runner() {
	"$@" &
	runner_pid=$!
	runner_started=$(date +%s)
	while :; do
		rc=0
		wait "$runner_pid" || rc=$?
		# wait returns early (>128) when a trapped signal arrives; go on until it is gone.
		kill -0 "$runner_pid" 2>/dev/null || break
	done
	return "$rc"
}

cd "$runner_root" 2>/dev/null || fail 125 "no actions runner at $runner_root"
rc=0
if [ "$mode" = jit ]; then
	run_runner as_user "$runner_root/bin/Runner.Listener" run --jitconfig "$registration" || rc=$?
else
	set -- --unattended --ephemeral --disableupdate --url "$url" --token "$registration" \
		--name "$name" --work "$work"
	[ -z "$labels" ] || set -- "$@" --labels "$labels"
	[ -z "$group" ] || set -- "$@" --runnergroup "$group"
	(as_user "$runner_root/config.sh" "$@") || fail $? "config.sh failed"
	set --
	run_runner as_user "$runner_root/bin/Runner.Listener" run || rc=$?
fi
registration=''
write_result "$rc"
exit "$rc"
