-- +goose Up
-- Connection settings of SQL Server databases: the named instance (empty:
-- the default instance, at port) and the encryption (empty: mandatory).
-- Empty where the engine has none.
ALTER TABLE databases
    ADD COLUMN instance text NOT NULL DEFAULT '',
    ADD COLUMN encrypt  text NOT NULL DEFAULT '' CHECK (encrypt IN ('', 'strict', 'mandatory', 'optional'));

-- +goose Down
ALTER TABLE databases DROP COLUMN instance, DROP COLUMN encrypt;
