-- Routines: the whole domain. Constraints carry the guarantees (see docs/architecture in README).

CREATE TABLE companies (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'terminated')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_company ON agents (company_id, created_at);

-- A board operator (a person) belongs to one company; their tokens act for it.
CREATE TABLE board_memberships (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX board_memberships_company ON board_memberships (company_id);

-- Bearer tokens, stored only as SHA-256 of the random token.
CREATE TABLE api_tokens (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash           bytea NOT NULL UNIQUE,
    kind                 text NOT NULL CHECK (kind IN ('instance_admin', 'board', 'agent')),
    agent_id             uuid REFERENCES agents (id) ON DELETE CASCADE,
    board_membership_id  uuid REFERENCES board_memberships (id) ON DELETE CASCADE,
    name                 text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    revoked_at           timestamptz,
    CHECK ((kind = 'agent') = (agent_id IS NOT NULL)),
    CHECK ((kind = 'board') = (board_membership_id IS NOT NULL))
);

CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_company ON projects (company_id, created_at);

CREATE TABLE goals (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX goals_company ON goals (company_id, created_at);

CREATE TABLE routines (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    title               text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description         text,
    assignee_agent_id   uuid NOT NULL REFERENCES agents (id),
    project_id          uuid NOT NULL REFERENCES projects (id),
    goal_id             uuid REFERENCES goals (id),
    parent_issue_id     uuid,
    priority            text NOT NULL DEFAULT 'medium'
                        CHECK (priority IN ('critical', 'high', 'medium', 'low')),
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'paused', 'archived')),
    concurrency_policy  text NOT NULL DEFAULT 'coalesce_if_active'
                        CHECK (concurrency_policy IN ('coalesce_if_active', 'skip_if_active', 'always_enqueue')),
    catch_up_policy     text NOT NULL DEFAULT 'skip_missed'
                        CHECK (catch_up_policy IN ('skip_missed', 'enqueue_missed_with_cap')),
    last_triggered_at   timestamptz,
    last_enqueued_at    timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routines_company ON routines (company_id, created_at);

CREATE TABLE issues (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id             uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    title                  text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description            text,
    status                 text NOT NULL DEFAULT 'todo'
                           CHECK (status IN ('backlog', 'todo', 'in_progress', 'in_review', 'blocked', 'done', 'cancelled')),
    priority               text NOT NULL DEFAULT 'medium'
                           CHECK (priority IN ('critical', 'high', 'medium', 'low')),
    project_id             uuid REFERENCES projects (id),
    goal_id                uuid REFERENCES goals (id),
    parent_issue_id        uuid REFERENCES issues (id),
    assignee_agent_id      uuid REFERENCES agents (id),
    origin_kind            text NOT NULL DEFAULT 'manual' CHECK (origin_kind IN ('manual', 'routine_execution')),
    origin_id              uuid,
    origin_run_id          uuid,
    payload                jsonb NOT NULL DEFAULT '{}',
    coalesced_fire_count   integer NOT NULL DEFAULT 0,
    coalesced_fires        jsonb NOT NULL DEFAULT '[]',
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK ((origin_kind = 'routine_execution') = (origin_id IS NOT NULL))
);
CREATE INDEX issues_company ON issues (company_id, created_at DESC);
CREATE INDEX issues_assignee ON issues (assignee_agent_id, created_at DESC);
-- The active execution issue of a routine (DESIGN: open statuses) is found through this index.
CREATE INDEX issues_open_execution ON issues (origin_id, created_at)
    WHERE origin_kind = 'routine_execution'
      AND status IN ('backlog', 'todo', 'in_progress', 'in_review', 'blocked');
ALTER TABLE routines ADD CONSTRAINT routines_parent_issue_fk
    FOREIGN KEY (parent_issue_id) REFERENCES issues (id);

CREATE TABLE routine_triggers (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    routine_id         uuid NOT NULL REFERENCES routines (id) ON DELETE CASCADE,
    company_id         uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    kind               text NOT NULL CHECK (kind IN ('schedule', 'webhook', 'api')),
    label              text CHECK (length(label) <= 120),
    enabled            boolean NOT NULL DEFAULT true,
    cron_expression    text,
    timezone           text,
    -- NULL while the trigger cannot fire (disabled, routine paused or archived).
    next_run_at        timestamptz,
    last_fired_at      timestamptz,
    public_id          text UNIQUE CHECK (public_id ~ '^[0-9a-f]{24}$'),
    signing_mode       text CHECK (signing_mode IN ('bearer', 'hmac_sha256', 'github_hmac', 'standard_webhooks')),
    replay_window_sec  integer CHECK (replay_window_sec BETWEEN 30 AND 86400),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'schedule') = (cron_expression IS NOT NULL AND timezone IS NOT NULL)),
    CHECK ((kind = 'webhook') = (public_id IS NOT NULL AND signing_mode IS NOT NULL AND replay_window_sec IS NOT NULL))
);
CREATE INDEX routine_triggers_routine ON routine_triggers (routine_id, created_at);
-- A tick costs O(due): only enabled schedule triggers that can fire are in this index.
CREATE INDEX routine_triggers_due ON routine_triggers (next_run_at)
    WHERE kind = 'schedule' AND enabled AND next_run_at IS NOT NULL;

-- Webhook signing secrets, AES-256-GCM encrypted. Rotation with grace keeps the old row until expires_at.
CREATE TABLE webhook_secrets (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    trigger_id  uuid NOT NULL REFERENCES routine_triggers (id) ON DELETE CASCADE,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX webhook_secrets_trigger ON webhook_secrets (trigger_id, created_at DESC);

CREATE TABLE routine_runs (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    routine_id             uuid NOT NULL REFERENCES routines (id) ON DELETE CASCADE,
    company_id             uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    trigger_id             uuid REFERENCES routine_triggers (id) ON DELETE SET NULL,
    source                 text NOT NULL CHECK (source IN ('schedule', 'webhook', 'api', 'manual')),
    status                 text NOT NULL DEFAULT 'received'
                           CHECK (status IN ('received', 'issue_created', 'coalesced', 'skipped', 'failed', 'completed')),
    triggered_at           timestamptz NOT NULL DEFAULT now(),
    scheduled_for          timestamptz,
    payload                jsonb NOT NULL DEFAULT '{}',
    idempotency_key        text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    delivery_key           text CHECK (length(delivery_key) <= 300),
    linked_issue_id        uuid REFERENCES issues (id) ON DELETE SET NULL,
    coalesced_into_run_id  uuid REFERENCES routine_runs (id) ON DELETE SET NULL,
    failure_reason         text,
    decided_at             timestamptz,
    completed_at           timestamptz,
    CONSTRAINT routine_runs_slot UNIQUE (trigger_id, scheduled_for)
);
CREATE UNIQUE INDEX routine_runs_idempotency ON routine_runs (routine_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX routine_runs_delivery ON routine_runs (trigger_id, delivery_key)
    WHERE delivery_key IS NOT NULL;
CREATE INDEX routine_runs_history ON routine_runs (routine_id, triggered_at DESC);
-- The sweeper looks only at undecided runs.
CREATE INDEX routine_runs_received ON routine_runs (triggered_at) WHERE status = 'received';
ALTER TABLE issues ADD CONSTRAINT issues_origin_run_fk
    FOREIGN KEY (origin_run_id) REFERENCES routine_runs (id) ON DELETE SET NULL;
