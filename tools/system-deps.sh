#!/usr/bin/env bash
# Make sure the system programs the tests drive are present: redis-server, chromium, nginx.
# As root, missing ones are installed with apt-get; otherwise the command to run is printed.
# The tests themselves fail (in CI) or skip with a reason (elsewhere) when one is missing.
set -u
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit $?
fi
echo "missing system packages: ${missing[*]}" >&2
echo "install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
exit 0
