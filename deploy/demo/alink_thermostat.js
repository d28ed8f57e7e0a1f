// The demo's Alibaba Alink device (scripts/demo.sh): a thermostat of the product made from
// tests/data/alink/thermostat_tsl.json, run by Alibaba's own Node device SDK
// (alibabacloud-iot-device-sdk, unmodified; installed in tests/alink/node_modules by
// scripts/install-deps.sh) with only the broker's host and port changed. It stays connected,
// posts its properties every few seconds, applies property sets (answering set_reply and posting
// the new values at once), answers property gets and the services Calibrate (sync, over RRPC)
// and Reboot (async).
//
// Environment: IOT_ALINK_HOST, IOT_ALINK_PORT, IOT_ALINK_PK, IOT_ALINK_DN, IOT_ALINK_SECRET_FILE
// (the deviceSecret; or IOT_ALINK_SECRET itself); IOT_ALINK_REPORT_INTERVAL seconds between property posts [5]. Run with
// NODE_PATH=tests/alink/node_modules. One log line per event on stdout.
'use strict';

const fs = require('fs');
const iot = require('alibabacloud-iot-device-sdk');

const env = process.env;
const pk = env.IOT_ALINK_PK;
const dn = env.IOT_ALINK_DN;
const intervalMs = 1000 * Math.max(1, Number(env.IOT_ALINK_REPORT_INTERVAL || 5));
const started = Date.now();

function log(message) {
  process.stdout.write(`${new Date().toISOString()} ${dn}: ${message}\n`);
}

// The thermostat's writable and measured state (TSL identifiers; bool and enum as integers).
const state = {
  CurrentTemperature: 21.0,
  TargetTemperature: 22.0,
  PowerSwitch: 1,
  WorkMode: 0,
  FanSpeed: 2,
  Label: 'living room',
  'airQuality:PM25': 12,
  'airQuality:CO2': 450,
};
let calibration = 0;

// Moves the room's temperature towards the target while the power is on; the air drifts.
function step() {
  const target = state.PowerSwitch ? state.TargetTemperature : 16;
  const t = state.CurrentTemperature + (target - state.CurrentTemperature) * 0.2;
  state.CurrentTemperature = Math.round((t + calibration) * 10) / 10 - calibration;
  state.CurrentTemperature = Math.min(120, Math.max(-40, state.CurrentTemperature));
  state['airQuality:PM25'] = Math.max(0, Math.round(12 + 4 * Math.sin(Date.now() / 60000)));
  state['airQuality:CO2'] = Math.max(0, Math.round(450 + 60 * Math.sin(Date.now() / 90000)));
}

function reported() {
  const out = { ...state };
  out.CurrentTemperature = Math.round((state.CurrentTemperature + calibration) * 10) / 10;
  return out;
}

const device = iot.device({
  productKey: pk,
  deviceName: dn,
  deviceSecret: env.IOT_ALINK_SECRET || fs.readFileSync(env.IOT_ALINK_SECRET_FILE, 'utf8').trim(),
  brokerUrl: `mqtt://${env.IOT_ALINK_HOST}:${env.IOT_ALINK_PORT}/`,
});

function post() {
  const params = reported();
  device.postProps(params, (res) => {
    if (res && res.code !== 200) log(`property post refused: ${JSON.stringify(res)}`);
  });
}

device.on('connect', () => {
  log(`connected as ${device.mqttClient.options.clientId}`);
  post();
});
device.on('error', (args) => log(`error: ${String(args && args[0])}`));
device.on('close', () => log('connection closed (the SDK reconnects)'));

// Property set: apply what is writable, answer on set_reply, post the new state at once.
device.onProps((res) => {
  const applied = {};
  for (const [name, value] of Object.entries(res.params || {})) {
    if (name in state && name !== 'CurrentTemperature' && !name.startsWith('airQuality:')) {
      state[name] = value;
      applied[name] = value;
    }
  }
  log(`property set ${JSON.stringify(applied)}`);
  device.publish(`/sys/${pk}/${dn}/thing/service/property/set_reply`,
    JSON.stringify({ id: res.id, code: 200, data: {}, version: '1.0' }));
  post();
});

// Property get: the SDK has no call for it; answer on get_reply with the values asked for.
device.on('message', (topic, payload) => {
  if (topic !== `/sys/${pk}/${dn}/thing/service/property/get`) return;
  let request;
  try {
    request = JSON.parse(payload.toString('utf8'));
  } catch (e) {
    return;
  }
  const values = reported();
  const data = {};
  for (const name of Array.isArray(request.params) ? request.params : Object.keys(values)) {
    if (name in values) data[name] = values[name];
  }
  log(`property get ${JSON.stringify(request.params)}`);
  device.publish(`/sys/${pk}/${dn}/thing/service/property/get_reply`,
    JSON.stringify({ id: request.id, code: 200, data, version: '1.0' }));
});

// Calibrate (sync, RRPC): a temperature offset; answers Applied.
device.onService('Calibrate', (res, reply) => {
  const offset = Number((res.params || {}).Offset || 0);
  calibration = Math.max(-5, Math.min(5, offset));
  log(`service Calibrate offset ${calibration}`);
  reply({ id: res.id, code: 200, data: { Applied: 1 } }, 'sync');
  post();
});

// Reboot (async): answers the uptime before the (pretended) reboot.
device.onService('Reboot', (res, reply) => {
  const uptime = Math.floor((Date.now() - started) / 1000);
  log(`service Reboot ${JSON.stringify(res.params || {})}, uptime ${uptime} s`);
  reply({ id: res.id, code: 200, data: { Uptime: uptime } }, 'async');
});

setInterval(() => {
  step();
  if (device.mqttClient.connected) post();
}, intervalMs);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log(`${signal}: disconnecting`);
    device.end(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
