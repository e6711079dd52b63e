-- +goose Up
-- Where a user's notifications go. An email channel sends to address
-- through the control plane's SMTP server; webhook, slack and discord
-- channels POST to a URL that is itself a secret (Slack's and Discord's
-- carry their token), sealed by the vault and bound to (notification_channels,
-- url, id); url_display is its scheme and host only. A webhook channel
-- signs its bodies with a secret sealed likewise (…, secret, id).
CREATE TABLE notification_channels (
    id              uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    type            text        NOT NULL CHECK (type IN ('email', 'webhook', 'slack', 'discord')),
    enabled         boolean     NOT NULL DEFAULT true,
    address         text,
    url_enc         bytea,
    url_display     text,
    secret_enc      bytea,
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'email') = (address IS NOT NULL)),
    CHECK ((type = 'email') = (url_enc IS NULL)),
    CHECK ((type = 'webhook') = (secret_enc IS NOT NULL))
);
CREATE INDEX notification_channels_user_idx ON notification_channels (user_id, created_at);

-- Which events notify: a user's default (users.notify_rules) and a job's
-- own (backup_jobs.notify_rules, NULL: the user's default), both JSON of
-- notify.Rules.
ALTER TABLE users ADD COLUMN notify_rules jsonb NOT NULL
    DEFAULT '{"backupFailed":true,"backupSkipped":true,"backupSucceeded":true,"verificationFailed":true,"restoreFinished":false}';
ALTER TABLE backup_jobs ADD COLUMN notify_rules jsonb;

-- The seed mails each user's own address: every user starts with an email
-- channel to it, which they may edit, disable or delete.
INSERT INTO notification_channels (id, user_id, name, type, address)
SELECT gen_random_uuid(), id, 'My email', 'email', email FROM users;

-- One notification of one event to one channel. event_key names the event
-- (for example "backup.failed:<run id>"): an event delivered again by the
-- stream finds its row and adds none. A delivery is pending until sent,
-- sending while a dispatcher holds it (until next_attempt_at; a dispatcher
-- that died releases it then), sent, or failed after its last attempt.
CREATE TABLE notification_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id      uuid        NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL,
    event_key       text        NOT NULL,
    kind            text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (channel_id, event_key)
);
CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'sending');

-- Alerts the control plane computes from its tables ("no successful backup
-- for N hours", "agent offline for N minutes"): one row per watched object
-- while breached, so that a breach and its recovery are each announced once.
CREATE TABLE alert_states (
    kind        text        NOT NULL CHECK (kind IN ('rpo', 'agent_offline')),
    object_id   uuid        NOT NULL,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    breached_at timestamptz NOT NULL,
    PRIMARY KEY (kind, object_id)
);

-- rule_int is a whole-number rule of a rules document (notify.Rules), 0
-- when it is absent or not a number, so that one odd document cannot stop
-- the alerts of everyone.
-- +goose StatementBegin
CREATE FUNCTION rule_int(rules jsonb, name text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(rules -> name) = 'number'
                THEN least(greatest(trunc((rules ->> name)::numeric), 0), 1000000)::integer
                ELSE 0 END
$$;
-- +goose StatementEnd

-- Each job's recovery point objective (rpoHours of its rules, 0: none)
-- and its newest good backup: successful (or since expired), not deleted,
-- and not failed verification.
CREATE VIEW job_rpo AS
SELECT j.id AS job_id, j.user_id, j.is_active, j.created_at,
       rule_int(coalesce(j.notify_rules, u.notify_rules), 'rpoHours') AS hours,
       (SELECT max(h.completed_at) FROM backup_history h
        WHERE h.backup_job_id = j.id AND h.status IN ('success', 'expired')
          AND h.verification_status <> 'FAILED' AND h.deleted_at IS NULL) AS last_good_at
FROM backup_jobs j
JOIN users u ON u.id = j.user_id;

-- The audit consumer's projection of rahat.audit.> events.
CREATE TABLE audit_log (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL,
    at          timestamptz NOT NULL,
    action      text        NOT NULL,
    object_type text        NOT NULL DEFAULT '',
    object_id   text        NOT NULL DEFAULT '',
    ip          text        NOT NULL DEFAULT '',
    user_agent  text        NOT NULL DEFAULT '',
    outcome     text        NOT NULL CHECK (outcome IN ('success', 'failure')),
    status_code integer     NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    request_id  text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, at DESC, id);

-- +goose Down
DROP TABLE audit_log;
DROP VIEW job_rpo;
DROP FUNCTION rule_int(jsonb, text);
DROP TABLE alert_states;
DROP TABLE notification_deliveries;
ALTER TABLE backup_jobs DROP COLUMN notify_rules;
ALTER TABLE users DROP COLUMN notify_rules;
DROP TABLE notification_channels;
