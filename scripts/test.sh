#!/usr/bin/env bash
# THE test command (README, .ci/run): installs missing deps, configures and builds, starts a
# PostgreSQL/Redis/Mosquitto of its own (test ports and state dir, so it coexists with the dev
# stack and with another test run), runs ctest against them, stops them, exits with ctest's code.
#
# Usage: scripts/test.sh [CTEST ARGS...]        e.g. scripts/test.sh -L unit   or   -R shadow
#
# Environment:
#   IOT_PRESET           configure/build preset [dev]
#   IOT_BUILD_DIR        the preset's build dir [build/; build-asan/, build-tsan/ for those presets]
#   IOT_SKIP_INSTALL=1   do not run scripts/install-deps.sh
#   IOT_SKIP_BUILD=1     do not configure/build (test what is in build/)
#   IOT_TEST_PORTS="PG REDIS MQTT"  preferred infra ports [25432 26379 21883]; the next free
#                        port is taken when one is in use (e.g. by a concurrent test run)
#   IOT_TEST_STATE_DIR   state dir of the test infra [a new /tmp/iot-platform/test.XXXXXX]
#   IOT_KEEP_STATE=1     keep the state dir (logs, data) after the run
# The tests see IOT_TEST_PG_URL, IOT_TEST_REDIS_URL, IOT_TEST_MQTT_URL.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IOT_REPO_ROOT"

preset=${IOT_PRESET:-dev}
case "$preset" in
  asan | tsan) default_build_dir=$IOT_REPO_ROOT/build-$preset ;;
  *) default_build_dir=$IOT_REPO_ROOT/build ;;
esac
build_dir=${IOT_BUILD_DIR:-$default_build_dir}
# stack.sh takes the broker plugin from there.
export IOT_BUILD_DIR=$build_dir

if [[ "${IOT_SKIP_INSTALL:-0}" != 1 ]]; then
  if [[ -n "$(iot::missing_packages)" ]]; then
    iot::section "install dependencies"
    scripts/install-deps.sh
  fi
fi

if [[ "${IOT_SKIP_BUILD:-0}" != 1 ]]; then
  iot::section "configure + build (preset $preset)"
  # One build at a time in this tree: two concurrent ninja runs in one build dir corrupt it.
  mkdir -p "$build_dir"
  exec 9>"$build_dir/.iot-build.lock"
  if ! flock -n 9; then
    iot::info "another build in $build_dir is running; waiting for it"
    flock 9
  fi
  cmake --preset "$preset"
  cmake --build --preset "$preset"
  flock -u 9
  exec 9>&-
fi

# npm test tooling (the Alink tests' SDK): also with IOT_SKIP_INSTALL, as CI runs this script;
# a no-op once installed from the current lock file.
iot::npm_test_tools || iot::info "the Alink SDK tests (alink_sdk_integration_tests) will fail"

iot::section "start test infrastructure"
mkdir -p /tmp/iot-platform
chmod 755 /tmp/iot-platform
state_dir=${IOT_TEST_STATE_DIR:-$(mktemp -d /tmp/iot-platform/test.XXXXXX)}
export IOT_STATE_DIR=$state_dir
export IOT_STACK_DURABLE=0 # throwaway data: no fsync

# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  iot::section "stop test infrastructure"
  "$IOT_REPO_ROOT/scripts/stack.sh" stop || rc=1
  if [[ "${IOT_KEEP_STATE:-0}" == 1 || $rc -ne 0 ]]; then
    iot::info "test infra state and logs kept in $state_dir"
  else
    rm -rf "$state_dir"
    # initdb may have gone to the fallback dir when the state dir is unreachable for postgres.
    rm -rf "/tmp/iot-platform-pg/$(printf '%s' "$state_dir" | md5sum | cut -c1-12)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

read -r pg_port redis_port mqtt_port <<<"${IOT_TEST_PORTS:-25432 26379 21883}"
# A concurrent run may grab a port between the check and the bind: then retry on other ports.
for attempt in 0 1 2; do
  IOT_STACK_PG_PORT=$(iot::free_port $((pg_port + attempt * 20)))
  IOT_STACK_REDIS_PORT=$(iot::free_port $((redis_port + attempt * 20)))
  IOT_STACK_MQTT_PORT=$(iot::free_port $((mqtt_port + attempt * 20)))
  export IOT_STACK_PG_PORT IOT_STACK_REDIS_PORT IOT_STACK_MQTT_PORT
  if scripts/stack.sh infra-start >/dev/null; then
    break
  fi
  ((attempt < 2)) || iot::die "could not start the test infrastructure; logs in $state_dir/logs"
  scripts/stack.sh infra-stop
done

# shellcheck source=/dev/null
source "$state_dir/env"
# The broker authenticates every client (iot_auth plugin): tests connect as the gateway's
# service account, which may use any client id and topic.
# shellcheck source=/dev/null
source "$state_dir/secrets"
mqtt_auth_url=${IOT_MQTT_URL/mqtt:\/\//mqtt://$IOT_DEVICE_GATEWAY_MQTT_USERNAME:$IOT_DEVICE_GATEWAY_MQTT_PASSWORD@}
export IOT_TEST_PG_URL=$IOT_PG_URL IOT_TEST_REDIS_URL=$IOT_REDIS_URL IOT_TEST_MQTT_URL=$mqtt_auth_url
export IOT_TEST_SECRET_KEY=$IOT_SECRET_KEY
iot::info "IOT_TEST_PG_URL=$IOT_TEST_PG_URL"
iot::info "IOT_TEST_REDIS_URL=$IOT_TEST_REDIS_URL"
iot::info "IOT_TEST_MQTT_URL=$IOT_MQTT_URL (as the gateway service account)"
# Tests must not pick up a developer's stack by accident: they get only the IOT_TEST_* URLs.
unset IOT_PG_URL IOT_REDIS_URL IOT_MQTT_URL

iot::section "ctest $*"
set +e
ctest --test-dir "$build_dir" --output-on-failure -j2 "$@"
rc=$?
set -e
iot::info "ctest exited with $rc"
exit "$rc"
