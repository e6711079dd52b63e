-- +goose Up
CREATE TABLE backup_jobs (
    id                       uuid        PRIMARY KEY,
    user_id                  uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    database_id              uuid        NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
    name                     text        NOT NULL,
    schedule_type            text        NOT NULL CHECK (schedule_type IN ('manual', 'hourly', 'daily', 'weekly', 'monthly', 'custom', 'advanced')),
    cron_expression          text,
    advanced_schedule_config jsonb,
    timezone                 text        NOT NULL DEFAULT 'UTC',
    backup_type              text        NOT NULL DEFAULT 'full' CHECK (backup_type IN ('full', 'incremental', 'differential')),
    compression              text        NOT NULL DEFAULT 'zstd' CHECK (compression IN ('zstd', 'gzip', 'none')),
    is_encrypted             boolean     NOT NULL DEFAULT false,
    auto_verify_after_backup boolean     NOT NULL DEFAULT false,
    verification_level       text        NOT NULL DEFAULT 'BASIC' CHECK (verification_level IN ('BASIC', 'DATABASE', 'FULL')),
    storage_type             text        NOT NULL DEFAULT 'local' CHECK (storage_type IN ('local', 's3', 'google_drive')),
    cloud_storage_id         uuid,
    retention_days           integer     NOT NULL DEFAULT 30 CHECK (retention_days >= 0),
    is_active                boolean     NOT NULL DEFAULT true,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backup_jobs_user_idx ON backup_jobs (user_id, created_at);

-- Projection of rahat.evt.<agent>.backup.* (and the control plane's queued
-- and skipped events); written only by the projector. No foreign keys:
-- replaying the event stream must work after jobs or databases are deleted.
CREATE TABLE backup_history (
    id                  uuid        PRIMARY KEY, -- the run id
    user_id             uuid        NOT NULL,
    backup_job_id       uuid        NOT NULL,
    database_id         uuid        NOT NULL,
    agent_id            uuid        NOT NULL,
    status              text        NOT NULL CHECK (status IN ('queued', 'running', 'success', 'failed', 'cancelled', 'skipped')),
    queued_at           timestamptz NOT NULL,
    started_at          timestamptz,
    completed_at        timestamptz,
    duration_ms         bigint,
    file_name           text,
    file_size           bigint,
    raw_size            bigint,
    storage_type        text        NOT NULL,
    storage_key         text,
    checksum_value      text,
    checksum_algorithm  text,
    compression         text        NOT NULL,
    is_encrypted        boolean     NOT NULL DEFAULT false,
    error_message       text,
    progress_step       text,
    progress_bytes      bigint,
    progress_percent    integer,
    progress_seq        bigint      NOT NULL DEFAULT 0,
    manifest            jsonb,
    verification_status text        NOT NULL DEFAULT 'PENDING' CHECK (verification_status IN ('PENDING', 'PASSED', 'FAILED', 'SKIPPED')),
    verification_result jsonb,
    verified_at         timestamptz,
    last_restore_status text,
    deleted_at          timestamptz
);
CREATE INDEX backup_history_user_idx ON backup_history (user_id, queued_at DESC);
CREATE INDEX backup_history_job_idx ON backup_history (backup_job_id, queued_at DESC);
-- At most one queued or running backup per job: the API's 409.
CREATE UNIQUE INDEX backup_history_one_active ON backup_history (backup_job_id) WHERE status IN ('queued', 'running');

CREATE TABLE restore_history (
    id                 uuid        PRIMARY KEY, -- the restore run id
    user_id            uuid        NOT NULL,
    backup_history_id  uuid        NOT NULL,
    target_database_id uuid        NOT NULL,
    agent_id           uuid        NOT NULL,
    status             text        NOT NULL CHECK (status IN ('queued', 'running', 'success', 'failed')),
    queued_at          timestamptz NOT NULL,
    started_at         timestamptz,
    completed_at       timestamptz,
    duration_ms        bigint,
    error_message      text,
    progress_step      text,
    progress_bytes     bigint,
    progress_percent   integer,
    progress_seq       bigint      NOT NULL DEFAULT 0
);
CREATE INDEX restore_history_user_idx ON restore_history (user_id, queued_at DESC);

-- +goose Down
DROP TABLE restore_history;
DROP TABLE backup_history;
DROP TABLE backup_jobs;
