-- Telemetry history (docs/history.md) and application consumer groups (docs/subscriptions.md).

-- One row per reported property value, range-partitioned by day on ts. Partitions
-- (property_history_pYYYYMMDD) are created ahead and on demand by the service and dropped when
-- they are wholly past retention. The primary key is the query path and the dedupe key: a
-- retried delivery (same dedupe_key = delivery id) stores nothing twice.
CREATE TABLE property_history (
  tenant_id   text NOT NULL,
  device_id   text NOT NULL,
  service_id  text NOT NULL,
  property    text NOT NULL,
  ts          timestamptz NOT NULL,
  dedupe_key  text NOT NULL,
  num         double precision,
  value       jsonb NOT NULL,
  PRIMARY KEY (tenant_id, device_id, service_id, property, ts, dedupe_key)
) PARTITION BY RANGE (ts);

CREATE TABLE consumer_groups (
  tenant_id                text NOT NULL,
  group_name               text NOT NULL,
  description              text NOT NULL DEFAULT '',
  max_backlog_length       bigint NOT NULL,
  max_backlog_age_seconds  bigint NOT NULL,
  ack_timeout_seconds      integer NOT NULL,
  created_at               timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, group_name)
);
