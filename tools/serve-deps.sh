#!/usr/bin/env bash
# Installs (idempotently) what `fluoro-cds serve` needs beyond the Python packages: nginx, the
# front that reads requests whole before gunicorn sees them (service/front.py). `make serve`
# runs it (tools/test-deps.sh has the same check). Debian's package; services are not started by the install.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "serve-deps: installing Debian package nginx" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
