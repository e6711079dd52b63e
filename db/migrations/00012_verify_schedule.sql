-- +goose Up
-- A job's own cadence of FULL verification of its newest successful
-- backup: a preset (hourly, daily, weekly, monthly) or a 5-field cron in
-- the job's time zone, and the next slot due. NULL: none.
ALTER TABLE backup_jobs
    ADD COLUMN verify_schedule text,
    ADD COLUMN verify_next_at  timestamptz;
CREATE INDEX backup_jobs_verify_next_at ON backup_jobs (verify_next_at) WHERE verify_next_at IS NOT NULL;

-- +goose Down
DROP INDEX backup_jobs_verify_next_at;
ALTER TABLE backup_jobs DROP COLUMN verify_schedule, DROP COLUMN verify_next_at;
