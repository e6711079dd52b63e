-- The retention worker's queries.

-- RetentionJobs is a page of jobs (by id, after after_id) with their
-- retention policy.
-- name: RetentionJobs :many
SELECT id, retention_days, keep_last, keep_daily, keep_weekly, keep_monthly, timezone
FROM backup_jobs
WHERE id > sqlc.arg(after_id)
ORDER BY id
LIMIT sqlc.arg(lim);

-- SuccessfulBackupsOfJobs is the jobs' successful backups, and those
-- being made (queued, running, lost), with the backups each needs.
-- name: SuccessfulBackupsOfJobs :many
SELECT id, backup_job_id, completed_at, depends_on, status
FROM backup_history
WHERE backup_job_id = ANY(sqlc.arg(job_ids)::uuid[]) AND deleted_at IS NULL
  AND ((status = 'success' AND completed_at IS NOT NULL) OR status IN ('queued', 'running') OR (status = 'failed' AND lost));

-- SuccessfulBackupsOfJob is one job's successful backups with what the
-- retention preview shows.
-- name: SuccessfulBackupsOfJob :many
SELECT id, completed_at, file_name, file_size, storage_type, backup_type, depends_on, status
FROM backup_history
WHERE backup_job_id = $1 AND user_id = $2 AND deleted_at IS NULL
  AND ((status = 'success' AND completed_at IS NOT NULL) OR status IN ('queued', 'running') OR (status = 'failed' AND lost));

-- LockBackupForExpiry locks a successful backup and says whether a
-- restore or verification is reading it (ones older than stale_secs are
-- considered lost).
-- name: LockBackupForExpiry :one
SELECT h.status, h.agent_id,
       (h.verifying_since IS NOT NULL AND h.verifying_since > now() - make_interval(secs => sqlc.arg(stale_secs)::float8))::boolean AS verifying,
       EXISTS (SELECT 1 FROM restore_history r
               WHERE r.backup_history_id = h.id AND r.status IN ('queued', 'running')
                 AND r.queued_at > now() - make_interval(secs => sqlc.arg(stale_secs)::float8))::boolean AS restoring
FROM backup_history h
WHERE h.id = $1
FOR UPDATE OF h;

-- UnpurgedBackups is expired backups whose object is not deleted yet and
-- whose next attempt is due.
-- name: UnpurgedBackups :many
SELECT * FROM backup_history
WHERE status = 'expired' AND purged_at IS NULL AND deleted_at IS NULL
  AND coalesce(expire_after, '-infinity'::timestamptz) <= now()
ORDER BY expired_at
LIMIT sqlc.arg(lim);

-- ApplyBackupPurged and ApplyBackupPurgeFailed are the projector's, from
-- the control plane's purged and purge_failed events.
-- name: ApplyBackupPurged :exec
UPDATE backup_history SET purged_at = sqlc.arg(at), expire_error = NULL, expire_after = NULL
WHERE id = $1 AND agent_id = $2 AND status = 'expired' AND purged_at IS NULL;

-- A failed attempt is recorded once, and only after the attempts before it.
-- name: ApplyBackupPurgeFailed :exec
UPDATE backup_history
SET expire_attempts = sqlc.arg(attempt), expire_error = sqlc.arg(error), expire_after = sqlc.arg(retry_at)
WHERE id = $1 AND agent_id = $2 AND status = 'expired' AND purged_at IS NULL
  AND expire_attempts < sqlc.arg(attempt);
