#!/usr/bin/env bash
# End-to-end test of the README demo: the real local stack (scripts/stack.sh: PostgreSQL,
# Redis, Mosquitto with the iot_auth plugin, the five services) on free ports in a private
# state dir, scripts/demo.sh (demo tenant, smart-meter product, simulated devices, the Alink
# thermostat on Alibaba's Node SDK), then the README walkthrough's iotctl calls, each checked. A step whose iotctl command group is not
# built yet is reported as SKIPPED with the reason; every other step must pass.
#
# Usage: tests/integration/demo_test.sh BUILD_DIR    (ctest runs it as demo_integration_tests)
set -euo pipefail

BUILD_DIR=$(cd "${1:?usage: demo_test.sh BUILD_DIR}" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# Nothing from the caller's environment (a developer's stack, the test harness's infra) leaks in.
while IFS= read -r name; do
  unset "$name"
done < <(compgen -e | grep -E '^(IOT_|IOTCTL_)')

export IOT_BUILD_DIR=$BUILD_DIR
mkdir -p /tmp/iot-platform
chmod 755 /tmp/iot-platform
IOT_STATE_DIR=$(mktemp -d /tmp/iot-platform/demo-test.XXXXXX)
export IOT_STATE_DIR IOT_STACK_DURABLE=0 IOT_LOG_LEVEL=info
export IOT_DEMO_DEVICES=3 IOT_DEMO_REPORT_INTERVAL=1
# Free ports away from the defaults, so that a developer's stack (and scripts/test.sh's infra
# on 25432/26379/21883) may run beside the test; below the kernel's ephemeral range (32768+),
# where an outgoing connection could hold a port that looked free.
export IOT_STACK_PG_PORT IOT_STACK_REDIS_PORT IOT_STACK_MQTT_PORT
IOT_STACK_PG_PORT=$(iot::free_port 23432)
IOT_STACK_REDIS_PORT=$(iot::free_port 23379)
IOT_STACK_MQTT_PORT=$(iot::free_port 23883)
grpc=24051
metrics=24151
for prefix in DEVICE_GATEWAY THING_MODEL COMMAND_DISPATCH SHADOW RULE_FORWARDING; do
  grpc=$(iot::free_port "$grpc")
  metrics=$(iot::free_port "$metrics")
  export "IOT_${prefix}_GRPC_PORT=$grpc" "IOT_${prefix}_METRICS_PORT=$metrics"
  grpc=$((grpc + 1))
  metrics=$((metrics + 1))
done

passed=0
failed=0
skipped=()
cleanup() {
  local rc=$?
  trap - EXIT
  "$ROOT/scripts/stack.sh" stop >/dev/null 2>&1 || rc=1
  if ((rc == 0 && failed == 0)); then
    rm -rf "$IOT_STATE_DIR"
  else
    echo "demo test: state and logs kept in $IOT_STATE_DIR" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

step() { printf '\n--- %s\n' "$*"; }
ok() {
  passed=$((passed + 1))
  echo "ok: $*"
}
fail() {
  failed=$((failed + 1))
  echo "FAIL: $*"
}
skip() {
  skipped+=("$1")
  echo "SKIPPED: $1"
}

# True when iotctl has the command group $1 (e.g. `shadow`): listed under "Subcommands:".
have_group() {
  "$BUILD_DIR/bin/iotctl" --help | sed -n '/^Subcommands:/,/^$/p' | grep -q "^  $1 "
}

# wait_for SECONDS CMD...: polls CMD every 0.5 s.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

step "quickstart: the stack and the demo"
"$ROOT/scripts/stack.sh" start >"$IOT_STATE_DIR/stack-start.log" 2>&1 ||
  {
    tail -n 30 "$IOT_STATE_DIR/stack-start.log"
    exit 1
  }
"$ROOT/scripts/demo.sh" start
# As the README has the reader do it.
export PATH=$BUILD_DIR/bin:$PATH
eval "$("$ROOT/scripts/demo.sh" env)"
DEVICE=smartmeter01_meter-1
export DEVICE

step "iotctl device list: the demo devices and their status"
list=$(iotctl --json device list --product smartmeter01 --all)
online=$(jq '[.devices[] | select(.status == "ONLINE")] | length' <<<"$list")
if [[ "$online" == 3 ]]; then ok "3 demo devices ONLINE"; else fail "ONLINE devices: $online, expected 3: $list"; fi
if iotctl device list >/dev/null; then ok "the table form prints"; else fail "iotctl device list"; fi
# A bad input gets a clear usage error, not a crash.
if iotctl device list --status sleeping >/dev/null 2>&1; then
  fail "device list --status sleeping was accepted"
else
  ok "device list --status sleeping is refused"
fi

# expect_error PATTERN WHAT CMD...: CMD must fail with output matching PATTERN (a glob).
expect_error() {
  local pattern=$1 what=$2 out
  shift 2
  # shellcheck disable=SC2053  # PATTERN is a glob on purpose
  if out=$("$@" 2>&1); then
    fail "$what was accepted"
  elif [[ "$out" == $pattern ]]; then
    ok "$what refused: $out"
  else
    fail "$what: unexpected error: $out"
  fi
}

# ------------------------------------------------------------------------------ alink
step "the Alink thermostat: Alibaba's Node SDK beside the IoTDA meters"
ALINK_DEVICE=a1Thermo7Kx_thermostat-1
alink=$(iotctl --json device show "$ALINK_DEVICE" 2>&1) || true
if [[ "$(jq -r '.status // empty' <<<"$alink" 2>/dev/null)" == ONLINE ]]; then
  ok "$ALINK_DEVICE ONLINE"
else
  fail "$ALINK_DEVICE not ONLINE: $alink"
fi
if out=$("$ROOT/scripts/demo.sh" status 2>&1) && [[ "$out" == *"alink-device: running"* &&
  "$out" == *"$ALINK_DEVICE"* ]]; then
  ok "demo.sh status shows the Alink device and its process"
else
  fail "demo.sh status: $out"
fi
if have_group shadow; then
  alink_reported() {
    iotctl --addr "$IOT_SHADOW_ADDR" --json shadow show "$ALINK_DEVICE" |
      jq -r ".shadow[] | select(.service_id == \"default\") | .reported.properties_json | fromjson | .$1"
  }
  alink_has_temperature() { [[ "$(alink_reported CurrentTemperature 2>/dev/null)" =~ ^-?[0-9.]+$ ]]; }
  if wait_for 20 alink_has_temperature; then
    ok "the shadow holds the thermostat's post: CurrentTemperature $(alink_reported CurrentTemperature)"
  else
    fail "no CurrentTemperature in the thermostat's shadow: $(iotctl --addr "$IOT_SHADOW_ADDR" --json shadow show "$ALINK_DEVICE" 2>&1)"
  fi
else
  skip "Alink shadow step: iotctl has no 'shadow' group"
fi
if have_group command; then
  target=$((RANDOM % 20 + 10))
  if out=$(iotctl command set-properties "$ALINK_DEVICE" --service default \
    --set TargetTemperature="$target" 2>&1); then
    ok "property set TargetTemperature=$target answered by the SDK device: $(tr -s ' \n' ' ' <<<"$out")"
  else
    fail "set-properties on the Alink device: $out"
  fi
  if have_group shadow; then
    alink_applied() { [[ "$(alink_reported TargetTemperature 2>/dev/null)" == "$target" ]]; }
    if wait_for 20 alink_applied; then
      ok "the thermostat posted the new TargetTemperature"
    else
      fail "TargetTemperature not $target in the shadow: $(alink_reported TargetTemperature 2>&1)"
    fi
  fi
  if out=$(iotctl command send "$ALINK_DEVICE" --service default --name Calibrate \
    --paras '{"Offset":0.5}' 2>&1) && [[ "$out" == *Applied* ]]; then
    ok "sync service Calibrate (RRPC) answered: $(tr -s ' \n' ' ' <<<"$out")"
  else
    fail "Calibrate: no Applied in: $out"
  fi
  if out=$(iotctl command send "$ALINK_DEVICE" --service default --name Reboot \
    --paras '{"DelaySeconds":1}' 2>&1) && [[ "$out" == *Uptime* ]]; then
    ok "async service Reboot answered: $(tr -s ' \n' ' ' <<<"$out")"
  else
    fail "Reboot: no Uptime in: $out"
  fi
else
  skip "Alink command steps: iotctl has no 'command' group"
fi
if have_group history; then
  alink_history() {
    (($(iotctl --addr "$IOT_RULE_FORWARDING_ADDR" --json history --device "$ALINK_DEVICE" \
      --service default --property CurrentTemperature | jq '.values | length') > 0))
  }
  if wait_for 20 alink_history; then
    ok "the thermostat's CurrentTemperature is in the history"
  else
    fail "no CurrentTemperature history of $ALINK_DEVICE"
  fi
else
  skip "Alink history step: iotctl has no 'history' group"
fi

# ------------------------------------------------------------------------------ shadow
step "iotctl shadow: read it, set a desired property, see the device apply it"
if have_group shadow; then
  shadow_json() { iotctl --addr "$IOT_SHADOW_ADDR" --json shadow show "$DEVICE"; }
  # reported [DOC] NAME: a reported property of service meter.
  reported() { jq -r ".shadow[0].reported.properties_json | fromjson | .$1" <<<"${2:-$(shadow_json)}"; }
  has_voltage() { [[ "$(reported voltage)" =~ ^[0-9.]+$ ]]; }
  if wait_for 20 has_voltage; then
    ok "the shadow holds the device's reported voltage ($(reported voltage) V)"
  else
    fail "no reported voltage in the shadow: $(shadow_json)"
  fi
  # The opposite of what the device reports now, so that applying it is a visible change.
  want=ON
  [[ "$(reported relay_state)" == ON ]] && want=OFF
  interval=$(($(reported report_interval) % 3600 + 1))
  if iotctl --addr "$IOT_SHADOW_ADDR" shadow set-desired "$DEVICE" --service meter \
    -p relay_state="$want" -p report_interval="$interval" >/dev/null; then
    ok "desired relay_state=$want report_interval=$interval accepted"
  else
    fail "shadow set-desired"
  fi
  applied() {
    local doc
    doc=$(shadow_json) || return 1
    [[ "$(reported relay_state "$doc")" == "$want" &&
      "$(reported report_interval "$doc")" == "$interval" &&
      "$(jq -r '.shadow[0].delta_json' <<<"$doc")" == "{}" &&
      "$(jq -r '.last_property_set.result_code' <<<"$doc")" == 0 ]]
  }
  if wait_for 20 applied; then
    ok "the device applied the desired properties: reported = desired, delta empty"
  else
    fail "desired state not applied: $(shadow_json)"
  fi
  # The device keeps them: its next periodic report carries the same values and the delta stays
  # empty (the simulator used to draw every property afresh), and its identity does not change.
  first=$(shadow_json)
  event_time() { jq -r '.shadow[0].reported.event_time' <<<"$1"; }
  reported_again() { [[ "$(event_time "$(shadow_json)")" != "$(event_time "$first")" ]]; }
  if wait_for 20 reported_again; then
    later=$(shadow_json)
    if [[ "$(reported relay_state "$later")" == "$want" &&
      "$(reported report_interval "$later")" == "$interval" &&
      "$(jq -r '.shadow[0].delta_json' <<<"$later")" == "{}" ]]; then
      ok "the next report keeps them: delta still empty"
    else
      fail "the next report changed them: $(jq -c '.shadow[0] | {reported, delta_json}' <<<"$later")"
    fi
    if [[ "$(reported serial "$later")" == "$(reported serial "$first")" &&
      "$(reported firmware "$later")" == "$(reported firmware "$first")" ]]; then
      ok "serial and firmware stay the same between reports"
    else
      fail "identity changed: $(reported serial "$first") $(reported firmware "$first") -> $(reported serial "$later") $(reported firmware "$later")"
    fi
  else
    fail "no report after $(event_time "$first") within 20 s"
  fi
  set_desired=(iotctl --addr "$IOT_SHADOW_ADDR" shadow set-desired "$DEVICE" --service meter)
  expect_error '*INVALID_ARGUMENT*voltage*' "desired voltage (read-only)" "${set_desired[@]}" -p voltage=1
  expect_error '*INVALID_ARGUMENT*bogus*' "desired bogus (not in the model)" "${set_desired[@]}" -p bogus=1
  expect_error '*ABORTED*' "a stale --version" "${set_desired[@]}" -p relay_state=ON --version 1
else
  skip "shadow steps: iotctl has no 'shadow' group"
fi

# ------------------------------------------------------------------------------ commands
step "iotctl command: send a command, get the device's answer"
if have_group command; then
  # command-dispatch's address comes from IOTCTL_COMMANDS_ADDR (scripts/demo.sh env).
  send=(iotctl command send "$DEVICE" --service meter)
  if out=$("${send[@]}" --name reboot --paras '{"delay":5}' 2>&1) &&
    [[ "$out" == *'"response_name": "reboot_response"'* && "$out" == *'"result_code": 0'* ]]; then
    ok "reboot answered by the device: $(tr -s ' \n' ' ' <<<"$out")"
  else
    fail "command reboot: no reboot_response in: $out"
  fi
  expect_error '*INVALID_ARGUMENT*tariff*' "set_tariff tariff=weekend (not in its enum)" \
    "${send[@]}" --name set_tariff --paras '{"tariff":"weekend","price":1}'
  expect_error '*INVALID_ARGUMENT*' "an unknown command" "${send[@]}" --name self_destruct
else
  skip "command steps: iotctl has no 'command' group"
fi

# ------------------------------------------------------------------------------ rules + subscribe
step "iotctl group + rule + subscribe: matching reports arrive in a consumer group"
if have_group group && have_group rule && have_group subscribe; then
  rf=(iotctl --addr "$IOT_RULE_FORWARDING_ADDR")
  if "${rf[@]}" group create readings --description "demo: meter readings" >/dev/null; then
    ok "consumer group readings created"
  else
    fail "group create readings"
  fi
  rule_file=$ROOT/deploy/demo/meter-readings-rule.json
  if "${rf[@]}" rule create -f "$rule_file" >/dev/null; then ok "rule created"; else fail "rule create"; fi
  if out=$(timeout 30 "${rf[@]}" subscribe --group readings --count 3); then
    n=$(jq -s '[.[] | select(.device_id | startswith("smartmeter01_meter-")) |
      select(.payload_json | fromjson | .voltage != null)] | length' <<<"$out")
    if [[ "$n" == 3 ]]; then ok "3 readings arrived through the group"; else fail "subscribe output: $out"; fi
  else
    fail "subscribe --group readings --count 3 got no 3 messages in 30 s: $out"
  fi
  sed 's/properties.voltage AS voltage"/properties.voltage AS voltage WHERE voltage >"/' \
    "$rule_file" >"$IOT_STATE_DIR/bad-rule.json"
  expect_error '*INVALID_ARGUMENT*sql*' "a rule with broken SQL" \
    "${rf[@]}" rule create -f "$IOT_STATE_DIR/bad-rule.json"
else
  skip "rule/subscription steps: iotctl lacks one of the 'group', 'rule', 'subscribe' groups"
fi

# ------------------------------------------------------------------------------ history
step "iotctl history: the stored readings, raw and bucketed"
if have_group history; then
  hist=(iotctl --addr "$IOT_RULE_FORWARDING_ADDR" history --device "$DEVICE" --service meter
    --property voltage)
  has_history() { (($(iotctl --addr "$IOT_RULE_FORWARDING_ADDR" --json "${hist[@]:3}" |
    jq '.values | length') > 0)); }
  if wait_for 20 has_history; then
    ok "raw voltage history has values"
  else
    fail "no voltage history: $("${hist[@]}" 2>&1 | head -5)"
  fi
  if out=$("${hist[@]}" --bucket 1m 2>/dev/null) && [[ "$out" == *AVG* ]]; then
    ok "bucketed history prints count/min/max/avg"
  else
    fail "history --bucket 1m: $out"
  fi
  expect_error '*INVALID_ARGUMENT*bucket*' "history --bucket 7x" "${hist[@]}" --bucket 7x
else
  skip "history steps: iotctl has no 'history' group"
fi

step "demo.sh stop: the simulator and the Alink device stop"
"$ROOT/scripts/demo.sh" stop >/dev/null
if out=$("$ROOT/scripts/demo.sh" status 2>&1) && [[ "$out" == *"iot-device-sim: stopped"* &&
  "$out" == *"alink-device: stopped"* ]]; then
  ok "both device processes stopped"
else
  fail "demo.sh status after stop: $out"
fi

echo
if ((${#skipped[@]})); then
  echo "demo test: skipped, not built yet:"
  printf '  - %s\n' "${skipped[@]}"
fi
echo "demo test: $passed passed, $failed failed"
((failed == 0))
