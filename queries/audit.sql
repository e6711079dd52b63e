-- name: InsertAuditEntry :exec
INSERT INTO audit_log (id, user_id, at, action, object_type, object_id, ip, user_agent, outcome, status_code, detail, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO NOTHING;

-- ListAuditEntries is one page of a user's entries, newest first, filtered
-- by action (exact, or a prefix ending in "."), outcome and time range.
-- name: ListAuditEntries :many
SELECT * FROM audit_log
WHERE user_id = sqlc.arg(user_id)
  AND (sqlc.narg(action)::text IS NULL OR action = sqlc.narg(action)
       OR (right(sqlc.narg(action), 1) = '.' AND starts_with(action, sqlc.narg(action))))
  AND (sqlc.narg(outcome)::text IS NULL OR outcome = sqlc.narg(outcome))
  AND (sqlc.narg(object_id)::text IS NULL OR object_id = sqlc.narg(object_id))
  AND (sqlc.narg(from_at)::timestamptz IS NULL OR at >= sqlc.narg(from_at))
  AND (sqlc.narg(to_at)::timestamptz IS NULL OR at <= sqlc.narg(to_at))
ORDER BY at DESC, id
LIMIT sqlc.arg(lim) OFFSET sqlc.arg(off);

-- name: CountAuditEntries :one
SELECT count(*) FROM audit_log
WHERE user_id = sqlc.arg(user_id)
  AND (sqlc.narg(action)::text IS NULL OR action = sqlc.narg(action)
       OR (right(sqlc.narg(action), 1) = '.' AND starts_with(action, sqlc.narg(action))))
  AND (sqlc.narg(outcome)::text IS NULL OR outcome = sqlc.narg(outcome))
  AND (sqlc.narg(object_id)::text IS NULL OR object_id = sqlc.narg(object_id))
  AND (sqlc.narg(from_at)::timestamptz IS NULL OR at >= sqlc.narg(from_at))
  AND (sqlc.narg(to_at)::timestamptz IS NULL OR at <= sqlc.narg(to_at));
