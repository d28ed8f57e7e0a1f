-- Schema command_dispatch is created by the migrations runner; this first migration only documents it.
-- Tables arrive with the service's domain logic.
COMMENT ON SCHEMA command_dispatch IS 'command-dispatch: commands, property set/get, messages down.';
