#!/bin/sh
# Checks, at the end of an image build, that the image has what the actions runner krunner
# provides (at /opt/actions-runner, from the host) needs from the OS: the runner user (uid
# 1001, in group docker), su and the agent's other tools, and the runner's .NET dependencies
# (ICU, OpenSSL, Kerberos, zlib). Prints what is missing and exits 1 if anything is. POSIX sh;
# needs ldconfig (glibc) to find the libraries. $ROOT (default: none) prefixes the paths it
# looks at, for tests.
set -u

root=${ROOT:-}
missing=0
lack() {
  echo "check-runner-needs.sh: $*" >&2
  missing=1
}

for tool in sh su mount umount id env; do
  command -v "$tool" >/dev/null 2>&1 || lack "no $tool"
done

uid=$(id -u runner 2>/dev/null) || uid=
[ "$uid" = 1001 ] || lack "user runner is not uid 1001 (${uid:-no such user})"
case " $(id -nG runner 2>/dev/null) " in
  *" docker "*) ;;
  *) lack "user runner is not in group docker" ;;
esac

# The runner's .NET dependencies, by the sonames .NET loads.
libs=$(ldconfig -p 2>/dev/null) || libs=
check_lib() { # WHAT SONAME-REGEX
  printf '%s\n' "$libs" | grep -Eq "^[[:space:]]+$2[[:space:]]" ||
    lack "no $1 library ($2 in ldconfig's cache)"
}
check_lib ICU 'libicuuc\.so\.[0-9]+'
check_lib OpenSSL 'libssl\.so\.3'
check_lib Kerberos 'libgssapi_krb5\.so\.2'
check_lib zlib 'libz\.so\.1'

# The runner comes from the host: krunner's images have none of their own (with one, krunner's
# default `--runner auto` would run the image's instead).
[ ! -e "$root/opt/actions-runner" ] ||
  lack "/opt/actions-runner exists: the runner is krunner's to provide"
[ -f "$root/etc/krunner/runner.env" ] || lack "no /etc/krunner/runner.env"
[ -d "$root/opt/hostedtoolcache" ] || lack "no /opt/hostedtoolcache"

exit "$missing"
