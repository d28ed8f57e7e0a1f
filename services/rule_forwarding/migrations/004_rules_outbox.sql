-- The deliveries rule-forwarding has accepted (Ingest answered OK) and not yet finished: each row
-- is owned by the replica that queued it; rows of a replica that stopped heartbeating are taken
-- over by another. docs/rules.md, "Delivery guarantees".
CREATE TABLE rule_forwarding.outbox_owners (
  owner     text PRIMARY KEY,
  heartbeat timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rule_forwarding.outbox (
  id         bigserial PRIMARY KEY,
  owner      text NOT NULL,
  item       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_owner ON rule_forwarding.outbox (owner, id);
