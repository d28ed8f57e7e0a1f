#!/usr/bin/env bash
# Installs every Debian 12 package that the build, the local stack (scripts/stack.sh) and the
# tests need, then the tests' npm tooling (`npm ci` in tests/alink: Alibaba's Node device SDK;
# Node.js 20 with npm must be there). Idempotent: when everything is installed it only checks
# and exits (no network).
# Non-interactive; uses sudo when not root. Never starts system services: the local stack runs
# its own PostgreSQL/Redis/Mosquitto processes, and a system instance on the default ports would
# only get in its way.
#
# Usage: scripts/install-deps.sh [--update]   (--update: apt-get update even if nothing is missing)
# IOT_APT_UPDATED=1: the caller has just run apt-get update; do not run it again.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force_update=0
for arg in "$@"; do
  case "$arg" in
    --update) force_update=1 ;;
    -h | --help)
      iot::usage "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) iot::die "unknown argument: $arg" ;;
  esac
done

mapfile -t missing < <(iot::missing_packages)
if ((${#missing[@]} == 0 && force_update == 0)); then
  iot::info "all ${#IOT_DEB_PACKAGES[@]} packages already installed"
  iot::npm_test_tools || iot::die "npm ci in tests/alink failed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if [[ "${IOT_APT_UPDATED:-0}" != 1 || $force_update == 1 ]]; then
  iot::info "apt-get update"
  iot::sudo apt-get -o DPkg::Lock::Timeout=600 update -q
fi

# Fail early and clearly on a package name this Debian does not know.
unknown=()
for p in "${IOT_DEB_PACKAGES[@]}"; do
  candidate=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
    unknown+=("$p")
  fi
done
((${#unknown[@]} == 0)) || iot::die "no installation candidate for: ${unknown[*]}"

mapfile -t missing < <(iot::missing_packages)
if ((${#missing[@]} == 0)); then
  iot::info "all ${#IOT_DEB_PACKAGES[@]} packages already installed"
  iot::npm_test_tools || iot::die "npm ci in tests/alink failed"
  exit 0
fi

# policy-rc.d exiting 101 tells invoke-rc.d (used by postinst scripts) not to start services:
# postgresql and redis-server would otherwise start system instances on 5432/6379.
policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  if ((created_policy)); then
    iot::sudo rm -f "$policy"
  fi
}
trap cleanup EXIT
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\n# Written by iot-platform scripts/install-deps.sh during install.\nexit 101\n' |
    iot::sudo tee "$policy" >/dev/null
  iot::sudo chmod 755 "$policy"
  created_policy=1
fi

iot::info "installing: ${missing[*]}"
iot::sudo env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"

mapfile -t missing < <(iot::missing_packages)
((${#missing[@]} == 0)) || iot::die "still missing after install: ${missing[*]}"
iot::info "all ${#IOT_DEB_PACKAGES[@]} packages installed"
iot::npm_test_tools || iot::die "npm ci in tests/alink failed"
