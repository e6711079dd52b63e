-- The Apply* queries are the projector's: each moves a row only from the
-- states it is expected in, so duplicated, late or replayed events change
-- nothing. The agent id is part of every WHERE: an agent can only move its
-- own runs.

-- name: ApplyBackupQueued :exec
INSERT INTO backup_history (id, user_id, backup_job_id, database_id, agent_id, status, queued_at,
    storage_type, compression, is_encrypted, error_message, cloud_storage_id, scheduled_for)
VALUES ($1, $2, $3, $4, $5, sqlc.arg(status), $6, $7, $8, $9, sqlc.narg(error_message), sqlc.narg(cloud_storage_id),
    sqlc.narg(scheduled_for))
ON CONFLICT (id) DO NOTHING;

-- ApplyBackupQueuedMany is ApplyBackupQueued for many rows in one
-- statement (the scheduler's bursts). Empty strings, nil UUIDs and zero
-- times stand for NULL.
-- name: ApplyBackupQueuedMany :exec
INSERT INTO backup_history (id, user_id, backup_job_id, database_id, agent_id, status, queued_at,
    storage_type, compression, is_encrypted, error_message, cloud_storage_id, scheduled_for)
SELECT u.id, u.user_id, u.backup_job_id, u.database_id, u.agent_id, u.status, u.queued_at,
    u.storage_type, u.compression, u.is_encrypted, nullif(u.error_message, ''),
    nullif(u.cloud_storage_id, '00000000-0000-0000-0000-000000000000'::uuid),
    nullif(u.scheduled_for, '0001-01-01 00:00:00Z'::timestamptz)
FROM (SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(user_ids)::uuid[]) AS user_id,
        unnest(sqlc.arg(job_ids)::uuid[]) AS backup_job_id, unnest(sqlc.arg(database_ids)::uuid[]) AS database_id,
        unnest(sqlc.arg(agent_ids)::uuid[]) AS agent_id, unnest(sqlc.arg(statuses)::text[]) AS status,
        unnest(sqlc.arg(queued_ats)::timestamptz[]) AS queued_at, unnest(sqlc.arg(storage_types)::text[]) AS storage_type,
        unnest(sqlc.arg(compressions)::text[]) AS compression, unnest(sqlc.arg(encrypted)::boolean[]) AS is_encrypted,
        unnest(sqlc.arg(error_messages)::text[]) AS error_message,
        unnest(sqlc.arg(cloud_storage_ids)::uuid[]) AS cloud_storage_id,
        unnest(sqlc.arg(scheduled_fors)::timestamptz[]) AS scheduled_for) AS u
ON CONFLICT (id) DO NOTHING;

-- name: ApplyBackupStarted :exec
UPDATE backup_history SET status = 'running', started_at = sqlc.arg(at)
WHERE id = $1 AND agent_id = $2 AND status = 'queued';

-- name: ApplyBackupProgress :exec
UPDATE backup_history
SET progress_seq = sqlc.arg(seq), progress_step = sqlc.arg(step), progress_bytes = sqlc.arg(bytes),
    progress_percent = sqlc.arg(percent)
WHERE id = $1 AND agent_id = $2 AND status = 'running' AND progress_seq < sqlc.arg(seq);

-- name: ApplyBackupCompleted :exec
UPDATE backup_history
SET status = 'success', completed_at = sqlc.arg(at),
    started_at = coalesce(started_at, sqlc.arg(at)),
    duration_ms = sqlc.arg(duration_ms), file_name = sqlc.arg(file_name), file_size = sqlc.arg(file_size),
    raw_size = sqlc.arg(raw_size), storage_key = sqlc.arg(storage_key),
    checksum_value = sqlc.arg(checksum), checksum_algorithm = sqlc.arg(checksum_algorithm),
    manifest = sqlc.arg(manifest), progress_step = 'done', progress_percent = 100,
    progress_bytes = sqlc.arg(raw_size), error_message = NULL, lost = false
WHERE id = $1 AND agent_id = $2 AND (status IN ('queued', 'running') OR (status = 'failed' AND lost));

-- name: ApplyBackupFailed :exec
UPDATE backup_history
SET status = 'failed', completed_at = sqlc.arg(at), error_message = sqlc.arg(error_message),
    lost = sqlc.arg(lost),
    duration_ms = (extract(epoch FROM sqlc.arg(at)::timestamptz - coalesce(started_at, queued_at)) * 1000)::bigint
WHERE id = $1 AND agent_id = $2 AND status IN ('queued', 'running');

-- name: ApplyBackupVerified :exec
UPDATE backup_history
SET verification_status = sqlc.arg(verification_status), verification_result = sqlc.arg(verification_result),
    verified_at = sqlc.arg(at), verifying_since = NULL
WHERE id = $1 AND agent_id = $2 AND status = 'success' AND (verified_at IS NULL OR verified_at <= sqlc.arg(at));

-- name: ApplyBackupExpired :exec
UPDATE backup_history SET status = 'expired', expired_at = sqlc.arg(at), expire_reason = sqlc.arg(reason)
WHERE id = $1 AND agent_id = $2 AND status = 'success';

-- name: ApplyBackupRestoreStatus :exec
UPDATE backup_history SET last_restore_status = sqlc.arg(status)
WHERE id = $1;

-- name: ApplyBackupDeleted :exec
UPDATE backup_history SET deleted_at = sqlc.arg(at) WHERE id = $1 AND agent_id = $2 AND deleted_at IS NULL;

-- name: HasActiveBackup :one
SELECT EXISTS (SELECT 1 FROM backup_history WHERE backup_job_id = $1 AND status IN ('queued', 'running'));

-- name: GetBackupHistory :one
SELECT * FROM backup_history WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL;

-- name: ListBackupHistory :many
SELECT sqlc.embed(backup_history), count(*) OVER () AS total
FROM backup_history
WHERE user_id = sqlc.arg(user_id) AND deleted_at IS NULL
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status))
  AND (sqlc.narg(database_id)::uuid IS NULL OR database_id = sqlc.narg(database_id))
  AND (sqlc.narg(job_id)::uuid IS NULL OR backup_job_id = sqlc.narg(job_id))
  AND (sqlc.narg(from_time)::timestamptz IS NULL OR queued_at >= sqlc.narg(from_time))
  AND (sqlc.narg(to_time)::timestamptz IS NULL OR queued_at < sqlc.narg(to_time))
ORDER BY queued_at DESC, id
LIMIT sqlc.arg(lim) OFFSET sqlc.arg(off);

-- LostRuns lists queued or running backups whose agent has not been heard
-- from for longer than the limit (seconds), or never since the run was queued.
-- name: LostBackupRuns :many
SELECT h.id, h.agent_id
FROM backup_history h
LEFT JOIN agent_presence p ON p.agent_id = h.agent_id
WHERE h.status IN ('queued', 'running')
  AND h.queued_at < now() - make_interval(secs => sqlc.arg(limit_secs)::float8)
  AND (p.last_seen_at IS NULL OR p.last_seen_at < now() - make_interval(secs => sqlc.arg(limit_secs)::float8) OR NOT p.online);

-- LockBackupForRead locks a backup row while a restore or verification of
-- it is queued, so retention cannot expire it in between.
-- name: LockBackupForRead :one
SELECT status FROM backup_history WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL FOR UPDATE;

-- ApplyVerifyQueued marks a backup as being verified, from the control
-- plane's verify.queued event, unless a result or a later verification
-- already came (an event applied late changes nothing).
-- name: ApplyVerifyQueued :exec
UPDATE backup_history SET verifying_since = sqlc.arg(at)
WHERE id = $1 AND agent_id = $2 AND status = 'success'
  AND (verified_at IS NULL OR verified_at < sqlc.arg(at))
  AND (verifying_since IS NULL OR verifying_since < sqlc.arg(at));

-- LockRunIfActive locks a backup run that is still queued or running;
-- no row when it has ended.
-- name: LockRunIfActive :one
SELECT id FROM backup_history WHERE id = $1 AND status IN ('queued', 'running') FOR UPDATE;

-- ApplyBackupChain records, on a queued chunked run, the chain the control
-- plane chose for it: with a parent (of the same job), the parent's base
-- and every backup the parent depends on, and the parent itself.
-- name: ApplyBackupChain :exec
UPDATE backup_history h
SET chunked = true, backup_type = sqlc.arg(backup_type), parent_id = sqlc.narg(parent_id),
    base_id = coalesce((SELECT coalesce(p.base_id, p.id) FROM backup_history p
                        WHERE p.id = sqlc.narg(parent_id) AND p.backup_job_id = h.backup_job_id), h.id),
    depends_on = coalesce((SELECT p.depends_on || p.id FROM backup_history p
                           WHERE p.id = sqlc.narg(parent_id) AND p.backup_job_id = h.backup_job_id), '{}'::uuid[])
WHERE h.id = $1 AND h.status IN ('queued', 'running') AND NOT h.chunked;

-- ApplyBackupChainCompleted records what a chunked backup stored. An
-- agent that could not use the parent (gone, or made with another key)
-- stores a full instead: as_full then ends the row's chain.
-- name: ApplyBackupChainCompleted :exec
UPDATE backup_history
SET new_bytes = sqlc.arg(new_bytes),
    backup_type = CASE WHEN sqlc.arg(as_full)::boolean THEN 'full' ELSE backup_type END,
    parent_id = CASE WHEN sqlc.arg(as_full)::boolean THEN NULL ELSE parent_id END,
    base_id = CASE WHEN sqlc.arg(as_full)::boolean THEN id ELSE base_id END,
    depends_on = CASE WHEN sqlc.arg(as_full)::boolean THEN '{}'::uuid[] ELSE depends_on END
WHERE id = $1 AND agent_id = $2 AND chunked AND status = 'success';

-- ChainParent is the newest successful chunked backup of a job made with
-- the given storage, compression and encryption: the parent of its next
-- incremental. With full_only, the newest full (a differential's parent).
-- name: ChainParent :one
SELECT h.id, h.backup_type, h.base_id, h.depends_on, h.storage_key, h.file_size, h.checksum_value, h.completed_at,
       b.completed_at AS base_completed_at
FROM backup_history h
LEFT JOIN backup_history b ON b.id = h.base_id
WHERE h.backup_job_id = $1 AND h.chunked AND h.status = 'success' AND h.deleted_at IS NULL
  AND h.storage_type = sqlc.arg(storage_type) AND h.cloud_storage_id IS NOT DISTINCT FROM sqlc.narg(cloud_storage_id)
  AND h.compression = sqlc.arg(compression) AND h.is_encrypted = sqlc.arg(is_encrypted)
  AND (NOT sqlc.arg(full_only)::boolean OR h.backup_type = 'full')
  -- Local storage is one agent's disk; a chain whose newest backup
  -- failed verification is not built on.
  AND (h.storage_type <> 'local' OR h.agent_id = sqlc.arg(agent_id))
  AND h.verification_status <> 'FAILED'
ORDER BY h.completed_at DESC
LIMIT 1;

-- BackupDependents is the backups that need backup id's packs: kept
-- (success) or being made (queued, running, or lost: an agent that went
-- silent may still complete it).
-- name: BackupDependents :many
SELECT id FROM backup_history
WHERE depends_on @> ARRAY[sqlc.arg(id)::uuid] AND deleted_at IS NULL
  AND (status IN ('queued', 'running', 'success') OR (status = 'failed' AND lost))
ORDER BY queued_at;

-- ChainLiveBackups is every backup of a job whose packs must stay: kept,
-- being made (queued, running, lost), or expired and not yet purged.
-- name: ChainLiveBackups :many
SELECT id FROM backup_history
WHERE backup_job_id = $1 AND chunked AND deleted_at IS NULL
  AND (status IN ('queued', 'running', 'success') OR (status = 'failed' AND lost)
       OR (status = 'expired' AND purged_at IS NULL));
