# shellcheck shell=sh
# krunner's %post ($1: 1 on install, 2 on upgrade): the image cache, private to root, and
# systemd told about the unit. Neither enabled nor started: it needs a principal and a token.
if [ ! -e /var/lib/krunner ]; then
	install -d -m 0700 -o root -g root /var/lib/krunner
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
