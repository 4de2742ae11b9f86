#!/usr/bin/env bash
# Installs (idempotently) what the test suite needs beyond the Python packages: Debian packages,
# Node packages, ... `make test` runs it before pytest, so a fresh machine and CI get the same
# set-up as a developer. Each dependency is one section below; every section checks first and
# installs only what is missing, so a second run costs a few hundred milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: collected from the sections, installed in one apt-get call when any is missing.
APT_PACKAGES=()

need_apt() {  # need_apt COMMAND PACKAGE: install PACKAGE unless COMMAND is on PATH
  command -v "$1" >/dev/null 2>&1 || APT_PACKAGES+=("$2")
}

# --- sections (one per dependency) ---

# Node.js + npm (the machine's nodesource Node 20; @medplum/fhir-router 4.5.2 needs >= 20.19).
need_apt node nodejs
need_apt npm npm

# Chromium (Debian's, /usr/bin/chromium) for the CDS Hooks Sandbox browser test; playwright-core
# drives it: never a browser downloaded by a test tool.
need_apt chromium chromium

# PostgreSQL server (tests/pg_server.py starts one in a temp dir for the shared-state tests).
# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<major>/bin, off PATH.
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  APT_PACKAGES+=(postgresql)
fi

# nginx: the front of `fluoro-cds serve` (tests/test_service_front.py; make serve: tools/serve-deps.sh)
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  APT_PACKAGES+=(nginx)
fi

# --- end of sections ---

if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "test-deps: installing Debian packages: ${APT_PACKAGES[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

# --- after the Debian packages ---

# npm packages of tests/node (@medplum/fhir-router 4.5.2 for the second FHIR server,
# playwright-core for the sandbox test, axe-core for the SMART app accessibility test), exactly as
# package-lock.json pins them; re-run when the lock file is newer than the installed tree.
if [ ! -f tests/node/node_modules/.package-lock.json ] \
    || [ tests/node/package-lock.json -nt tests/node/node_modules/.package-lock.json ]; then
  echo "test-deps: npm ci in tests/node" >&2
  (cd tests/node && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
