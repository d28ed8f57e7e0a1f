-- Tenants, API keys (hashes only), products with versioned Huawei product models, devices.
CREATE TABLE tenants (
  tenant_id   text PRIMARY KEY,
  name        text NOT NULL,
  root        boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  key_id      text PRIMARY KEY,
  tenant_id   text NOT NULL REFERENCES tenants (tenant_id),
  name        text NOT NULL,
  role        text NOT NULL CHECK (role IN ('reader', 'operator', 'admin', 'service')),
  key_hash    text NOT NULL UNIQUE,
  prefix      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, key_id);

CREATE TABLE products (
  product_id        text PRIMARY KEY,
  tenant_id         text NOT NULL REFERENCES tenants (tenant_id),
  name              text NOT NULL,
  device_type       text NOT NULL DEFAULT '',
  protocol_type     text NOT NULL DEFAULT '',
  data_format       text NOT NULL DEFAULT '',
  manufacturer_name text NOT NULL DEFAULT '',
  industry          text NOT NULL DEFAULT '',
  description       text NOT NULL DEFAULT '',
  model_version     integer NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_tenant ON products (tenant_id, product_id);

-- Every model version is kept; products.model_version names the current one.
CREATE TABLE product_models (
  product_id    text NOT NULL REFERENCES products (product_id) ON DELETE CASCADE,
  model_version integer NOT NULL,
  product_json  text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (product_id, model_version)
);

CREATE TABLE devices (
  device_id         text PRIMARY KEY,
  tenant_id         text NOT NULL REFERENCES tenants (tenant_id),
  product_id        text NOT NULL REFERENCES products (product_id),
  node_id           text NOT NULL,
  device_name       text NOT NULL DEFAULT '',
  description       text NOT NULL DEFAULT '',
  tags              jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- SecretBox-sealed (AES-256-GCM, associated data = device_id); never plaintext.
  secret_sealed     text,
  fingerprint       text,
  frozen            boolean NOT NULL DEFAULT false,
  connection        text NOT NULL DEFAULT 'INACTIVE'
                    CHECK (connection IN ('INACTIVE', 'ONLINE', 'OFFLINE')),
  presence_time     timestamptz,
  last_online_at    timestamptz,
  last_offline_at   timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (product_id, node_id)
);
CREATE INDEX devices_tenant ON devices (tenant_id, device_id);
CREATE INDEX devices_tags ON devices USING gin (tags);
