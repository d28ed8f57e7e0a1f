-- Schema rule_forwarding is created by the migrations runner; this first migration only documents it.
-- Tables arrive with the service's domain logic.
COMMENT ON SCHEMA rule_forwarding IS 'rule-forwarding: rules, forwarding actions, history, subscriptions.';
