-- Every request command-dispatch sends to a device: sync commands, property set/get, messages
-- down, async commands. `seq` orders a device's queue and pages the lists.
CREATE TABLE requests (
  seq            bigserial UNIQUE,
  request_id     text PRIMARY KEY,
  tenant_id      text NOT NULL,
  device_id      text NOT NULL,
  kind           text NOT NULL CHECK (kind IN ('command', 'properties_set', 'properties_get',
                                               'message', 'async_command')),
  service_id     text NOT NULL DEFAULT '',
  command_name   text NOT NULL DEFAULT '',
  name           text NOT NULL DEFAULT '',
  body           text NOT NULL DEFAULT '',  -- paras / services / message JSON as given
  raw            bytea,                     -- a raw message's bytes
  topic          text NOT NULL DEFAULT '',  -- custom message topic
  payload        bytea NOT NULL,            -- the downlink payload as published
  send_strategy  text NOT NULL DEFAULT '',
  expire_seconds bigint NOT NULL DEFAULT 0,
  status         text NOT NULL,
  result         text,                      -- the device's response (JSON)
  error          text NOT NULL DEFAULT '',
  created_at     timestamptz NOT NULL DEFAULT now(),
  expire_at      timestamptz,               -- a PENDING item expires then (TTL, expire_time)
  deadline_at    timestamptz,               -- a SENT/DELIVERED item times out then
  sent_at        timestamptz,
  delivered_at   timestamptz,
  response_at    timestamptz,
  finished_at    timestamptz
);
CREATE UNIQUE INDEX requests_device_request ON requests (device_id, request_id);
CREATE INDEX requests_list ON requests (tenant_id, device_id, kind, seq);
CREATE INDEX requests_pending ON requests (device_id, seq) WHERE status = 'PENDING';
CREATE INDEX requests_pending_expiry ON requests (expire_at) WHERE status = 'PENDING';
CREATE INDEX requests_open_deadline ON requests (deadline_at)
  WHERE status IN ('SENT', 'DELIVERED');

CREATE TABLE status_history (
  request_id text NOT NULL REFERENCES requests (request_id) ON DELETE CASCADE,
  id         bigserial,
  status     text NOT NULL,
  at         timestamptz NOT NULL DEFAULT now(),
  detail     text NOT NULL DEFAULT '',
  PRIMARY KEY (request_id, id)
);
