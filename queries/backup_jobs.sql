-- name: CreateBackupJob :one
INSERT INTO backup_jobs (id, user_id, database_id, name, schedule_type, cron_expression,
    advanced_schedule_config, timezone, backup_type, compression, is_encrypted,
    auto_verify_after_backup, verification_level, storage_type, cloud_storage_id,
    retention_days, is_active, keep_last, keep_daily, keep_weekly, keep_monthly)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
    sqlc.narg(keep_last), sqlc.narg(keep_daily), sqlc.narg(keep_weekly), sqlc.narg(keep_monthly))
RETURNING *;

-- name: GetBackupJob :one
SELECT * FROM backup_jobs WHERE id = $1 AND user_id = $2;

-- name: GetBackupJobForUpdate :one
SELECT * FROM backup_jobs WHERE id = $1 AND user_id = $2 FOR UPDATE;

-- name: ListBackupJobs :many
SELECT * FROM backup_jobs WHERE user_id = $1 ORDER BY created_at, id;

-- name: UpdateBackupJob :one
UPDATE backup_jobs
SET database_id = $3, name = $4, schedule_type = $5, cron_expression = $6,
    advanced_schedule_config = $7, timezone = $8, backup_type = $9, compression = $10,
    is_encrypted = $11, auto_verify_after_backup = $12, verification_level = $13,
    storage_type = $14, cloud_storage_id = $15, retention_days = $16, is_active = $17,
    keep_last = sqlc.narg(keep_last), keep_daily = sqlc.narg(keep_daily),
    keep_weekly = sqlc.narg(keep_weekly), keep_monthly = sqlc.narg(keep_monthly),
    -- A new schedule or a resumed job starts from now: slots before are
    -- not "missed".
    scheduled_through = CASE
        WHEN (NOT is_active AND $17) OR schedule_type IS DISTINCT FROM $5
             OR cron_expression IS DISTINCT FROM $6 OR advanced_schedule_config IS DISTINCT FROM $7
             OR timezone IS DISTINCT FROM $8
        THEN greatest(scheduled_through, now()) ELSE scheduled_through END,
    updated_at = now()
WHERE id = $1 AND user_id = $2
RETURNING *;

-- name: DeleteBackupJob :one
DELETE FROM backup_jobs WHERE id = $1 AND user_id = $2 RETURNING id;

-- name: SetBackupJobEncryption :exec
UPDATE backup_jobs
SET age_identity_enc = $3, age_recipient = $4, age_recipients = $5, age_key_export = $6, updated_at = now()
WHERE id = $1 AND user_id = $2;

-- name: SetBackupJobVerificationTarget :exec
UPDATE backup_jobs SET verification_database_id = sqlc.narg(verification_database_id)
WHERE id = $1 AND user_id = $2;

-- name: SetBackupJobVerifySchedule :exec
UPDATE backup_jobs SET verify_schedule = sqlc.narg(verify_schedule), verify_next_at = sqlc.narg(verify_next_at)
WHERE id = $1 AND user_id = $2;
