-- Queries of the Prometheus collector (package metrics); each reads every
-- user's rows: /metrics is the operator's.

-- name: MetricBackupsByStatus :many
SELECT coalesce(d.type, 'unknown')::text AS engine, h.status, count(*)::bigint AS n
FROM backup_history h LEFT JOIN databases d ON d.id = h.database_id
WHERE h.deleted_at IS NULL
GROUP BY 1, 2;

-- MetricBackupHistogram counts successful backups per engine whose
-- duration (seconds) and size (bytes) are at most each bound.
-- name: MetricBackupDurations :many
SELECT coalesce(d.type, 'unknown')::text AS engine, b.bound::float8 AS bound,
       count(*) FILTER (WHERE h.duration_ms::float8 / 1000 <= b.bound)::bigint AS n
FROM backup_history h LEFT JOIN databases d ON d.id = h.database_id
CROSS JOIN unnest(sqlc.arg(bounds)::float8[]) AS b(bound)
WHERE h.status IN ('success', 'expired') AND h.duration_ms IS NOT NULL AND h.file_size IS NOT NULL AND h.deleted_at IS NULL
GROUP BY 1, 2;

-- name: MetricBackupSizes :many
SELECT coalesce(d.type, 'unknown')::text AS engine, b.bound::float8 AS bound,
       count(*) FILTER (WHERE h.file_size::float8 <= b.bound)::bigint AS n
FROM backup_history h LEFT JOIN databases d ON d.id = h.database_id
CROSS JOIN unnest(sqlc.arg(bounds)::float8[]) AS b(bound)
WHERE h.status IN ('success', 'expired') AND h.duration_ms IS NOT NULL AND h.file_size IS NOT NULL AND h.deleted_at IS NULL
GROUP BY 1, 2;

-- name: MetricBackupTotals :many
SELECT coalesce(d.type, 'unknown')::text AS engine, count(*)::bigint AS n,
       (coalesce(sum(h.duration_ms), 0)::float8 / 1000)::float8 AS duration_sum,
       coalesce(sum(h.file_size), 0)::float8 AS size_sum
FROM backup_history h LEFT JOIN databases d ON d.id = h.database_id
WHERE h.status IN ('success', 'expired') AND h.duration_ms IS NOT NULL AND h.file_size IS NOT NULL AND h.deleted_at IS NULL
GROUP BY 1;

-- name: MetricLastSuccess :many
SELECT j.id, j.name, j.user_id, coalesce(d.type, 'unknown')::text AS engine,
       max(h.completed_at)::timestamptz AS last_success
FROM backup_jobs j
LEFT JOIN databases d ON d.id = j.database_id
JOIN backup_history h ON h.backup_job_id = j.id AND h.status IN ('success', 'expired') AND h.deleted_at IS NULL
GROUP BY j.id, j.name, j.user_id, d.type;

-- name: MetricAgents :many
SELECT a.id, a.name,
       (coalesce(p.online, false) AND p.last_seen_at > now() - make_interval(secs => sqlc.arg(offline_after_secs)::float8))::boolean AS online
FROM agents a LEFT JOIN agent_presence p ON p.agent_id = a.id
WHERE a.revoked_at IS NULL;

-- name: MetricDeliveries :many
SELECT c.type, d.status, count(*)::bigint AS n
FROM notification_deliveries d JOIN notification_channels c ON c.id = d.channel_id
GROUP BY 1, 2;
