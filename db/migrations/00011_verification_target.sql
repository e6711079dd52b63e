-- +goose Up
-- A job's verification target: the database (of the same type) on whose
-- server FULL verification makes its scratch database, so that production
-- is never touched. NULL: the job's own database's server.
ALTER TABLE backup_jobs
    ADD COLUMN verification_database_id uuid REFERENCES databases (id) ON DELETE SET NULL;

-- +goose Down
ALTER TABLE backup_jobs DROP COLUMN verification_database_id;
