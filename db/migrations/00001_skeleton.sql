-- +goose Up
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    name          text        NOT NULL DEFAULT '',
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Refresh tokens rotate: each use marks the row used and issues a new one in the
-- same family. Presenting a used token again revokes the whole family.
CREATE TABLE refresh_tokens (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id  uuid        NOT NULL,
    token_hash bytea       NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE TABLE enrollment_tokens (
    token_hash bytea       PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id               uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name             text        NOT NULL,
    public_key       text        NOT NULL,
    nats_secret_hash bytea       NOT NULL,
    is_local         boolean     NOT NULL DEFAULT false,
    revoked_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_user_idx ON agents (user_id) WHERE revoked_at IS NULL;

-- Projection of rahat.evt.<agent>.agent.* events; written only by the projector.
-- No foreign key: replaying the event stream must work for agents deleted since.
CREATE TABLE agent_presence (
    agent_id     uuid        PRIMARY KEY,
    online       boolean     NOT NULL,
    last_seen_at timestamptz NOT NULL,
    hostname     text        NOT NULL DEFAULT '',
    os           text        NOT NULL DEFAULT '',
    version      text        NOT NULL DEFAULT ''
);

CREATE TABLE databases (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id      uuid        REFERENCES agents (id) ON DELETE SET NULL,
    name          text        NOT NULL,
    type          text        NOT NULL CHECK (type IN ('postgresql', 'mysql', 'mongodb', 'mssql')),
    host          text        NOT NULL,
    port          integer     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username      text        NOT NULL,
    -- vault ciphertext bound to (databases, password, id); NULL when no password.
    password_enc  bytea,
    database_name text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX databases_user_idx ON databases (user_id, created_at);

-- +goose Down
DROP TABLE databases;
DROP TABLE agent_presence;
DROP TABLE agents;
DROP TABLE enrollment_tokens;
DROP TABLE refresh_tokens;
DROP TABLE users;
