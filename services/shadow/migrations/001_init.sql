-- Schema shadow is created by the migrations runner; this first migration only documents it.
-- Tables arrive with the service's domain logic.
COMMENT ON SCHEMA shadow IS 'shadow: device shadows (desired / reported / delta).';
