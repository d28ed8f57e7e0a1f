-- Schema thing_model is created by the migrations runner; this first migration only documents it.
-- Tables arrive with the service's domain logic.
COMMENT ON SCHEMA thing_model IS 'thing-model: tenants and API keys, products and thing models, device registry.';
