-- +goose Up
-- Connection settings only some engines use (MongoDB: authSource, TLS and a
-- replica set name). NULL or false where the engine has none.
ALTER TABLE databases
    ADD COLUMN auth_source text,
    ADD COLUMN tls         boolean NOT NULL DEFAULT false,
    ADD COLUMN replica_set text;

-- +goose Down
ALTER TABLE databases DROP COLUMN auth_source, DROP COLUMN tls, DROP COLUMN replica_set;
