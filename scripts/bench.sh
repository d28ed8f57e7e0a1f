#!/usr/bin/env bash
# Runs iot-bench (tools/iot-bench, docs/benchmarks.md) against the local stack: starts it with
# scripts/stack.sh in its own state dir unless it is running there already, plus a plain
# Mosquitto without the plugin for the raw connect figure, then runs the bench IOT_BENCH_RUNS
# times and prints the medians of the headline figures.
#
# Usage: scripts/bench.sh [IOT-BENCH ARGS...]     e.g. scripts/bench.sh --scenario ingest
#        scripts/bench.sh --scenario ingest --dialect both   (IoTDA, then Alink devices; ratios)
#        scripts/bench.sh --scenario faults [--faults device-gateway:kill,redis:term]
#
# The faults scenario kills and restarts parts of the stack (iot-bench restarts them with
# `scripts/stack.sh start`), so it runs the stack as shipped: its own state dir
# (/tmp/iot-platform/faults), fsync and Redis AOF on (IOT_STACK_DURABLE=1), and no raw broker.
#
# Environment (defaults in brackets):
#   IOT_STATE_DIR       the stack's state dir [/tmp/iot-platform/bench; faults:
#                       /tmp/iot-platform/faults]; point it at a running stack's (e.g.
#                       /tmp/iot-platform/dev) to measure that one
#   IOT_BUILD_DIR       where bin/ is [<repo>/build]
#   IOT_BENCH_RUNS      runs (medians are printed when > 1) [1]
#   IOT_BENCH_OUT       directory of the JSON reports [$IOT_STATE_DIR/bench]
#   IOT_BENCH_STOP=1    stop the stack afterwards if this script started it [0]
# The stack's services are started on free ports from 51051 (gRPC) / 9201 (metrics) unless
# IOT_<SERVICE>_GRPC_PORT / _METRICS_PORT say otherwise, so that a dev stack on the default
# ports is left alone.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IOT_REPO_ROOT"

faults=0
for ((i = 1; i <= $#; i++)); do
  arg=${!i}
  next=$((i + 1))
  if [[ "$arg" == --scenario=faults || ("$arg" == --scenario && "${!next:-}" == faults) ]]; then
    faults=1
  fi
done
if ((faults)); then
  export IOT_STATE_DIR=${IOT_STATE_DIR:-/tmp/iot-platform/faults}
  export IOT_STACK_DURABLE=${IOT_STACK_DURABLE:-1}
else
  export IOT_STATE_DIR=${IOT_STATE_DIR:-/tmp/iot-platform/bench}
fi
BUILD_DIR=${IOT_BUILD_DIR:-$IOT_REPO_ROOT/build}
RUNS=${IOT_BENCH_RUNS:-1}
OUT=${IOT_BENCH_OUT:-$IOT_STATE_DIR/bench}
BENCH=$BUILD_DIR/bin/iot-bench
[[ -x "$BENCH" ]] || iot::die "$BENCH is not built (cmake --build build --target iot-bench)"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || iot::die "IOT_BENCH_RUNS=$RUNS is not a positive number"
mkdir -p "$OUT"

# name env-prefix, in scripts/stack.sh's order.
SERVICES=("thing-model THING_MODEL" "shadow SHADOW" "command-dispatch COMMAND_DISPATCH"
  "rule-forwarding RULE_FORWARDING" "device-gateway DEVICE_GATEWAY")

# The raw broker: the same Mosquitto without the plugin (anonymous), queue limits as deployed.
start_raw_broker() {
  local raw_dir=$IOT_STATE_DIR/raw-mosquitto
  mkdir -p "$raw_dir"
  raw_port=$(iot::free_port 22883)
  cat >"$raw_dir/mosquitto.conf" <<CONF
listener $raw_port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
set_tcp_nodelay true
log_dest stderr
$(iot::is_root && echo "user root")
CONF
  iot::spawn "$raw_dir/mosquitto.pid" "$raw_dir/mosquitto.log" mosquitto -c "$raw_dir/mosquitto.conf"
  raw_pid=$(cat "$raw_dir/mosquitto.pid")
  iot::wait_until 10 "the raw mosquitto on port $raw_port" iot::port_open "$raw_port" ||
    iot::die "the raw mosquitto did not start; see $raw_dir/mosquitto.log"
}

started_stack=0
raw_pid=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  [[ -n "$raw_pid" ]] && iot::terminate "$raw_pid" "raw mosquitto" 10
  if [[ "$started_stack" == 1 && "${IOT_BENCH_STOP:-0}" == 1 ]]; then
    scripts/stack.sh stop || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM HUP

# stack.sh start is idempotent: it starts only what is not running in this state dir.
iot::pid_from "$IOT_STATE_DIR/run/mosquitto.pid" mosquitto >/dev/null || started_stack=1
iot::section "start the stack in $IOT_STATE_DIR (what is not running)"
export IOT_STACK_DURABLE=${IOT_STACK_DURABLE:-0}
grpc=51051
metrics=9201
for entry in "${SERVICES[@]}"; do
  read -r name prefix <<<"$entry"
  # A service still running from an earlier start keeps its recorded ports.
  recorded=$(cat "$IOT_STATE_DIR/run/$name.port" 2>/dev/null || true)
  grpc_var="IOT_${prefix}_GRPC_PORT" metrics_var="IOT_${prefix}_METRICS_PORT"
  if [[ -z "${!grpc_var:-}" ]]; then
    if [[ -n "$recorded" ]]; then
      export "$grpc_var=${recorded%% *}" "$metrics_var=${recorded##* }"
    else
      grpc=$(iot::free_port "$grpc") metrics=$(iot::free_port "$metrics")
      export "$grpc_var=$grpc" "$metrics_var=$metrics"
    fi
  fi
  grpc=$((grpc + 1)) metrics=$((metrics + 1))
done
scripts/stack.sh start

# The stack's addresses and secrets (bootstrap admin key, the gateway's broker account).
# shellcheck source=/dev/null
source "$IOT_STATE_DIR/env"
# shellcheck source=/dev/null
source "$IOT_STATE_DIR/secrets"
for entry in "${SERVICES[@]}"; do
  read -r name prefix <<<"$entry"
  ports=$(cat "$IOT_STATE_DIR/run/$name.port" 2>/dev/null || true)
  [[ -n "$ports" ]] && export "IOT_${prefix}_ADDR=127.0.0.1:${ports%% *}"
done
export IOTCTL_API_KEY=${IOTCTL_API_KEY:-$IOT_THING_MODEL_BOOTSTRAP_API_KEY}
export IOT_BENCH_MQTT_USERNAME=${IOT_BENCH_MQTT_USERNAME:-$IOT_DEVICE_GATEWAY_MQTT_USERNAME}
export IOT_BENCH_MQTT_PASSWORD=${IOT_BENCH_MQTT_PASSWORD:-$IOT_DEVICE_GATEWAY_MQTT_PASSWORD}

if ((faults)); then
  # What the bench restarts a component with, and where it reads the broker's autosave.
  export IOT_BENCH_RESTART_COMMAND="$IOT_REPO_ROOT/scripts/stack.sh start"
  export IOT_BENCH_MOSQUITTO_CONF=$IOT_STATE_DIR/mosquitto/mosquitto.conf
  gateway_ports=$(cat "$IOT_STATE_DIR/run/device-gateway.port" 2>/dev/null || true)
  [[ -n "$gateway_ports" ]] && export IOT_BENCH_GATEWAY_METRICS=127.0.0.1:${gateway_ports##* }
  raw_args=()
else
  # The raw broker: the same Mosquitto without the plugin (anonymous), queue limits as deployed.
  start_raw_broker
  raw_args=(--raw-mqtt-url "mqtt://127.0.0.1:$raw_port")
fi

# Redis and PostgreSQL are watched too (the services' time may go there).
watch=()
for infra in redis postgres; do
  if pid=$(iot::pid_from "$IOT_STATE_DIR/run/$infra.pid"); then
    watch+=(--pid "$infra=$pid")
  fi
done

reports=()
for ((run = 1; run <= RUNS; run++)); do
  iot::section "iot-bench run $run of $RUNS"
  report=$OUT/bench-$(date -u +%Y%m%dT%H%M%SZ)-$run.json
  rc=0
  "$BENCH" --mqtt-url "$IOT_MQTT_URL" "${raw_args[@]}" --json "$report" "${watch[@]}" "$@" ||
    rc=$?
  [[ "$rc" -le 1 ]] || exit "$rc"
  [[ "$rc" == 0 ]] || iot::warn "run $run reported loss or a failed scenario (see $report)"
  reports+=("$report")
done

if ((RUNS > 1)) && command -v python3 >/dev/null; then
  iot::section "medians of $RUNS runs"
  python3 - "${reports[@]}" <<'PY'
import json, statistics, sys
figures = [
    ("connections/s (plugin)", "connections.platform.connects_per_s"),
    ("connections/s (raw)", "connections.raw.connects_per_s"),
    ("connect ratio", "connections.ratio_connects_platform_to_raw"),
    ("ingest raw msgs/s", "ingest.raw.msgs_per_s"),
    ("ingest platform msgs/s (subscription)", "ingest.platform.subscription.msgs_per_s"),
    ("ingest ratio platform/raw", "ingest.ratio_platform_to_raw"),
    ("ingest subscription p50 ms", "ingest.platform.subscription.latency.p50_ms"),
    ("ingest history rows/s", "ingest.platform.history.rows_per_s"),
    ("ingest history latency p50 ms (sampled)", "ingest.platform.sampled_latency.history.p50_ms"),
    ("ingest shadow latency p50 ms (sampled)", "ingest.platform.sampled_latency.shadow.p50_ms"),
    ("ingest lost", "ingest.platform.lost"),
    ("commands raw p50 ms", "commands.raw.latency.p50_ms"),
    ("commands platform p50 ms", "commands.platform.latency.p50_ms"),
    ("commands platform p99 ms", "commands.platform.latency.p99_ms"),
    ("commands platform/s", "commands.platform.per_s"),
    ("commands p50 ratio", "commands.ratio_p50_platform_to_raw"),
    # --dialect alink|both: the Alink devices' figures, and alink/iotda of one run (both).
    ("alink connections/s (plugin)", "connections_alink.platform.connects_per_s"),
    ("alink ingest raw msgs/s", "ingest_alink.raw.msgs_per_s"),
    ("alink ingest platform msgs/s (subscription)", "ingest_alink.platform.subscription.msgs_per_s"),
    ("alink ingest history rows/s", "ingest_alink.platform.history.rows_per_s"),
    ("alink ingest subscription p50 ms", "ingest_alink.platform.subscription.latency.p50_ms"),
    ("alink ingest lost", "ingest_alink.platform.lost"),
    ("alink/iotda connects/s", "alink_vs_iotda.connections.connects_per_s.ratio_alink_to_iotda"),
    ("alink/iotda connect p50", "alink_vs_iotda.connections.connect_latency_p50_ms.ratio_alink_to_iotda"),
    ("alink/iotda ingest raw msgs/s", "alink_vs_iotda.ingest.raw_msgs_per_s.ratio_alink_to_iotda"),
    ("alink/iotda ingest subscription msgs/s", "alink_vs_iotda.ingest.subscription_msgs_per_s.ratio_alink_to_iotda"),
    ("alink/iotda ingest history rows/s", "alink_vs_iotda.ingest.history_rows_per_s.ratio_alink_to_iotda"),
    ("alink/iotda ingest subscription p50", "alink_vs_iotda.ingest.subscription_latency_p50_ms.ratio_alink_to_iotda"),
    ("alink/iotda gateway CPU %", "alink_vs_iotda.ingest.gateway_cpu_percent.ratio_alink_to_iotda"),
]
reports = [json.load(open(path))["scenarios"] for path in sys.argv[1:]]
for label, path in figures:
    values = []
    for report in reports:
        node = report
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            values.append(node)
    if values:
        print(f"{label:44s} {statistics.median(values):>12g}   (runs: {', '.join(f'{v:g}' for v in values)})")
# faults: per fault, the medians of its phase's figures over the runs.
phases = {}
for report in reports:
    for phase in report.get("faults", {}).get("phases", []):
        phases.setdefault(phase["fault"], []).append(phase)
for fault, runs in phases.items():
    cells = []
    for key in ("acked", "lost", "duplicates", "flow_back_s", "caught_up_s", "restart_s"):
        values = [run[key] for run in runs if isinstance(run.get(key), (int, float))]
        cells.append(f"{key} {statistics.median(values):g}" if values else f"{key} -")
    lost = ", ".join(str(run.get("lost", "-")) for run in runs)
    print(f"faults {fault:24s} {'  '.join(cells)}   (lost in the runs: {lost})")
PY
fi
iot::info "reports: ${reports[*]}"
