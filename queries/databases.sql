-- name: CreateDatabase :one
INSERT INTO databases (id, user_id, agent_id, name, type, host, port, username, password_enc, database_name,
    auth_source, tls, replica_set, instance, encrypt)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
RETURNING *;

-- name: GetDatabase :one
SELECT * FROM databases WHERE id = $1 AND user_id = $2;

-- name: ListDatabases :many
SELECT * FROM databases WHERE user_id = $1 ORDER BY created_at, id;

-- name: UpdateDatabase :one
UPDATE databases
SET agent_id = $3, name = $4, type = $5, host = $6, port = $7, username = $8,
    password_enc = $9, database_name = $10, auth_source = $11, tls = $12, replica_set = $13,
    instance = $14, encrypt = $15, updated_at = now()
WHERE id = $1 AND user_id = $2
RETURNING *;

-- name: DeleteDatabase :one
DELETE FROM databases WHERE id = $1 AND user_id = $2 RETURNING id;

-- name: GetDatabasesByIDs :many
SELECT * FROM databases WHERE id = ANY(sqlc.arg(ids)::uuid[]);
