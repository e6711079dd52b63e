-- name: ApplyRestoreQueued :exec
INSERT INTO restore_history (id, user_id, backup_history_id, target_database_id, agent_id, status, queued_at)
VALUES ($1, $2, $3, $4, $5, 'queued', $6)
ON CONFLICT (id) DO NOTHING;

-- name: ApplyRestoreStarted :exec
UPDATE restore_history SET status = 'running', started_at = sqlc.arg(at)
WHERE id = $1 AND agent_id = $2 AND status = 'queued';

-- name: ApplyRestoreProgress :exec
UPDATE restore_history
SET progress_seq = sqlc.arg(seq), progress_step = sqlc.arg(step), progress_bytes = sqlc.arg(bytes),
    progress_percent = sqlc.arg(percent)
WHERE id = $1 AND agent_id = $2 AND status = 'running' AND progress_seq < sqlc.arg(seq);

-- name: ApplyRestoreFinished :one
UPDATE restore_history
SET status = sqlc.arg(status), completed_at = sqlc.arg(at), error_message = sqlc.narg(error_message),
    started_at = coalesce(started_at, sqlc.arg(at)),
    duration_ms = (extract(epoch FROM sqlc.arg(at)::timestamptz - coalesce(started_at, queued_at)) * 1000)::bigint
WHERE id = $1 AND agent_id = $2 AND status IN ('queued', 'running')
RETURNING backup_history_id;

-- name: GetRestore :one
SELECT * FROM restore_history WHERE id = $1 AND user_id = $2;

-- name: ListRestores :many
SELECT sqlc.embed(restore_history), count(*) OVER () AS total
FROM restore_history
WHERE user_id = sqlc.arg(user_id)
  AND (sqlc.narg(backup_id)::uuid IS NULL OR backup_history_id = sqlc.narg(backup_id))
ORDER BY queued_at DESC, id
LIMIT sqlc.arg(lim) OFFSET sqlc.arg(off);
