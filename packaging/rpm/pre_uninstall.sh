# shellcheck shell=sh
# krunner's %preun ($1: 0 on erase, 1 on upgrade): on erase, stop the service (busy runners
# finish first, up to TimeoutStopSec) and disable it. An upgrade restarts nothing.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now krunner.service >/dev/null 2>&1 || :
fi
