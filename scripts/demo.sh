#!/usr/bin/env bash
# The demo on the running local stack (scripts/stack.sh start), both device dialects: a demo
# tenant with an admin API key; the Huawei IoTDA smart-meter product
# (tests/integration/testdata/smart_meter_product.json: readable meter values, writable
# relay_state/report_interval, commands reboot/set_tariff) with a few simulated devices
# (iot-device-sim); and the Alibaba Alink thermostat product made from a TSL
# (tests/data/alink/thermostat_tsl.json, productKey a1Thermo7Kx) with one device run by
# Alibaba's own Node device SDK (deploy/demo/alink_thermostat.js; the SDK from
# tests/alink/node_modules, installed by scripts/install-deps.sh). All stay connected, report
# every few seconds, apply property sets and answer commands (the thermostat: property get and
# the services Calibrate, sync, and Reboot, async). Idempotent: what exists is kept; the devices'
# processes restart.
#
# Usage: scripts/demo.sh COMMAND
#   start    tenant, key, products, devices; waits until every demo device is ONLINE
#   stop     stops the simulated devices and the Alink device (scripts/stack.sh stop does too)
#   status   the devices' processes and the demo devices with their status
#   env      prints the export lines for iotctl as the demo tenant (eval "$(scripts/demo.sh env)"):
#            IOTCTL_API_KEY_FILE, IOTCTL_ADDR (thing-model), IOTCTL_COMMANDS_ADDR (command-dispatch)
#            and IOT_SHADOW_ADDR, IOT_COMMAND_DISPATCH_ADDR, IOT_RULE_FORWARDING_ADDR (`--addr`)
#
# Environment (defaults in brackets):
#   IOT_STATE_DIR              the stack's state dir [/tmp/iot-platform/dev]; the demo keeps
#                              its key and devices in $IOT_STATE_DIR/demo (mode 700)
#   IOT_DEMO_TENANT            tenant id [demo]
#   IOT_DEMO_DEVICES           simulated devices [3] (smartmeter01_meter-1..N)
#   IOT_DEMO_REPORT_INTERVAL   seconds between property reports [5]
#   IOT_DEMO_PRODUCT_FILE      product JSON (its product_id is used)
#                              [tests/integration/testdata/smart_meter_product.json]
#   IOT_DEMO_ALINK             1: the Alink thermostat too (needs node and the SDK); 0: not [1]
#   IOT_DEMO_ALINK_TSL         the Alink product's TSL (its profile.productKey is used)
#                              [tests/data/alink/thermostat_tsl.json]
#   IOT_DEMO_ALINK_DEVICE      the Alink device's deviceName [thermostat-1]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE_DIR=${IOT_STATE_DIR:-/tmp/iot-platform/dev}
BUILD_DIR=${IOT_BUILD_DIR:-$IOT_REPO_ROOT/build}
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/logs
DEMO_DIR=$STATE_DIR/demo
TENANT=${IOT_DEMO_TENANT:-demo}
DEVICES=${IOT_DEMO_DEVICES:-3}
REPORT_INTERVAL=${IOT_DEMO_REPORT_INTERVAL:-5}
PRODUCT_FILE=${IOT_DEMO_PRODUCT_FILE:-$IOT_REPO_ROOT/tests/integration/testdata/smart_meter_product.json}
PRODUCT_ID=$(jq -r '.product_id // empty' "$PRODUCT_FILE" 2>/dev/null) || true
[[ -n "$PRODUCT_ID" ]] || iot::die "$PRODUCT_FILE: no product_id (a Huawei product-model JSON)"
NODE_PREFIX=meter-
KEY_FILE=$DEMO_DIR/api-key
SIM_PID=$RUN_DIR/device-sim.pid
SIM_LOG=$LOG_DIR/device-sim.log
IOTCTL=$BUILD_DIR/bin/iotctl
ALINK=${IOT_DEMO_ALINK:-1}
ALINK_TSL=${IOT_DEMO_ALINK_TSL:-$IOT_REPO_ROOT/tests/data/alink/thermostat_tsl.json}
ALINK_DN=${IOT_DEMO_ALINK_DEVICE:-thermostat-1}
ALINK_SCRIPT=$IOT_REPO_ROOT/deploy/demo/alink_thermostat.js
ALINK_SDK=$IOT_REPO_ROOT/tests/alink/node_modules
ALINK_PID=$RUN_DIR/alink-device.pid
ALINK_LOG=$LOG_DIR/alink-device.log
ALINK_SECRET_FILE=$DEMO_DIR/alink-device-secret

usage() { iot::usage "${BASH_SOURCE[0]}"; }

# service_addr NAME: 127.0.0.1:<gRPC port> the local stack started NAME on.
service_addr() {
  local ports
  ports=$(cat "$RUN_DIR/$1.port" 2>/dev/null) ||
    iot::die "$1 is not running in $STATE_DIR (scripts/stack.sh start)"
  echo "127.0.0.1:${ports%% *}"
}

thing_model_addr() { service_addr thing-model; }

sim_pid() { iot::pid_from "$SIM_PID" "$BUILD_DIR/bin/iot-device-sim"; }
alink_pid() { iot::pid_from "$ALINK_PID" "$ALINK_SCRIPT"; }
alink_pk() { jq -r '.profile.productKey // empty' "$ALINK_TSL"; }

# iotctl as the demo tenant's admin.
demo_iotctl() { "$IOTCTL" --addr "$(thing_model_addr)" --api-key-file "$KEY_FILE" "$@"; }

# online_devices [PRODUCT]: how many of the product's devices are ONLINE.
online_devices() {
  demo_iotctl --json device list --product "${1:-$PRODUCT_ID}" --status online --all |
    jq '[.devices[]?] | length'
}

# The Alink thermostat: its product from the TSL, the device with a secret kept in the demo dir,
# and Alibaba's Node SDK running deploy/demo/alink_thermostat.js.
start_alink() {
  local pk
  pk=$(alink_pk) || true
  [[ -n "$pk" ]] || iot::die "$ALINK_TSL: no profile.productKey (an Alibaba TSL)"
  command -v node >/dev/null || iot::die "node not found: the Alink demo device needs Node.js 20 (IOT_DEMO_ALINK=0 skips it)"
  [[ -d "$ALINK_SDK/alibabacloud-iot-device-sdk" ]] ||
    iot::die "Alibaba's Node SDK is not installed in $ALINK_SDK (scripts/install-deps.sh; IOT_DEMO_ALINK=0 skips it)"
  if demo_iotctl product show "$pk" >/dev/null 2>&1; then
    iot::info "demo: Alink product $pk exists"
  else
    iot::info "demo: Alink product $pk from the TSL $ALINK_TSL"
    demo_iotctl product create --file "$ALINK_TSL" >/dev/null
  fi
  if [[ ! -s "$ALINK_SECRET_FILE" ]] || ! demo_iotctl device show "${pk}_$ALINK_DN" >/dev/null 2>&1; then
    iot::info "demo: Alink device ${pk}_$ALINK_DN (deviceName $ALINK_DN)"
    demo_iotctl device delete "${pk}_$ALINK_DN" >/dev/null 2>&1 || true
    demo_iotctl device add --product "$pk" --node "$ALINK_DN" --name "demo thermostat" \
      --save-secret "$ALINK_SECRET_FILE" >/dev/null
  fi
  stop_alink
  iot::info "demo: Alink device $ALINK_DN on Alibaba's Node SDK, a property post every ${REPORT_INTERVAL}s (log $ALINK_LOG)"
  iot::spawn "$ALINK_PID" "$ALINK_LOG" env NODE_PATH="$ALINK_SDK" IOT_ALINK_HOST=127.0.0.1 \
    IOT_ALINK_PORT="$(cat "$RUN_DIR/mosquitto.port")" IOT_ALINK_PK="$pk" IOT_ALINK_DN="$ALINK_DN" \
    IOT_ALINK_SECRET_FILE="$ALINK_SECRET_FILE" IOT_ALINK_REPORT_INTERVAL="$REPORT_INTERVAL" \
    node "$ALINK_SCRIPT"
}

stop_alink() {
  local pid
  if pid=$(alink_pid); then
    iot::info "demo: stopping the Alink device (pid $pid)"
    iot::terminate "$pid" alink-device 15 TERM
  fi
  rm -f "$ALINK_PID"
}

start() {
  [[ -x "$IOTCTL" && -x "$BUILD_DIR/bin/iot-device-sim" ]] ||
    iot::die "iotctl / iot-device-sim not built in $BUILD_DIR/bin"
  [[ -f "$STATE_DIR/secrets" && -f "$RUN_DIR/mosquitto.port" ]] ||
    iot::die "the local stack is not running in $STATE_DIR (scripts/stack.sh start)"
  [[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || iot::die "IOT_DEMO_DEVICES=$DEVICES is not a positive number"
  local addr
  addr=$(thing_model_addr)
  (umask 077 && mkdir -p "$DEMO_DIR")

  if [[ ! -s "$KEY_FILE" ]]; then
    iot::info "demo: tenant $TENANT with an admin key ($KEY_FILE)"
    local bootstrap
    bootstrap=$(sed -n 's/^IOT_THING_MODEL_BOOTSTRAP_API_KEY=//p' "$STATE_DIR/secrets")
    local out
    out=$(IOTCTL_API_KEY=$bootstrap "$IOTCTL" --addr "$addr" tenant create --tenant-id "$TENANT" \
      --name "Demo" --with-admin-key --save-secret "$KEY_FILE.tmp" 2>&1) ||
      iot::die "creating tenant $TENANT failed: $out"
    mv "$KEY_FILE.tmp" "$KEY_FILE"
  fi

  if demo_iotctl product show "$PRODUCT_ID" >/dev/null 2>&1; then
    iot::info "demo: product $PRODUCT_ID exists"
  else
    iot::info "demo: product $PRODUCT_ID from $PRODUCT_FILE"
    demo_iotctl product create --file "$PRODUCT_FILE" >/dev/null
  fi

  stop_sim
  iot::info "demo: $DEVICES simulated devices ${PRODUCT_ID}_${NODE_PREFIX}1..$DEVICES, a report every ${REPORT_INTERVAL}s (log $SIM_LOG)"
  local mqtt_port
  mqtt_port=$(cat "$RUN_DIR/mosquitto.port")
  iot::spawn "$SIM_PID" "$SIM_LOG" \
    "$BUILD_DIR/bin/iot-device-sim" --create "$DEVICES" --product "$PRODUCT_ID" \
    --api-key-file "$KEY_FILE" \
    --node-prefix "$NODE_PREFIX" --thing-model-addr "$addr" --mqtt-port "$mqtt_port" \
    --report-interval "$REPORT_INTERVAL" --save-devices "$DEMO_DIR/devices.json"
  local deadline=$((SECONDS + 60)) online=0
  while ((SECONDS < deadline)); do
    sim_pid >/dev/null || {
      tail -n 20 "$SIM_LOG" >&2
      iot::die "iot-device-sim exited; log: $SIM_LOG"
    }
    online=$(online_devices 2>/dev/null || echo 0)
    ((online >= DEVICES)) && break
    sleep 0.5
  done
  ((online >= DEVICES)) || iot::die "only $online of $DEVICES demo devices ONLINE after 60 s; log: $SIM_LOG"
  iot::info "demo: $online devices ONLINE"
  [[ "$ALINK" == 1 ]] || return 0
  start_alink
  local pk
  pk=$(alink_pk)
  deadline=$((SECONDS + 60)) online=0
  while ((SECONDS < deadline)); do
    alink_pid >/dev/null || {
      tail -n 20 "$ALINK_LOG" >&2
      iot::die "the Alink device exited; log: $ALINK_LOG"
    }
    online=$(online_devices "$pk" 2>/dev/null || echo 0)
    ((online >= 1)) && break
    sleep 0.5
  done
  ((online >= 1)) || iot::die "the Alink device ${pk}_$ALINK_DN is not ONLINE after 60 s; log: $ALINK_LOG"
  iot::info "demo: Alink device ${pk}_$ALINK_DN ONLINE"
}

stop_sim() {
  local pid
  if pid=$(sim_pid); then
    iot::info "demo: stopping iot-device-sim (pid $pid)"
    iot::terminate "$pid" iot-device-sim 15 TERM
  fi
  rm -f "$SIM_PID"
}

status() {
  local pid
  if pid=$(sim_pid); then
    echo "iot-device-sim: running (pid $pid), log $SIM_LOG"
  else
    echo "iot-device-sim: stopped"
  fi
  if pid=$(alink_pid); then
    echo "alink-device: running (pid $pid), log $ALINK_LOG"
  else
    echo "alink-device: stopped"
  fi
  [[ -s "$KEY_FILE" ]] || iot::die "no demo tenant yet (scripts/demo.sh start)"
  demo_iotctl device list --product "$PRODUCT_ID" --all
  local pk
  pk=$(alink_pk) || true
  if [[ -n "$pk" ]] && demo_iotctl product show "$pk" >/dev/null 2>&1; then
    demo_iotctl device list --product "$pk" --all
  fi
}

cmd=${1:-}
case "$cmd" in
  start) start ;;
  stop)
    stop_sim
    stop_alink
    ;;
  status) status ;;
  env)
    [[ -s "$KEY_FILE" ]] || iot::die "no demo tenant yet (scripts/demo.sh start)"
    echo "unset IOTCTL_API_KEY"
    echo "export IOTCTL_API_KEY_FILE=$KEY_FILE"
    echo "export IOTCTL_ADDR=$(thing_model_addr)"
    # iotctl talks to one service per call (--addr): the others' addresses for the README.
    for name in shadow command-dispatch rule-forwarding; do
      var=IOT_$(tr 'a-z-' 'A-Z_' <<<"$name")_ADDR
      echo "export $var=$(service_addr "$name")"
    done
    # iotctl's command group reads its own address variable.
    echo "export IOTCTL_COMMANDS_ADDR=$(service_addr command-dispatch)"
    ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
