-- name: CreateNotificationChannel :one
INSERT INTO notification_channels (id, user_id, name, type, enabled, address, url_enc, url_display, secret_enc)
VALUES ($1, $2, $3, $4, $5, sqlc.narg(address), sqlc.narg(url_enc), sqlc.narg(url_display), sqlc.narg(secret_enc))
RETURNING *;

-- name: ListNotificationChannels :many
SELECT * FROM notification_channels WHERE user_id = $1 ORDER BY created_at, id;

-- name: GetNotificationChannel :one
SELECT * FROM notification_channels WHERE id = $1 AND user_id = $2;

-- name: GetNotificationChannelByID :one
SELECT * FROM notification_channels WHERE id = $1;

-- name: UpdateNotificationChannel :one
UPDATE notification_channels
SET name = $3, enabled = $4, address = sqlc.narg(address), url_enc = sqlc.narg(url_enc),
    url_display = sqlc.narg(url_display), secret_enc = sqlc.narg(secret_enc), updated_at = now()
WHERE id = $1 AND user_id = $2
RETURNING *;

-- name: DeleteNotificationChannel :one
DELETE FROM notification_channels WHERE id = $1 AND user_id = $2 RETURNING id;

-- name: ChannelDelivered :exec
UPDATE notification_channels SET last_success_at = sqlc.arg(at) WHERE id = $1;

-- name: ChannelFailed :exec
UPDATE notification_channels SET last_error = sqlc.arg(error), last_error_at = sqlc.arg(at) WHERE id = $1;

-- name: GetUserNotifyRules :one
SELECT notify_rules FROM users WHERE id = $1;

-- name: SetUserNotifyRules :exec
UPDATE users SET notify_rules = $2 WHERE id = $1;

-- name: SetBackupJobNotifyRules :exec
UPDATE backup_jobs SET notify_rules = sqlc.narg(notify_rules), updated_at = now() WHERE id = $1 AND user_id = $2;

-- NotifyBackupContext is what a notification about backup run id says, if
-- the run was sent to agent_id (an agent's event about another agent's
-- run names nothing); rules are the job's own, else the user's.
-- name: NotifyBackupContext :one
SELECT h.id, h.user_id, h.backup_job_id, h.database_id, h.status, h.queued_at, h.completed_at,
       h.duration_ms, h.file_size, h.raw_size, h.file_name, h.storage_type, h.error_message,
       h.is_encrypted, h.verification_status, h.verified_at,
       coalesce(j.name, '')::text AS job_name,
       coalesce(d.name, '')::text AS database_name,
       coalesce(d.type, '')::text AS engine,
       coalesce(j.notify_rules, u.notify_rules)::jsonb AS rules
FROM backup_history h
JOIN users u ON u.id = h.user_id
LEFT JOIN backup_jobs j ON j.id = h.backup_job_id
LEFT JOIN databases d ON d.id = h.database_id
WHERE h.id = sqlc.arg(id) AND h.agent_id = sqlc.arg(agent_id);

-- name: NotifyRestoreContext :one
SELECT r.id, r.user_id, r.backup_history_id, r.target_database_id, r.status, r.duration_ms, r.error_message,
       r.queued_at, r.completed_at, h.backup_job_id, h.file_size,
       coalesce(j.name, '')::text AS job_name,
       coalesce(d.name, '')::text AS database_name,
       coalesce(d.type, '')::text AS engine,
       coalesce(j.notify_rules, u.notify_rules)::jsonb AS rules
FROM restore_history r
JOIN backup_history h ON h.id = r.backup_history_id
JOIN users u ON u.id = r.user_id
LEFT JOIN backup_jobs j ON j.id = h.backup_job_id
LEFT JOIN databases d ON d.id = r.target_database_id
WHERE r.id = sqlc.arg(id) AND r.agent_id = sqlc.arg(agent_id);

-- EnqueueDeliveries adds one delivery of an event to each enabled channel
-- of user_id (email channels only when with_email), once: a delivery of
-- the same event_key to a channel already there is kept as it is.
-- name: EnqueueDeliveries :execrows
INSERT INTO notification_deliveries (channel_id, user_id, event_key, kind, payload)
SELECT c.id, c.user_id, sqlc.arg(event_key), sqlc.arg(kind), sqlc.arg(payload)
FROM notification_channels c
WHERE c.user_id = sqlc.arg(user_id) AND c.enabled AND (c.type <> 'email' OR sqlc.arg(with_email)::boolean)
ON CONFLICT (channel_id, event_key) DO NOTHING;

-- ClaimDeliveries holds, until lease_secs from now (the database's
-- clock, the same for every replica), the first due delivery of up to max
-- channels of the given types that have none held: a channel that is slow
-- or down holds only its own queue. Each channel's row is locked while
-- claiming, so replicas never hold two deliveries of one channel. Channels
-- whose due deliveries were tried fewer times go first, so a target that
-- keeps failing or hanging waits behind the healthy ones.
-- name: ClaimDeliveries :many
WITH ch AS (
    SELECT c.id FROM notification_channels c
    WHERE c.type = ANY(sqlc.arg(types)::text[])
      AND EXISTS (SELECT 1 FROM notification_deliveries x
                  WHERE x.channel_id = c.id AND x.status IN ('pending', 'sending') AND x.next_attempt_at <= now())
      AND NOT EXISTS (SELECT 1 FROM notification_deliveries y
                      WHERE y.channel_id = c.id AND y.status = 'sending' AND y.next_attempt_at > now())
    ORDER BY (SELECT min(x.attempts) FROM notification_deliveries x
              WHERE x.channel_id = c.id AND x.status IN ('pending', 'sending') AND x.next_attempt_at <= now()), c.id
    LIMIT sqlc.arg(max)
    FOR UPDATE OF c SKIP LOCKED
), due AS (
    SELECT DISTINCT ON (x.channel_id) x.id
    FROM notification_deliveries x JOIN ch ON ch.id = x.channel_id
    WHERE x.status IN ('pending', 'sending') AND x.next_attempt_at <= now()
    ORDER BY x.channel_id, x.id
)
UPDATE notification_deliveries d
SET status = 'sending', attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => sqlc.arg(lease_secs)::float8)
FROM due
WHERE d.id = due.id AND d.status IN ('pending', 'sending') AND d.next_attempt_at <= now()
RETURNING d.*;

-- The outcomes of a claimed delivery; each applies only while the claim
-- of that attempt holds (a dispatcher whose lease ran out and was taken
-- over changes nothing).

-- name: DeliverySent :execrows
UPDATE notification_deliveries SET status = 'sent', sent_at = now(), last_error = NULL
WHERE id = $1 AND status = 'sending' AND attempts = sqlc.arg(attempt);

-- name: DeliveryRetry :execrows
UPDATE notification_deliveries
SET status = 'pending', next_attempt_at = now() + make_interval(secs => sqlc.arg(delay_secs)::float8), last_error = sqlc.arg(error)
WHERE id = $1 AND status = 'sending' AND attempts = sqlc.arg(attempt);

-- name: DeliveryFailed :execrows
UPDATE notification_deliveries SET status = 'failed', last_error = sqlc.arg(error)
WHERE id = $1 AND status = 'sending' AND attempts = sqlc.arg(attempt);

-- PruneDeliveries forgets sent and failed deliveries older than the
-- given age (the channel keeps its last success and error).
-- name: PruneDeliveries :execrows
DELETE FROM notification_deliveries
WHERE status IN ('sent', 'failed') AND created_at < now() - make_interval(secs => sqlc.arg(older_than_secs)::float8);

-- name: ListChannelDeliveries :many
SELECT * FROM notification_deliveries WHERE channel_id = $1 ORDER BY id DESC LIMIT sqlc.arg(max);

-- BreachRPO records, once, each active job whose rules set rpoHours and
-- whose newest good backup (job_rpo; the job's creation when it has none)
-- is older than that at now.
-- name: BreachRPO :many
INSERT INTO alert_states (kind, object_id, user_id, breached_at)
SELECT 'rpo', r.job_id, r.user_id, sqlc.arg(now)::timestamptz
FROM job_rpo r
WHERE r.is_active AND r.hours > 0
  AND coalesce(r.last_good_at, r.created_at) < sqlc.arg(now)::timestamptz - make_interval(hours => r.hours)
ON CONFLICT (kind, object_id) DO NOTHING
RETURNING object_id, user_id, breached_at;

-- RecoverRPO ends the breach of each job that is no longer breached as
-- BreachRPO says. watched is false when that is because the rule is gone
-- or the job was paused or deleted (nothing recovered: no announcement).
-- name: RecoverRPO :many
DELETE FROM alert_states a
WHERE a.kind = 'rpo' AND NOT EXISTS (
    SELECT 1 FROM job_rpo r
    WHERE r.job_id = a.object_id AND r.is_active AND r.hours > 0
      AND coalesce(r.last_good_at, r.created_at) < sqlc.arg(now)::timestamptz - make_interval(hours => r.hours)
)
RETURNING a.object_id, a.user_id, a.breached_at,
    EXISTS (SELECT 1 FROM job_rpo r WHERE r.job_id = a.object_id AND r.is_active AND r.hours > 0) AS watched;

-- name: RPOAlertContext :one
SELECT j.id, j.name, j.user_id, coalesce(d.name, '')::text AS database_name, coalesce(d.type, '')::text AS engine,
       r.hours::int AS hours,
       -- Unix seconds; 0 when the job has had no good backup.
       coalesce(extract(epoch FROM r.last_good_at), 0)::float8 AS last_good_unix
FROM backup_jobs j
JOIN job_rpo r ON r.job_id = j.id
LEFT JOIN databases d ON d.id = j.database_id
WHERE j.id = $1;

-- BreachAgentOffline records, once, each agent not heard from (since its
-- enrollment, if never) for its user's agentOfflineMinutes at now.
-- name: BreachAgentOffline :many
INSERT INTO alert_states (kind, object_id, user_id, breached_at)
SELECT 'agent_offline', a.id, a.user_id, sqlc.arg(now)::timestamptz
FROM agents a
JOIN users u ON u.id = a.user_id
LEFT JOIN agent_presence p ON p.agent_id = a.id
WHERE a.revoked_at IS NULL AND rule_int(u.notify_rules, 'agentOfflineMinutes') > 0
  AND coalesce(p.last_seen_at, a.created_at)
      < sqlc.arg(now)::timestamptz - make_interval(mins => rule_int(u.notify_rules, 'agentOfflineMinutes'))
ON CONFLICT (kind, object_id) DO NOTHING
RETURNING object_id, user_id, breached_at;

-- RecoverAgentOffline ends the breach of each agent heard from (online)
-- since it began, revoked, or whose user dropped the rule. watched is
-- false for the last two (nothing recovered: no announcement).
-- name: RecoverAgentOffline :many
DELETE FROM alert_states s
WHERE s.kind = 'agent_offline' AND NOT EXISTS (
    SELECT 1 FROM agents a
    JOIN users u ON u.id = a.user_id
    LEFT JOIN agent_presence p ON p.agent_id = a.id
    WHERE a.id = s.object_id AND a.revoked_at IS NULL
      AND rule_int(u.notify_rules, 'agentOfflineMinutes') > 0
      AND NOT (coalesce(p.online, false) AND p.last_seen_at > s.breached_at)
)
RETURNING s.object_id, s.user_id, s.breached_at,
    EXISTS (SELECT 1 FROM agents a JOIN users u ON u.id = a.user_id
            WHERE a.id = s.object_id AND a.revoked_at IS NULL
              AND rule_int(u.notify_rules, 'agentOfflineMinutes') > 0) AS watched;

-- name: AgentAlertContext :one
SELECT a.id, a.name, a.user_id, coalesce(p.hostname, '')::text AS hostname, p.last_seen_at,
       rule_int(u.notify_rules, 'agentOfflineMinutes')::int AS minutes
FROM agents a
JOIN users u ON u.id = a.user_id
LEFT JOIN agent_presence p ON p.agent_id = a.id
WHERE a.id = $1;

-- name: CountNotificationChannels :one
SELECT count(*) FROM notification_channels WHERE user_id = $1;
