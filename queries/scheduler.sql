-- The scheduler's queries. It keeps every scheduled job in memory and
-- decides each slot under the job's row lock, so any number of scheduler
-- replicas handle each slot once.

-- ScheduledJobs is every job the scheduler fires: active and not manual.
-- name: ScheduledJobs :many
SELECT id, user_id, schedule_type, cron_expression, advanced_schedule_config, timezone, updated_at, scheduled_through
FROM backup_jobs
WHERE is_active AND schedule_type <> 'manual';

-- ChangedJobs is every job changed after since, paused and manual ones
-- included, oldest change first.
-- name: ChangedJobs :many
SELECT id, user_id, schedule_type, cron_expression, advanced_schedule_config, timezone, updated_at, is_active, scheduled_through
FROM backup_jobs
WHERE updated_at > sqlc.arg(since)
ORDER BY updated_at;

-- DueJobs returns what deciding a slot needs of the given jobs, with
-- their database's assigned agent.
-- name: DueJobs :many
SELECT j.id, j.user_id, j.database_id, j.schedule_type, j.cron_expression, j.advanced_schedule_config,
       j.timezone, j.storage_type, j.cloud_storage_id, j.compression, j.is_encrypted, j.is_active,
       j.scheduled_through, j.updated_at, d.agent_id AS database_agent_id, d.updated_at AS database_updated_at
FROM backup_jobs j
JOIN databases d ON d.id = j.database_id
WHERE j.id = ANY(sqlc.arg(ids)::uuid[]);

-- JobsWithAgent returns the given jobs whole, with their database's
-- assigned agent: what building their commands needs.
-- name: JobsWithAgent :many
SELECT sqlc.embed(j), d.agent_id AS database_agent_id, d.updated_at AS database_updated_at
FROM backup_jobs j
JOIN databases d ON d.id = j.database_id
WHERE j.id = ANY(sqlc.arg(ids)::uuid[]);

-- ClaimSlots moves each job's scheduled_through from the value read
-- (olds) to the latest slot handled (news), only where it still holds
-- the value read: the jobs returned are this scheduler's to decide; a job
-- another replica claimed first is not returned. Each comes with its run
-- still queued or running (the nil UUID when none). The row locks taken here order the
-- decision against "run now" until commit.
-- name: ClaimSlots :many
UPDATE backup_jobs j SET scheduled_through = u.new
FROM (SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(olds)::timestamptz[]) AS old,
             unnest(sqlc.arg(news)::timestamptz[]) AS new) AS u
WHERE j.id = u.id AND j.scheduled_through = u.old
RETURNING j.id, coalesce((SELECT h.id FROM backup_history h
                          WHERE h.backup_job_id = j.id AND h.status IN ('queued', 'running') LIMIT 1),
                         '00000000-0000-0000-0000-000000000000')::uuid AS active_run;

-- ClaimPrepared is ClaimSlots for jobs read ahead of their slot: it
-- claims only jobs still as they were read (updated_at unchanged) and
-- returns their database's updated_at, so a command built ahead is used
-- only when the database is unchanged too.
-- name: ClaimPrepared :many
UPDATE backup_jobs j SET scheduled_through = u.new
FROM (SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(olds)::timestamptz[]) AS old,
             unnest(sqlc.arg(news)::timestamptz[]) AS new, unnest(sqlc.arg(updateds)::timestamptz[]) AS updated) AS u
WHERE j.id = u.id AND j.scheduled_through = u.old AND j.updated_at = u.updated
RETURNING j.id, coalesce((SELECT h.id FROM backup_history h
                          WHERE h.backup_job_id = j.id AND h.status IN ('queued', 'running') LIMIT 1),
                         '00000000-0000-0000-0000-000000000000')::uuid AS active_run,
          (SELECT d.updated_at FROM databases d WHERE d.id = j.database_id)::timestamptz AS database_updated_at;

-- AgentsOfUsers is the active agents of the given users with their
-- presence, in each user's agent order (ListAgents').
-- name: AgentsOfUsers :many
SELECT a.id, a.user_id, a.name,
       (coalesce(p.online, false) AND p.last_seen_at > now() - make_interval(secs => sqlc.arg(offline_after_secs)::float8))::boolean AS online
FROM agents a
LEFT JOIN agent_presence p ON p.agent_id = a.id
WHERE a.user_id = ANY(sqlc.arg(user_ids)::uuid[]) AND a.revoked_at IS NULL
ORDER BY a.user_id, a.created_at, a.id;

-- DueVerifications is the jobs whose scheduled verification is due at
-- now, oldest slot first.
-- name: DueVerifications :many
SELECT id, user_id, verify_schedule, timezone, verify_next_at
FROM backup_jobs
WHERE verify_next_at <= sqlc.arg(now) AND verify_schedule IS NOT NULL
ORDER BY verify_next_at
LIMIT sqlc.arg(max_jobs);

-- ClaimVerifySlot moves a job's verify_next_at from the slot read (old)
-- to the next one; it changes no row when another replica moved it first.
-- name: ClaimVerifySlot :execrows
UPDATE backup_jobs SET verify_next_at = sqlc.narg(next)
WHERE id = $1 AND verify_next_at = sqlc.arg(old);

-- NewestSuccessfulBackup is a job's newest successful backup.
-- name: NewestSuccessfulBackup :one
SELECT * FROM backup_history
WHERE backup_job_id = $1 AND status = 'success'
ORDER BY completed_at DESC, id DESC
LIMIT 1;
