#!/usr/bin/env bash
# Builds and runs tests under a sanitizer: preset `asan` (AddressSanitizer + UndefinedBehavior-
# Sanitizer, build-asan/) or `tsan` (ThreadSanitizer, build-tsan/). Everything the tests run is
# instrumented: the test executables, the service processes they start and the broker plugin
# (loaded into Mosquitto with the sanitizer runtime preloaded). Only the targets the selected
# tests need are built. A sanitizer report anywhere (a test, a service, the broker) fails the run
# and is printed; reports go to files under the build dir (sanitizer-reports/).
#
# Usage: scripts/sanitize.sh asan|tsan [CTEST ARGS...]
#   Without ctest arguments, the default selection:
#     asan  every unit test, and the integration tests of the device-gateway, shadow and
#           rule-forwarding (what CI runs)
#     tsan  the tests of the threaded parts: gateway pipeline (device_gateway_unit_tests),
#           partition owner (device_gateway_partition_tests), shadow write-behind
#           (shadow_unit_tests), rule dispatcher (rules_unit_tests), and the common clients
#   With ctest arguments (e.g. -R shadow): those tests; their targets are built from the names.
#
# Suppressions (third-party code only, each with its reason): .sanitizers/*.supp.
# Environment: IOT_SKIP_BUILD=1 (test what is built), IOT_SANITIZE_BUILD_ONLY=1 (build, do not
# test), IOT_SKIP_INSTALL is passed on.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IOT_REPO_ROOT"

preset=${1:-}
[[ "$preset" == asan || "$preset" == tsan ]] || {
  iot::usage "${BASH_SOURCE[0]}"
  exit 2
}
shift
build_dir=$IOT_REPO_ROOT/build-$preset
start=$SECONDS

asan_integration=(gateway_integration_tests device_gateway_partition_tests
  shadow_integration_tests shadow_mqtt_integration_tests
  rules_integration_tests rules_downlink_integration_tests rules_security_integration_tests
  history_integration_tests subscriptions_integration_tests)
tsan_tests=(device_gateway_unit_tests device_gateway_partition_tests shadow_unit_tests
  rules_unit_tests history_subscriptions_unit_tests common_redis_mqtt_tests)

if [[ "${IOT_SKIP_BUILD:-0}" != 1 ]]; then
  iot::section "configure (preset $preset)"
  cmake --preset "$preset" >/dev/null
fi
# The test names (= their targets): the default selection, or what the ctest arguments select.
if (($# == 0)); then
  if [[ "$preset" == asan ]]; then
    mapfile -t tests < <(ctest --test-dir "$build_dir" -N -L unit | sed -n 's/^ *Test *#[0-9]*: //p')
    tests+=("${asan_integration[@]}")
  else
    tests=("${tsan_tests[@]}")
  fi
  regex="^($(
    IFS='|'
    echo "${tests[*]}"
  ))\$"
  ctest_args=(-R "$regex")
else
  mapfile -t tests < <(ctest --test-dir "$build_dir" -N "$@" | sed -n 's/^ *Test *#[0-9]*: //p')
  ctest_args=("$@")
fi
((${#tests[@]} > 0)) || iot::die "no test selected"

if [[ "${IOT_SKIP_BUILD:-0}" != 1 ]]; then
  iot::section "build ${#tests[@]} tests and what they start (preset $preset)"
  mkdir -p "$build_dir"
  exec 9>"$build_dir/.iot-build.lock"
  flock 9
  # The broker plugin too: the test harness's Mosquitto loads it when it is built, and a test
  # target does not always name it.
  cmake --build --preset "$preset" --target "${tests[@]}" iot_auth
  flock -u 9
  exec 9>&-
fi
built=$SECONDS
if [[ "${IOT_SANITIZE_BUILD_ONLY:-0}" == 1 ]]; then
  iot::info "sanitize $preset: built ${#tests[@]} tests in $((built - start)) s (IOT_SANITIZE_BUILD_ONLY)"
  exit 0
fi

reports=$build_dir/sanitizer-reports
rm -rf "$reports"
mkdir -p "$reports"
supp=$IOT_REPO_ROOT/.sanitizers
# halt_on_error: the first report stops the process (a test or a service fails, visibly);
# log_path: reports of processes whose output nobody reads (services, the broker) are kept.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:log_path=$reports/asan:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan:suppressions=$supp/ubsan.supp"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:history_size=4:log_path=$reports/tsan:suppressions=$supp/tsan.supp"

set +e
IOT_PRESET=$preset IOT_BUILD_DIR=$build_dir IOT_SKIP_BUILD=1 scripts/test.sh "${ctest_args[@]}"
rc=$?
set -e

found=0
for f in "$reports"/*; do
  [[ -f "$f" ]] || continue
  found=$((found + 1))
  printf '\n---- sanitizer report %s ----\n' "$f"
  head -n 80 "$f"
done
iot::info "sanitize $preset: build $((built - start)) s, tests $((SECONDS - built)) s, ${#tests[@]} tests, $found report file(s)"
if ((found > 0)); then
  iot::die "sanitize $preset: $found sanitizer report(s) (in $reports)"
fi
exit "$rc"
