// An Alink device for tests/integration/alink_sdk_test.cpp (issue #17).
//
// IOT_ALINK_MODE=sdk (default): Alibaba's own Node device SDK (alibabacloud-iot-device-sdk,
// unmodified) with only the broker's host and port changed. IOT_ALINK_MODE=linksdk4: a plain MQTT
// client connecting and talking as Alibaba's C LinkSDK 4.x does (upper-case HMAC-SHA256 over
// the fixed timestamp 2524608000000, clean session, never subscribes, no `method` in uplinks).
//
// Environment: IOT_ALINK_HOST, IOT_ALINK_PORT, IOT_ALINK_PK, IOT_ALINK_DN, IOT_ALINK_SECRET;
// IOT_ALINK_CLIENT_ID overrides the client id (linksdk4: for malformed ones); IOT_ALINK_COMMANDS
// a named pipe the test writes one JSON command a line to. Every event goes to stdout as one JSON
// line starting with {"event": connect, error, close, message (anything the device receives),
// reply (an SDK callback), service, props, shadow.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const readline = require('readline');
const mqtt = require('mqtt');
const iot = require('alibabacloud-iot-device-sdk');

const env = process.env;
const pk = env.IOT_ALINK_PK;
const dn = env.IOT_ALINK_DN;
const secret = env.IOT_ALINK_SECRET;
const mode = env.IOT_ALINK_MODE || 'sdk';

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function text(payload) {
  return Buffer.isBuffer(payload) ? payload.toString('utf8') : String(payload);
}

let client; // the MQTT client (the SDK's own in sdk mode)
let device; // the SDK device (sdk mode)

if (mode === 'sdk') {
  device = iot.device({
    productKey: pk,
    deviceName: dn,
    deviceSecret: secret,
    brokerUrl: `mqtt://${env.IOT_ALINK_HOST}:${env.IOT_ALINK_PORT}/`,
    ...(env.IOT_ALINK_CLIENT_ID ? { clientId: env.IOT_ALINK_CLIENT_ID } : {}),
  });
  client = device.mqttClient;
  client.options.reconnectPeriod = 0; // one attempt: a refused connect is reported, not retried
  device.on('connect', () => emit({ event: 'connect', client_id: client.options.clientId }));
  device.on('error', (args) => emit({ event: 'error', message: String(args && args[0]) }));
  device.on('close', () => emit({ event: 'close' }));
  device.on('message', (topic, payload) =>
    emit({ event: 'message', topic, payload: text(payload) }));
  device.onShadow((res) => emit({ event: 'shadow', res }));
} else {
  const timestamp = '2524608000000';
  const cid = `${pk}.${dn}`;
  const clientId = env.IOT_ALINK_CLIENT_ID ||
    `${cid}|timestamp=${timestamp},_ss=1,_v=sdk-c-4.1.0,securemode=3,signmethod=hmacsha256,` +
    'ext=3,_conn=tcp_0a1b2c3d|';
  const content = `clientId${cid}deviceName${dn}productKey${pk}timestamp${timestamp}`;
  const password = crypto.createHmac('sha256', secret).update(content).digest('hex').toUpperCase();
  client = mqtt.connect(`mqtt://${env.IOT_ALINK_HOST}:${env.IOT_ALINK_PORT}`, {
    clientId,
    username: `${dn}&${pk}`,
    password,
    keepalive: 1200,
    clean: true,
    reconnectPeriod: 0,
  });
  client.on('connect', () => emit({ event: 'connect', client_id: clientId }));
  client.on('error', (e) => emit({ event: 'error', message: String(e) }));
  client.on('close', () => emit({ event: 'close' }));
  client.on('message', (topic, payload) =>
    emit({ event: 'message', topic, payload: text(payload) }));
}

function publish(topic, payload) {
  const body = typeof payload === 'string' ? payload : JSON.stringify(payload);
  client.publish(topic, body, { qos: 1 }, (err) => {
    if (err) emit({ event: 'error', message: `publish ${topic}: ${err}` });
  });
}

// The test's commands: what a device application would call.
const commands = {
  // SDK calls, with their callbacks reported.
  postProps: (c) => device.postProps(c.params, (res) => emit({ event: 'reply', op: c.op, res })),
  postEvent: (c) =>
    device.postEvent(c.name, c.params, (res) => emit({ event: 'reply', op: c.op, res })),
  // Answers every call of the service `name` with c.reply ({code, data}), sync (RRPC) or async.
  onService: (c) =>
    device.onService(c.name, (res, reply) => {
      emit({ event: 'service', name: c.name, res });
      reply({ id: res.id, ...c.reply }, c.type || 'async');
    }),
  // Property sets: reported, answered on set_reply with c.reply ({code, data}).
  onProps: (c) =>
    device.onProps((res) => {
      emit({ event: 'props', res });
      publish(`/sys/${pk}/${dn}/thing/service/property/set_reply`, {
        id: res.id,
        code: 200,
        data: {},
        ...c.reply,
      });
    }),
  getShadow: () => device.getShadow(),
  postShadow: (c) => device.postShadow(c.reported),
  // Any topic: custom topics, raw, replies the SDK has no call for, the LinkSDK 4.x device.
  publish: (c) => publish(c.topic, c.payload),
  subscribe: (c) => client.subscribe(c.topic, { qos: 1 }),
  end: () => client.end(true, () => process.exit(0)),
};

if (env.IOT_ALINK_COMMANDS) {
  const lines = readline.createInterface({ input: fs.createReadStream(env.IOT_ALINK_COMMANDS) });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    let command;
    try {
      command = JSON.parse(line);
      commands[command.op](command);
    } catch (e) {
      emit({ event: 'error', message: `command ${line}: ${e}` });
    }
  });
  lines.on('close', () => client.end(true, () => process.exit(0)));
}
