-- The durable copy of every device shadow. `reported` is written behind the Redis live store in
-- coalesced batches; `desired` is written synchronously by UpdateDeviceShadowDesiredData.
-- Both sides are {"<service_id>": {"properties": {...}, "metadata": {"<name>": <unix ms>},
-- "event_time": "...", "event_ms": <unix ms>}}.
CREATE TABLE shadow.device_shadows (
  device_id         text PRIMARY KEY,
  tenant_id         text NOT NULL,
  version           bigint NOT NULL DEFAULT 0,
  reported          jsonb NOT NULL DEFAULT '{}'::jsonb,
  desired           jsonb NOT NULL DEFAULT '{}'::jsonb,
  last_property_set jsonb,
  updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_shadows_tenant ON shadow.device_shadows (tenant_id);
