#!/usr/bin/env bash
# Runs one libFuzzer target (fuzz/), building it first when needed (preset `fuzz`: clang with
# -fsanitize=fuzzer,address,undefined, in build-fuzz/).
#
# Usage: scripts/fuzz.sh NAME [SECONDS [LIBFUZZER ARGS...]]   e.g. scripts/fuzz.sh rule_sql 60
#        scripts/fuzz.sh --list                               the targets
#        scripts/fuzz.sh all SECONDS                          every target, one after the other
#
# The run starts from the committed seeds (fuzz/corpus/NAME, never written to) and a working
# corpus kept between runs (build-fuzz/fuzz-corpus/NAME). It fails on a crash, a sanitizer
# report, a leak, a timeout (10 s per input) or running out of memory (2 GiB); the input that did
# it is saved under build-fuzz/fuzz-artifacts/NAME/ (replay: build-fuzz/bin/fuzz_NAME FILE).
# The last line says how many executions the run reached.
#
# Environment: IOT_FUZZ_SKIP_BUILD=1 (use what is built), IOT_FUZZ_BUILD_DIR [build-fuzz].
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IOT_REPO_ROOT"

build_dir=${IOT_FUZZ_BUILD_DIR:-$IOT_REPO_ROOT/build-fuzz}
targets() { sed -n 's/^iot_add_fuzzer(\([a-z_]*\) .*/\1/p' fuzz/CMakeLists.txt; }

[[ $# -ge 1 ]] || {
  iot::usage "${BASH_SOURCE[0]}"
  exit 2
}
name=$1
seconds=${2:-60}
shift $(($# >= 2 ? 2 : 1))
if [[ "$name" == --list ]]; then
  targets
  exit 0
fi
if [[ "$name" == all ]]; then
  for t in $(targets); do
    "${BASH_SOURCE[0]}" "$t" "$seconds" "$@"
  done
  exit 0
fi
targets | grep -qx "$name" || iot::die "no fuzz target '$name' (scripts/fuzz.sh --list)"
[[ "$seconds" =~ ^[0-9]+$ ]] || iot::die "SECONDS must be a number, not '$seconds'"

if [[ "${IOT_FUZZ_SKIP_BUILD:-0}" != 1 ]]; then
  mkdir -p "$build_dir"
  build_log=$build_dir/fuzz-build.log
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    cmake --preset fuzz -B "$build_dir" >"$build_log" 2>&1 || {
      tail -n 40 "$build_log" >&2
      iot::die "cannot configure the fuzz build (preset fuzz, clang)"
    }
  fi
  build_start=$SECONDS
  cmake --build "$build_dir" --target "fuzz_$name" -j2 >"$build_log" 2>&1 || {
    tail -n 40 "$build_log" >&2
    iot::die "cannot build fuzz_$name"
  }
  iot::info "fuzz_$name built in $((SECONDS - build_start)) s"
fi

work=$build_dir/fuzz-corpus/$name
artifacts=$build_dir/fuzz-artifacts/$name
mkdir -p "$work" "$artifacts"
log=$build_dir/fuzz-$name.log
iot::info "fuzz $name for ${seconds}s (log: $log)"
set +e
"$build_dir/bin/fuzz_$name" "$work" "fuzz/corpus/$name" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@" >"$log" 2>&1
rc=$?
set -e
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
units=$(find "$work" -type f | wc -l)
if ((rc != 0)); then
  tail -n 60 "$log" >&2
  iot::die "fuzz $name: FAILED (exit $rc) after ${runs:-?} executions; input in $artifacts/"
fi
echo "fuzz $name: ${runs:-?} executions in ${seconds} s (${rate:-?} exec/s), corpus $units inputs, no crash, no leak"
