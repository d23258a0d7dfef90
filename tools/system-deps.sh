#!/usr/bin/env bash
# Make sure the system programs the tests drive are present: redis-server, chromium, nginx,
# postgresql (or
# only the ones named as arguments: `make bench` needs redis-server alone).
# As root, missing ones are installed with apt-get; otherwise the command to run is printed.
# The tests themselves fail (in CI) or skip with a reason (elsewhere) when one is missing.
set -u
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(redis-server chromium nginx postgresql)
missing=()
for name in "${wanted[@]}"; do
  case "$name" in
    redis-server) command -v redis-server >/dev/null 2>&1 || missing+=(redis-server) ;;
    chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
    nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx) ;;
    postgresql) compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql) ;;
    *) echo "system-deps.sh: unknown program $name" >&2; exit 2 ;;
  esac
done
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
