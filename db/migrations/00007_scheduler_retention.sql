-- +goose Up
-- The scheduler: scheduled_through is the latest slot of the job the
-- scheduler has handled (run or skipped). Creating a job, changing its
-- schedule or resuming it moves it to now, so slots before that are not
-- "missed". The updated_at index serves the scheduler's change poll.
ALTER TABLE backup_jobs
    ADD COLUMN scheduled_through timestamptz NOT NULL DEFAULT now(),
    -- Grandfather-father-son retention beside retention_days; NULL = unused.
    ADD COLUMN keep_last    integer CHECK (keep_last >= 0),
    ADD COLUMN keep_daily   integer CHECK (keep_daily >= 0),
    ADD COLUMN keep_weekly  integer CHECK (keep_weekly >= 0),
    ADD COLUMN keep_monthly integer CHECK (keep_monthly >= 0);
CREATE INDEX backup_jobs_updated_idx ON backup_jobs (updated_at);
-- Every slot updates its job's scheduled_through: room on each page lets
-- those updates stay HOT (no index writes).
ALTER TABLE backup_jobs SET (fillfactor = 70);

-- scheduled_for: the slot a scheduled run belongs to (NULL for "run now").
-- Retention: an expired row keeps its history; expire_reason says which
-- rule let it go, purged_at when its stored object was deleted. Until
-- then the last deletion error and when to try again are kept.
-- verifying_since marks a verification in flight (retention leaves the
-- backup alone meanwhile).
ALTER TABLE backup_history
    ADD COLUMN scheduled_for   timestamptz,
    ADD COLUMN expired_at      timestamptz,
    ADD COLUMN expire_reason   text,
    ADD COLUMN expire_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN expire_error    text,
    ADD COLUMN expire_after    timestamptz,
    ADD COLUMN purged_at       timestamptz,
    ADD COLUMN verifying_since timestamptz;
ALTER TABLE backup_history DROP CONSTRAINT backup_history_status_check;
ALTER TABLE backup_history ADD CONSTRAINT backup_history_status_check
    CHECK (status IN ('queued', 'running', 'success', 'failed', 'cancelled', 'skipped', 'expired'));
CREATE INDEX backup_history_job_success_idx ON backup_history (backup_job_id, completed_at DESC)
    WHERE status = 'success' AND deleted_at IS NULL;
CREATE INDEX backup_history_unpurged_idx ON backup_history (expired_at) WHERE status = 'expired' AND purged_at IS NULL;

-- +goose Down
DROP INDEX backup_history_unpurged_idx;
DROP INDEX backup_history_job_success_idx;
UPDATE backup_history SET status = 'success' WHERE status = 'expired';
ALTER TABLE backup_history DROP CONSTRAINT backup_history_status_check;
ALTER TABLE backup_history ADD CONSTRAINT backup_history_status_check
    CHECK (status IN ('queued', 'running', 'success', 'failed', 'cancelled', 'skipped'));
ALTER TABLE backup_history
    DROP COLUMN scheduled_for,
    DROP COLUMN expired_at,
    DROP COLUMN expire_reason,
    DROP COLUMN expire_attempts,
    DROP COLUMN expire_error,
    DROP COLUMN expire_after,
    DROP COLUMN purged_at,
    DROP COLUMN verifying_since;
ALTER TABLE backup_jobs RESET (fillfactor);
DROP INDEX backup_jobs_updated_idx;
ALTER TABLE backup_jobs
    DROP COLUMN scheduled_through,
    DROP COLUMN keep_last,
    DROP COLUMN keep_daily,
    DROP COLUMN keep_weekly,
    DROP COLUMN keep_monthly;
