#!/usr/bin/env bash
# Set-up shared by scripts/demo.sh and scripts/test.sh, for a fresh Debian machine
# with only Python: the system packages the tests drive (as root, or with sudo),
# then the package itself. Prints the python to use on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v curl >/dev/null || need_apt+=(curl)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
command -v openssl >/dev/null || need_apt+=(openssl)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)  # the registry's tests start their own
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2
fi

if [ -n "${VIRTUAL_ENV:-}" ] || [ "${CI:-}" = true ] || [ "${ASGI_APIM_NO_VENV:-}" = 1 ]; then
  py=python3
else
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv >&2 2>/dev/null || {
      sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
      python3 -m venv .venv >&2
    }
  fi
  py=.venv/bin/python
fi
"$py" -m pip install -q -e '.[dev]' >&2
echo "$py"
