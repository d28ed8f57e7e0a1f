-- Schema device_gateway is created by the migrations runner.
COMMENT ON SCHEMA device_gateway IS
  'device-gateway: uplink records no owner would take (dead letters).';

-- A record an owner (shadow, command-dispatch, rule-forwarding, thing-model) refused with a
-- non-retryable error (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE) after the gateway's
-- tries, alone in its request: kept here so that the shard could move on and nothing is lost
-- silently. `request` is the one-record request as protobuf JSON, so it can be read and
-- replayed. One row per (target, message_id): a record redelivered after a crash is stored once.
CREATE TABLE device_gateway.dead_letters (
  id          bigserial PRIMARY KEY,
  created_at  timestamptz NOT NULL DEFAULT now(),
  target      text NOT NULL,     -- e.g. rule_forwarding.Ingest
  code        text NOT NULL,     -- gRPC status code of the last refusal
  error       text NOT NULL,
  attempts    integer NOT NULL,
  message_id  text NOT NULL,
  tenant_id   text NOT NULL,
  device_id   text NOT NULL,
  request     jsonb NOT NULL,
  UNIQUE (target, message_id)
);

CREATE INDEX dead_letters_by_device ON device_gateway.dead_letters (tenant_id, device_id, id);
