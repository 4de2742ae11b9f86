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

# PostgreSQL server (tests/pg_server.py starts one in a temp dir for the shared-state tests).
# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<major>/bin, off PATH.
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  APT_PACKAGES+=(postgresql)
fi

# --- end of sections ---

if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "test-deps: installing Debian packages: ${APT_PACKAGES[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi
