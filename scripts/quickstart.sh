#!/usr/bin/env bash
# Runs the whole platform locally: installs deps, builds (preset dev), starts PostgreSQL, Redis,
# Mosquitto and the services (scripts/stack.sh start), then prints what runs where and how to
# stop it. Safe to run again: what already runs is left alone.
#
# Then the demo (scripts/demo.sh start): a demo tenant and API key, the smart-meter product with
# a few simulated devices reporting (Huawei IoTDA) and the thermostat product with one device on
# Alibaba's Node SDK (Alink); README.md walks through it with iotctl.
#
# Environment: IOT_SKIP_INSTALL=1, IOT_SKIP_BUILD=1, IOT_PRESET [dev], IOT_DEMO=0 (no demo),
# every variable of scripts/stack.sh (IOT_STATE_DIR, IOT_STACK_*_PORT, IOT_<SERVICE>_GRPC_PORT,
# ...) and of scripts/demo.sh (IOT_DEMO_DEVICES, IOT_DEMO_REPORT_INTERVAL, ...).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IOT_REPO_ROOT"

preset=${IOT_PRESET:-dev}
export IOT_STATE_DIR=${IOT_STATE_DIR:-/tmp/iot-platform/dev}

if [[ "${IOT_SKIP_INSTALL:-0}" != 1 ]]; then
  iot::section "dependencies"
  scripts/install-deps.sh
fi

if [[ "${IOT_SKIP_BUILD:-0}" != 1 ]]; then
  iot::section "build (preset $preset)"
  cmake --preset "$preset"
  cmake --build --preset "$preset"
fi

iot::section "start the stack"
scripts/stack.sh start

demo=0
if [[ "${IOT_DEMO:-1}" == 1 ]]; then
  iot::section "demo: tenant, smart-meter product, simulated devices"
  if scripts/demo.sh start; then
    demo=1
  else
    iot::warn "the demo did not start (retry: scripts/demo.sh start); the platform itself runs"
  fi
fi

iot::section "running"
scripts/stack.sh status || true
cat <<EOF

Infra URLs (for the services and your own tools; eval "\$(scripts/stack.sh env)"):
$(sed 's/^/  /' "$IOT_STATE_DIR/env")

Secrets of this stack (mode 600): $IOT_STATE_DIR/secrets. The bootstrap admin API key:
  export IOTCTL_API_KEY=\$(sed -n 's/^IOT_THING_MODEL_BOOTSTRAP_API_KEY=//p' $IOT_STATE_DIR/secrets)

  logs:    scripts/stack.sh logs [-f] [NAME]      (files in $IOT_STATE_DIR/logs)
  metrics: prometheus --config.file=deploy/prometheus/prometheus.yml   (then http://127.0.0.1:9090)
  status:  scripts/stack.sh status
  stop:    scripts/stack.sh stop
EOF
if ((demo)); then
  cat <<EOF

The demo runs: tenant ${IOT_DEMO_TENANT:-demo}, product smartmeter01, simulated devices
smartmeter01_meter-1..${IOT_DEMO_DEVICES:-3}, and the Alink thermostat a1Thermo7Kx_thermostat-1
on Alibaba's Node SDK (scripts/demo.sh status). Act as the demo tenant:
  export PATH=\$PWD/build/bin:\$PATH
  eval "\$(scripts/demo.sh env)"
  iotctl device list
then follow "The demo" in README.md.
EOF
fi
