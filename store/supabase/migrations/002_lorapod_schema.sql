-- lorapod 002: lorapod's tables in a schema of their own, `lorapod`, beside the web app's in `public`;
-- read-only views in the shapes the web app's pages use; the private `model-artifacts` storage bucket and
-- its policies. See docs/supabase.md.
--
-- The project already belongs to the Bright Run web app, whose `public` tables share lorapod's names
-- (training_jobs, model_artifacts) in other shapes. So nothing here creates or alters an object outside the
-- `lorapod` schema, apart from lorapod's bucket and its policies on storage.objects.
--
-- Looks before it leaps: the first block checks for conflicts and names each one; any one of them stops the
-- script before it changes anything. One transaction, and idempotent: running it again changes nothing.
--
-- Upgrade from 001: tables in `public` that carry lorapod's marker (a comment starting `lorapod`, which 001
-- wrote) and all of 001's columns are moved here, rows included. A table without the marker stays where it
-- is, whatever its name or columns.
--
-- Every object lorapod makes carries the marker; ../rollback/002_lorapod_schema.sql drops only those.

BEGIN;

-- ---------------------------------------------------------------------------------------------------
-- Conflicts, before anything changes
-- ---------------------------------------------------------------------------------------------------

DO $$
DECLARE
    tables text[] := ARRAY['training_jobs', 'job_attempts', 'model_artifacts', 'training_metrics_history',
                           'job_events'];
    -- 001's columns: with the marker, what proves a table in public is lorapod 001's.
    columns_001 jsonb := '{
        "training_jobs": ["id", "name", "training_file_id", "status", "stage", "base_model", "preset",
            "hyperparameters", "resources", "pod_id", "current_step", "total_steps", "current_epoch",
            "started_at", "completed_at", "estimated_completion_at", "estimated_cost_usd", "actual_cost_usd",
            "gpu_hours", "lora_artifact_path", "error_message", "error_category", "retry_count",
            "parent_job_id", "created_by", "created_at", "updated_at", "spec", "provider", "gpu_type",
            "workdir", "error_hint", "last_event_seq", "lease_owner", "lease_expires_at", "sync_xid"],
        "job_attempts": ["id", "job_id", "number", "provider", "handle", "rate_usd_per_hour", "gpu_count",
            "started_at", "ended_at", "cost_usd", "outcome", "sync_xid"],
        "model_artifacts": ["id", "job_id", "artifact_type", "storage_path", "size_bytes", "sha256",
            "base_model", "lora_config", "validation_loss", "perplexity", "created_at", "sync_xid"],
        "training_metrics_history": ["id", "job_id", "step", "epoch", "loss", "eval_loss", "learning_rate",
            "grad_norm", "tokens_per_second", "gpu_memory_gb", "recorded_at", "sync_xid"],
        "job_events": ["id", "job_id", "seq", "type", "payload", "ts", "sync_xid"]
    }';
    conflicts text[] := ARRAY[]::text[];
    schema_oid oid := to_regnamespace('lorapod');
    ours text[] := ARRAY[]::text[];
    others text[] := ARRAY[]::text[];
    t text;
    rel regclass;
    lacking text[];
BEGIN
    IF schema_oid IS NOT NULL
       AND coalesce(obj_description(schema_oid, 'pg_namespace'), '') NOT LIKE 'lorapod%' THEN
        conflicts := conflicts || 'schema lorapod exists but lorapod did not create it (no lorapod marker)'::text;
    END IF;
    FOREACH t IN ARRAY tables LOOP
        rel := to_regclass(format('lorapod.%I', t));
        IF rel IS NOT NULL AND coalesce(obj_description(rel, 'pg_class'), '') NOT LIKE 'lorapod%' THEN
            conflicts := conflicts || format('lorapod.%s exists but is not lorapod''s (no lorapod marker)', t);
        END IF;
        rel := to_regclass(format('public.%I', t));
        CONTINUE WHEN rel IS NULL;
        IF coalesce(obj_description(rel, 'pg_class'), '') NOT LIKE 'lorapod%' THEN
            others := others || t;
            CONTINUE;
        END IF;
        SELECT array_agg(c) INTO lacking
        FROM jsonb_array_elements_text(columns_001 -> t) AS c
        WHERE NOT EXISTS (
            SELECT 1 FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = c AND NOT a.attisdropped
        );
        IF lacking IS NOT NULL THEN
            conflicts := conflicts || format('public.%s carries lorapod''s marker but lacks 001''s columns %s: '
                                             'not moved', t, array_to_string(lacking, ', '));
        ELSIF to_regclass(format('lorapod.%I', t)) IS NOT NULL THEN
            conflicts := conflicts || format('both public.%s (lorapod 001) and lorapod.%s exist: move the rows '
                                             'yourself, then drop one', t, t);
        ELSE
            ours := ours || t;
        END IF;
    END LOOP;
    -- 001's child tables hold foreign keys to its training_jobs: a move of some without the others would
    -- tie lorapod's tables to another app's.
    IF cardinality(ours) > 0 AND cardinality(others) > 0 THEN
        conflicts := conflicts || format('public.%s carry lorapod''s marker but public.%s, of the same set, do '
                                         'not: a partial lorapod 001 cannot be moved',
                                         array_to_string(ours, ', public.'), array_to_string(others, ', public.'));
    END IF;
    IF EXISTS (SELECT 1 FROM storage.buckets WHERE id = 'model-artifacts' AND public) THEN
        conflicts := conflicts || 'storage bucket model-artifacts exists and is public: lorapod keeps its '
                                  'artifacts private'::text;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = 'lorapod_job_uploader'
               AND coalesce(shobj_description(r.oid, 'pg_authid'), '') NOT LIKE 'lorapod%') THEN
        conflicts := conflicts || 'a role lorapod_job_uploader exists and is not lorapod''s'::text;
    END IF;
    IF cardinality(conflicts) > 0 THEN
        RAISE EXCEPTION 'lorapod 002 changed nothing: % conflict(s): %', cardinality(conflicts),
            array_to_string(conflicts, '; ')
            USING HINT = 'see "Conflicts" in lorapod''s docs/supabase.md';
    END IF;
    FOREACH t IN ARRAY others LOOP
        RAISE NOTICE 'public.% is not lorapod''s (no lorapod marker): left as it is', t;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The schema, and a record of what lorapod made outside it (the bucket), for the rollback
-- ---------------------------------------------------------------------------------------------------

CREATE SCHEMA IF NOT EXISTS lorapod;
COMMENT ON SCHEMA lorapod IS 'lorapod: training jobs, attempts, artifacts, metrics and events (lorapod 002)';
GRANT USAGE ON SCHEMA lorapod TO authenticated, service_role;

CREATE TABLE IF NOT EXISTS lorapod.created_outside (
    kind text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);
COMMENT ON TABLE lorapod.created_outside IS 'lorapod 002: objects lorapod created outside its schema';
ALTER TABLE lorapod.created_outside ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON lorapod.created_outside FROM anon, authenticated;

-- ---------------------------------------------------------------------------------------------------
-- Upgrade: 001's marked tables move here with their rows, indexes, constraints and policies
-- ---------------------------------------------------------------------------------------------------

DO $$
DECLARE
    t text;
    moved int := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['training_jobs', 'job_attempts', 'model_artifacts', 'training_metrics_history',
                             'job_events'] LOOP
        IF to_regclass(format('public.%I', t)) IS NOT NULL
           AND coalesce(obj_description(format('public.%I', t)::regclass, 'pg_class'), '') LIKE 'lorapod%' THEN
            EXECUTE format('ALTER TABLE public.%I SET SCHEMA lorapod', t);
            moved := moved + 1;
            RAISE NOTICE 'moved public.% to lorapod.%, rows included', t, t;
        END IF;
    END LOOP;
    IF moved > 0 THEN
        -- 001 tied training_file_id to the web app's table: lorapod's schema refers to nothing outside it.
        ALTER TABLE lorapod.training_jobs DROP CONSTRAINT IF EXISTS fk_training_jobs_training_file_id_training_files;
        IF EXISTS (SELECT 1 FROM storage.buckets WHERE id = 'model-artifacts') THEN
            INSERT INTO lorapod.created_outside (kind, name) VALUES ('bucket', 'model-artifacts')
            ON CONFLICT DO NOTHING;
        END IF;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Tables (column names are the ledger's: store/models.py). `sync_xid`, the id of the transaction that
-- last wrote a row, is set by a trigger; `lorapod sync` pulls by it. `training_file_id` names a row of the
-- web app's training_files, when there is one, without a foreign key: lorapod's schema depends on no other.
-- ---------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS lorapod.training_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text,
    training_file_id uuid,
    status text NOT NULL DEFAULT 'queued',
    stage text,
    base_model text NOT NULL,
    preset text,
    hyperparameters jsonb NOT NULL DEFAULT '{}'::jsonb,
    resources jsonb NOT NULL DEFAULT '{}'::jsonb,
    pod_id text,
    current_step integer NOT NULL DEFAULT 0,
    total_steps integer,
    current_epoch double precision NOT NULL DEFAULT 0,
    started_at timestamptz,
    completed_at timestamptz,
    estimated_completion_at timestamptz,
    estimated_cost_usd double precision,
    actual_cost_usd double precision NOT NULL DEFAULT 0,
    gpu_hours double precision NOT NULL DEFAULT 0,
    lora_artifact_path text,
    error_message text,
    error_category text,
    retry_count integer NOT NULL DEFAULT 0,
    parent_job_id uuid,
    created_by uuid DEFAULT auth.uid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    spec jsonb NOT NULL DEFAULT '{}'::jsonb,
    provider text NOT NULL DEFAULT 'local',
    gpu_type text,
    workdir text,
    error_hint text,
    last_event_seq integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at timestamptz,
    sync_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT fk_training_jobs_parent_job_id_training_jobs
        FOREIGN KEY (parent_job_id) REFERENCES lorapod.training_jobs (id) ON DELETE SET NULL,
    CONSTRAINT fk_training_jobs_created_by_users
        FOREIGN KEY (created_by) REFERENCES auth.users (id) ON DELETE SET NULL,
    CONSTRAINT ck_training_jobs_status CHECK (status IN (
        'queued', 'provisioning', 'preprocessing', 'model_loading', 'training', 'evaluating', 'uploading',
        'completed', 'failed', 'cancelled', 'interrupted'
    )),
    CONSTRAINT ck_training_jobs_progress CHECK (
        current_step >= 0 AND (total_steps IS NULL OR total_steps >= 0) AND current_epoch >= 0
    ),
    CONSTRAINT ck_training_jobs_costs CHECK (
        actual_cost_usd >= 0 AND gpu_hours >= 0 AND (estimated_cost_usd IS NULL OR estimated_cost_usd >= 0)
    ),
    CONSTRAINT ck_training_jobs_retry_count CHECK (retry_count >= 0)
);

CREATE TABLE IF NOT EXISTS lorapod.job_attempts (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES lorapod.training_jobs (id) ON DELETE CASCADE,
    number integer NOT NULL,
    provider text NOT NULL,
    handle jsonb NOT NULL DEFAULT '{}'::jsonb,
    rate_usd_per_hour double precision NOT NULL DEFAULT 0,
    gpu_count integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    cost_usd double precision NOT NULL DEFAULT 0,
    outcome text,
    sync_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT ck_job_attempts_number CHECK (number >= 1),
    CONSTRAINT ck_job_attempts_costs CHECK (cost_usd >= 0 AND rate_usd_per_hour >= 0 AND gpu_count >= 0),
    CONSTRAINT ck_job_attempts_outcome CHECK (
        outcome IS NULL OR outcome IN ('completed', 'failed', 'cancelled', 'interrupted')
    )
);

CREATE TABLE IF NOT EXISTS lorapod.model_artifacts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id uuid NOT NULL REFERENCES lorapod.training_jobs (id) ON DELETE CASCADE,
    artifact_type text NOT NULL,
    storage_path text NOT NULL,
    size_bytes bigint NOT NULL DEFAULT 0,
    sha256 text,
    base_model text,
    lora_config jsonb NOT NULL DEFAULT '{}'::jsonb,
    validation_loss double precision,
    perplexity double precision,
    created_at timestamptz NOT NULL DEFAULT now(),
    sync_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT ck_model_artifacts_artifact_type CHECK (artifact_type IN ('adapter', 'full', 'deploy', 'checkpoint')),
    CONSTRAINT ck_model_artifacts_size_bytes CHECK (size_bytes >= 0),
    CONSTRAINT ck_model_artifacts_sha256 CHECK (sha256 IS NULL OR sha256 ~ '^[0-9a-f]{64}$')
);

CREATE TABLE IF NOT EXISTS lorapod.training_metrics_history (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES lorapod.training_jobs (id) ON DELETE CASCADE,
    step integer NOT NULL,
    epoch double precision,
    loss double precision,
    eval_loss double precision,
    learning_rate double precision,
    grad_norm double precision,
    tokens_per_second double precision,
    gpu_memory_gb double precision,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    sync_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT ck_training_metrics_history_step CHECK (step >= 0)
);

CREATE TABLE IF NOT EXISTS lorapod.job_events (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES lorapod.training_jobs (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    type text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    ts timestamptz NOT NULL DEFAULT now(),
    sync_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT ck_job_events_seq CHECK (seq >= 0)
);

COMMENT ON TABLE lorapod.training_jobs IS 'lorapod 002: training jobs';
COMMENT ON TABLE lorapod.job_attempts IS 'lorapod 002: the attempts of a job (pods, local runs), with costs';
COMMENT ON TABLE lorapod.model_artifacts IS 'lorapod 002: packages a job produced';
COMMENT ON TABLE lorapod.training_metrics_history IS 'lorapod 002: metrics by step';
COMMENT ON TABLE lorapod.job_events IS 'lorapod 002: the engine''s events';

-- ---------------------------------------------------------------------------------------------------
-- Indexes: the seed's, the natural keys sync upserts by, and sync_xid for pulling
-- ---------------------------------------------------------------------------------------------------

CREATE INDEX IF NOT EXISTS ix_training_jobs_status ON lorapod.training_jobs (status);
CREATE INDEX IF NOT EXISTS ix_training_jobs_base_model ON lorapod.training_jobs (base_model);
CREATE INDEX IF NOT EXISTS ix_training_jobs_training_file_id ON lorapod.training_jobs (training_file_id);
CREATE INDEX IF NOT EXISTS ix_training_jobs_parent_job_id ON lorapod.training_jobs (parent_job_id);
CREATE INDEX IF NOT EXISTS ix_training_jobs_created_at ON lorapod.training_jobs (created_at);
CREATE INDEX IF NOT EXISTS ix_training_jobs_created_by ON lorapod.training_jobs (created_by);
CREATE INDEX IF NOT EXISTS ix_model_artifacts_job_id ON lorapod.model_artifacts (job_id);
CREATE UNIQUE INDEX IF NOT EXISTS uq_model_artifacts_job_id_artifact_type_storage_path
    ON lorapod.model_artifacts (job_id, artifact_type, storage_path);
CREATE UNIQUE INDEX IF NOT EXISTS uq_training_metrics_history_job_id_step
    ON lorapod.training_metrics_history (job_id, step);
CREATE UNIQUE INDEX IF NOT EXISTS uq_job_events_job_id_seq ON lorapod.job_events (job_id, seq);
CREATE INDEX IF NOT EXISTS ix_job_events_type ON lorapod.job_events (type);
CREATE UNIQUE INDEX IF NOT EXISTS uq_job_attempts_job_id_number ON lorapod.job_attempts (job_id, number);
CREATE INDEX IF NOT EXISTS ix_training_jobs_sync_xid ON lorapod.training_jobs (sync_xid);
CREATE INDEX IF NOT EXISTS ix_job_attempts_sync_xid ON lorapod.job_attempts (sync_xid);
CREATE INDEX IF NOT EXISTS ix_model_artifacts_sync_xid ON lorapod.model_artifacts (sync_xid);
CREATE INDEX IF NOT EXISTS ix_training_metrics_history_sync_xid ON lorapod.training_metrics_history (sync_xid);
CREATE INDEX IF NOT EXISTS ix_job_events_sync_xid ON lorapod.job_events (sync_xid);

-- ---------------------------------------------------------------------------------------------------
-- sync_xid: stamped by the database on every insert and update, whoever writes (lorapod or the web app)
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION lorapod.stamp_sync_xid() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    NEW.sync_xid := pg_catalog.pg_current_xact_id();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION lorapod.stamp_sync_xid() IS 'lorapod 002: stamps sync_xid on every write';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['training_jobs', 'job_attempts', 'model_artifacts', 'training_metrics_history',
                             'job_events'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS lorapod_stamp_sync_xid ON lorapod.%I', t);
        EXECUTE format('CREATE TRIGGER lorapod_stamp_sync_xid BEFORE INSERT OR UPDATE ON lorapod.%I '
                       'FOR EACH ROW EXECUTE FUNCTION lorapod.stamp_sync_xid()', t);
    END LOOP;
    -- 001's trigger function, once no trigger uses it: it is lorapod's when it carries the marker.
    IF to_regprocedure('public.lorapod_stamp_sync_xid()') IS NOT NULL
       AND coalesce(obj_description(to_regprocedure('public.lorapod_stamp_sync_xid()'), 'pg_proc'), '')
           LIKE 'lorapod%'
       AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgfoid = to_regprocedure('public.lorapod_stamp_sync_xid()'))
    THEN
        DROP FUNCTION public.lorapod_stamp_sync_xid();
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Row-level security: signed-in users read and write their own jobs (created_by = auth.uid()) and what
-- belongs to them; the service role everything. anon gets nothing.
-- ---------------------------------------------------------------------------------------------------

ALTER TABLE lorapod.training_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE lorapod.job_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE lorapod.model_artifacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE lorapod.training_metrics_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE lorapod.job_events ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON lorapod.training_jobs, lorapod.job_attempts, lorapod.model_artifacts,
    lorapod.training_metrics_history, lorapod.job_events FROM anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON lorapod.training_jobs, lorapod.job_attempts, lorapod.model_artifacts,
    lorapod.training_metrics_history, lorapod.job_events TO authenticated, service_role;

DROP POLICY IF EXISTS "lorapod: owners manage their jobs" ON lorapod.training_jobs;
CREATE POLICY "lorapod: owners manage their jobs" ON lorapod.training_jobs
    FOR ALL TO authenticated
    USING (created_by = (SELECT auth.uid()))
    WITH CHECK (created_by = (SELECT auth.uid()));

DROP POLICY IF EXISTS "lorapod: service role manages all jobs" ON lorapod.training_jobs;
CREATE POLICY "lorapod: service role manages all jobs" ON lorapod.training_jobs
    FOR ALL TO service_role USING (true) WITH CHECK (true);

DO $$
DECLARE
    t text;
    owned text := 'EXISTS (SELECT 1 FROM lorapod.training_jobs j WHERE j.id = job_id AND j.created_by = (SELECT auth.uid()))';
BEGIN
    FOREACH t IN ARRAY ARRAY['job_attempts', 'model_artifacts', 'training_metrics_history', 'job_events'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS "lorapod: owners manage their jobs'' rows" ON lorapod.%I', t);
        EXECUTE format('CREATE POLICY "lorapod: owners manage their jobs'' rows" ON lorapod.%I '
                       'FOR ALL TO authenticated USING (%s) WITH CHECK (%s)', t, owned, owned);
        EXECUTE format('DROP POLICY IF EXISTS "lorapod: service role manages all rows" ON lorapod.%I', t);
        EXECUTE format('CREATE POLICY "lorapod: service role manages all rows" ON lorapod.%I '
                       'FOR ALL TO service_role USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Read-only views in the shapes of the web app's training_jobs, metrics_points and model_artifacts, for
-- its pages once the schema is exposed (docs/supabase.md). security_invoker: the reader's row-level
-- security applies, so a user sees only their own jobs here too.
-- ---------------------------------------------------------------------------------------------------

-- The seed's statuses; lorapod's finer stage travels beside it as current_stage.
CREATE OR REPLACE FUNCTION lorapod.seed_status(status text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
    SELECT CASE status
        WHEN 'provisioning' THEN 'queued'
        WHEN 'model_loading' THEN 'preprocessing'
        WHEN 'evaluating' THEN 'training'
        WHEN 'uploading' THEN 'training'
        WHEN 'interrupted' THEN 'failed'
        ELSE status
    END
$$;
COMMENT ON FUNCTION lorapod.seed_status(text) IS 'lorapod 002: a job status in the seed''s vocabulary';

CREATE OR REPLACE VIEW lorapod.web_training_jobs WITH (security_invoker = true) AS
SELECT
    j.id,
    j.created_by AS user_id,
    j.training_file_id AS dataset_id,
    j.preset AS preset_id,
    j.hyperparameters,
    j.resources AS gpu_config,
    lorapod.seed_status(j.status) AS status,
    coalesce(j.stage, j.status) AS current_stage,
    CASE WHEN j.status = 'completed' THEN 100::numeric
         WHEN coalesce(j.total_steps, 0) > 0 THEN round(100.0 * j.current_step / j.total_steps, 2)
         ELSE 0::numeric END AS progress,
    j.current_epoch,
    (j.hyperparameters ->> 'num_epochs')::integer AS total_epochs,
    j.current_step,
    j.total_steps,
    (SELECT jsonb_strip_nulls(jsonb_build_object(
                'training_loss', m.loss, 'validation_loss', m.eval_loss, 'learning_rate', m.learning_rate,
                'gradient_norm', m.grad_norm, 'throughput', m.tokens_per_second, 'gpu_memory_gb', m.gpu_memory_gb))
     FROM lorapod.training_metrics_history m WHERE m.job_id = j.id ORDER BY m.step DESC LIMIT 1) AS current_metrics,
    j.created_at AS queued_at,
    j.started_at,
    j.completed_at,
    j.estimated_completion_at,
    j.actual_cost_usd AS current_cost,
    j.estimated_cost_usd AS estimated_total_cost,
    CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.actual_cost_usd END AS final_cost,
    j.error_message,
    j.retry_count,
    j.pod_id AS external_job_id,
    j.name,
    j.base_model,
    j.created_at,
    j.updated_at
FROM lorapod.training_jobs j;

CREATE OR REPLACE VIEW lorapod.web_metrics_points WITH (security_invoker = true) AS
SELECT
    m.id,
    m.job_id,
    m.recorded_at AS "timestamp",
    m.epoch,
    m.step,
    m.loss AS training_loss,
    m.eval_loss AS validation_loss,
    m.learning_rate,
    m.grad_norm AS gradient_norm,
    m.tokens_per_second AS throughput,
    NULL::numeric AS gpu_utilization,
    m.gpu_memory_gb
FROM lorapod.training_metrics_history m;

CREATE OR REPLACE VIEW lorapod.web_model_artifacts WITH (security_invoker = true) AS
SELECT
    a.id,
    j.created_by AS user_id,
    a.job_id,
    j.training_file_id AS dataset_id,
    coalesce(j.name, j.base_model) || ' (' || a.artifact_type || ')' AS name,
    'stored'::text AS status,
    jsonb_strip_nulls(jsonb_build_object('validation_loss', a.validation_loss, 'perplexity', a.perplexity))
        AS quality_metrics,
    jsonb_build_object('steps', j.current_step, 'epochs', j.current_epoch, 'cost_usd', j.actual_cost_usd,
                       'gpu_hours', j.gpu_hours) AS training_summary,
    a.lora_config AS configuration,
    jsonb_build_object('type', a.artifact_type, 'storage_path', a.storage_path, 'size_bytes', a.size_bytes,
                       'sha256', a.sha256) AS artifacts,
    a.base_model,
    a.created_at
FROM lorapod.model_artifacts a
JOIN lorapod.training_jobs j ON j.id = a.job_id;

COMMENT ON VIEW lorapod.web_training_jobs IS 'lorapod 002: jobs in the shape of the web app''s training_jobs';
COMMENT ON VIEW lorapod.web_metrics_points IS 'lorapod 002: metrics in the shape of the web app''s metrics_points';
COMMENT ON VIEW lorapod.web_model_artifacts IS 'lorapod 002: packages in the shape of the web app''s model_artifacts';

REVOKE ALL ON lorapod.web_training_jobs, lorapod.web_metrics_points, lorapod.web_model_artifacts FROM anon;
GRANT SELECT ON lorapod.web_training_jobs, lorapod.web_metrics_points, lorapod.web_model_artifacts
    TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------------------
-- Storage: the private bucket model-artifacts, objects at jobs/{job_id}/<file>. Owners of a job read and
-- delete its artifacts; uploads come from the engine with the service-role key.
-- ---------------------------------------------------------------------------------------------------

WITH made AS (
    INSERT INTO storage.buckets (id, name, public)
    VALUES ('model-artifacts', 'model-artifacts', false)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
INSERT INTO lorapod.created_outside (kind, name) SELECT 'bucket', id FROM made;

DROP POLICY IF EXISTS "lorapod: owners read their job artifacts" ON storage.objects;
CREATE POLICY "lorapod: owners read their job artifacts" ON storage.objects
    FOR SELECT TO authenticated
    USING (
        bucket_id = 'model-artifacts'
        AND split_part(name, '/', 1) = 'jobs'
        AND EXISTS (
            SELECT 1 FROM lorapod.training_jobs j
            WHERE j.id::text = split_part(objects.name, '/', 2) AND j.created_by = (SELECT auth.uid())
        )
    );

DROP POLICY IF EXISTS "lorapod: owners delete their job artifacts" ON storage.objects;
CREATE POLICY "lorapod: owners delete their job artifacts" ON storage.objects
    FOR DELETE TO authenticated
    USING (
        bucket_id = 'model-artifacts'
        AND split_part(name, '/', 1) = 'jobs'
        AND EXISTS (
            SELECT 1 FROM lorapod.training_jobs j
            WHERE j.id::text = split_part(objects.name, '/', 2) AND j.created_by = (SELECT auth.uid())
        )
    );

DROP POLICY IF EXISTS "lorapod: service role manages job artifacts" ON storage.objects;
CREATE POLICY "lorapod: service role manages job artifacts" ON storage.objects
    FOR ALL TO service_role
    USING (bucket_id = 'model-artifacts')
    WITH CHECK (bucket_id = 'model-artifacts');

-- ---------------------------------------------------------------------------------------------------
-- A pod's upload credential: a JWT that lorapod signs with the project's JWT secret for the role
-- lorapod_job_uploader, with claims {job_id, bucket} and an expiry at the end of the pod's life. Storage
-- runs the pod's requests as that role with those claims, so the policies below let it write, and read back,
-- jobs/<its job id>/<file> in its bucket and nothing else. The role is granted no table anywhere, so the same
-- token gets "permission denied" from the REST API on every table (docs/security.md).
-- ---------------------------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lorapod_job_uploader') THEN
        CREATE ROLE lorapod_job_uploader NOLOGIN NOINHERIT;
    END IF;
    -- Supabase's API servers switch to a token's role: they must be members of it.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
        GRANT lorapod_job_uploader TO authenticator;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supabase_storage_admin') THEN
        GRANT lorapod_job_uploader TO supabase_storage_admin;
    END IF;
END
$$;
COMMENT ON ROLE lorapod_job_uploader IS 'lorapod: a pod''s upload credential, jobs/<job id>/ of one bucket only';
GRANT USAGE ON SCHEMA storage TO lorapod_job_uploader;
GRANT SELECT, INSERT, UPDATE ON storage.objects TO lorapod_job_uploader;
GRANT SELECT ON storage.buckets TO lorapod_job_uploader;

-- jobs/<job id>/<file>, exactly: split_part, not LIKE, so no character of a claim can widen the match.
DROP POLICY IF EXISTS "lorapod: a pod writes its job's folder" ON storage.objects;
CREATE POLICY "lorapod: a pod writes its job's folder" ON storage.objects
    FOR INSERT TO lorapod_job_uploader
    WITH CHECK (
        bucket_id = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'bucket'
        AND split_part(name, '/', 1) = 'jobs'
        AND split_part(name, '/', 2) = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'job_id'
        AND split_part(name, '/', 3) NOT IN ('', '.', '..')
        AND split_part(name, '/', 4) = ''
    );
DROP POLICY IF EXISTS "lorapod: a pod reads back its job's folder" ON storage.objects;
CREATE POLICY "lorapod: a pod reads back its job's folder" ON storage.objects
    FOR SELECT TO lorapod_job_uploader
    USING (
        bucket_id = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'bucket'
        AND split_part(name, '/', 1) = 'jobs'
        AND split_part(name, '/', 2) = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'job_id'
    );
DROP POLICY IF EXISTS "lorapod: a pod replaces files in its job's folder" ON storage.objects;
CREATE POLICY "lorapod: a pod replaces files in its job's folder" ON storage.objects
    FOR UPDATE TO lorapod_job_uploader
    USING (
        bucket_id = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'bucket'
        AND split_part(name, '/', 1) = 'jobs'
        AND split_part(name, '/', 2) = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'job_id'
    )
    WITH CHECK (
        bucket_id = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'bucket'
        AND split_part(name, '/', 1) = 'jobs'
        AND split_part(name, '/', 2) = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'job_id'
        AND split_part(name, '/', 3) NOT IN ('', '.', '..')
        AND split_part(name, '/', 4) = ''
    );
DROP POLICY IF EXISTS "lorapod: a pod sees its bucket" ON storage.buckets;
CREATE POLICY "lorapod: a pod sees its bucket" ON storage.buckets
    FOR SELECT TO lorapod_job_uploader
    USING (id = nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'bucket');

COMMIT;
