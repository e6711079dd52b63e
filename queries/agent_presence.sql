-- ApplyAgentPresence records a presence event. It only moves forward in time,
-- so duplicated or out-of-order events change nothing.
-- name: ApplyAgentPresence :exec
INSERT INTO agent_presence AS p (agent_id, online, last_seen_at, hostname, os, version)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (agent_id) DO UPDATE
SET online = EXCLUDED.online,
    last_seen_at = EXCLUDED.last_seen_at,
    hostname = EXCLUDED.hostname,
    os = EXCLUDED.os,
    version = EXCLUDED.version
WHERE p.last_seen_at < EXCLUDED.last_seen_at
   OR (p.last_seen_at = EXCLUDED.last_seen_at AND p.online AND NOT EXCLUDED.online);
