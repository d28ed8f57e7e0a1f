-- Rule actions' secret settings (`secret`, `password`, `url`) are sealed with IOT_SECRET_KEY
-- (AES-256-GCM) in rules.actions and outbox.item from this version on (docs/security.md). SQL
-- cannot encrypt: the rows written before are marked here (false) and sealed by the service at
-- start-up (PgRuleStore::SealPlainSecrets, PgOutbox::SealPlainSecrets); new rows are written
-- sealed and marked true.
ALTER TABLE rule_forwarding.rules ADD COLUMN secrets_sealed boolean NOT NULL DEFAULT false;
ALTER TABLE rule_forwarding.outbox ADD COLUMN sealed boolean NOT NULL DEFAULT false;
CREATE INDEX rules_plain_secrets ON rule_forwarding.rules (tenant_id) WHERE NOT secrets_sealed;
CREATE INDEX outbox_plain_secrets ON rule_forwarding.outbox (id) WHERE NOT sealed;
