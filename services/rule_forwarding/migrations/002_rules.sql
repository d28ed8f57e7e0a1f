-- Rules (SQL + actions) per tenant, and the deliveries that failed for good.
CREATE TABLE rule_forwarding.rules (
  tenant_id   text NOT NULL,
  rule_id     text NOT NULL,
  name        text NOT NULL,
  description text NOT NULL DEFAULT '',
  resource    text NOT NULL,
  product_id  text NOT NULL DEFAULT '',
  device_id   text NOT NULL DEFAULT '',
  sql         text NOT NULL,
  actions     jsonb NOT NULL,
  enabled     boolean NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, rule_id)
);

CREATE TABLE rule_forwarding.dead_letters (
  id           bigserial PRIMARY KEY,
  tenant_id    text NOT NULL,
  rule_id      text NOT NULL,
  action_index integer NOT NULL,
  action_type  text NOT NULL,
  delivery_id  text NOT NULL,
  device_id    text NOT NULL,
  payload      text NOT NULL,
  error        text NOT NULL,
  attempts     integer NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_tenant_rule ON rule_forwarding.dead_letters (tenant_id, rule_id, id);
