# shellcheck shell=sh
# krunner's %postun: systemd forgets the removed unit. The cache (/var/lib/krunner) stays.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
