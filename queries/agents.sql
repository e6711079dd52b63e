-- name: CreateAgent :one
INSERT INTO agents (id, user_id, name, public_key, nats_secret_hash, is_local)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: GetActiveAgent :one
SELECT * FROM agents WHERE id = $1 AND revoked_at IS NULL;

-- ListAgents lists a user's active agents with their presence: an agent is
-- online while its last presence event was not "offline" and is younger than
-- the offline limit (seconds).
-- name: ListAgents :many
SELECT a.id, a.name, a.is_local, a.created_at,
       coalesce(p.hostname, '')::text AS hostname,
       coalesce(p.os, '')::text AS os,
       coalesce(p.version, '')::text AS version,
       p.last_seen_at,
       (coalesce(p.online, false) AND p.last_seen_at > now() - make_interval(secs => sqlc.arg(offline_after_secs)::float8))::boolean AS online
FROM agents a
LEFT JOIN agent_presence p ON p.agent_id = a.id
WHERE a.user_id = sqlc.arg(user_id) AND a.revoked_at IS NULL
ORDER BY a.created_at, a.id;

-- name: RevokeAgent :one
UPDATE agents SET revoked_at = now()
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
RETURNING id;

-- name: HasLocalAgent :one
SELECT EXISTS (SELECT 1 FROM agents WHERE is_local AND revoked_at IS NULL);

-- GetAgentStatus is ListAgents for one agent of one user.
-- name: GetAgentStatus :one
SELECT a.id, a.name, a.is_local, a.created_at,
       coalesce(p.hostname, '')::text AS hostname,
       coalesce(p.os, '')::text AS os,
       coalesce(p.version, '')::text AS version,
       p.last_seen_at,
       (coalesce(p.online, false) AND p.last_seen_at > now() - make_interval(secs => sqlc.arg(offline_after_secs)::float8))::boolean AS online
FROM agents a
LEFT JOIN agent_presence p ON p.agent_id = a.id
WHERE a.id = sqlc.arg(id) AND a.user_id = sqlc.arg(user_id) AND a.revoked_at IS NULL;

-- name: GetAgentPublicKey :one
SELECT public_key FROM agents WHERE id = $1 AND revoked_at IS NULL;

-- name: GetAgentPublicKeys :many
SELECT id, public_key FROM agents WHERE id = ANY(sqlc.arg(ids)::uuid[]) AND revoked_at IS NULL;
