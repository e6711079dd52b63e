-- name: CreateUser :one
INSERT INTO users (id, email, name, password_hash)
VALUES ($1, $2, $3, $4)
RETURNING *;

-- name: GetUserByEmail :one
SELECT * FROM users WHERE lower(email) = lower(sqlc.arg(email));

-- name: GetUser :one
SELECT * FROM users WHERE id = $1;

-- name: FirstUser :one
SELECT * FROM users ORDER BY created_at, id LIMIT 1;
