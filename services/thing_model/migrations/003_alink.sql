-- Issue 17: products of the Alibaba (Alink) dialect. Such a product is created from a TSL: each
-- model version keeps the TSL as imported next to the Huawei-form model derived from it.
ALTER TABLE products ADD COLUMN dialect text NOT NULL DEFAULT 'huawei'
  CHECK (dialect IN ('huawei', 'alink'));
ALTER TABLE product_models ADD COLUMN tsl_json text;
