-- lorapod 003: blind human ratings of a job's held-out replies, so several raters can rate the same job.
-- Needs 002 (schema lorapod and its training_jobs). Safe to run twice.
--
-- One row per (job, prompt, rater): the reply the rater preferred (adapter, base or tie) and where the
-- adapter's reply was shown (A or B). A rater who rates a prompt again replaces the row; sync keeps the newest.

BEGIN;

DO $$
BEGIN
    IF to_regclass('lorapod.training_jobs') IS NULL THEN
        RAISE EXCEPTION 'lorapod 003 needs lorapod 002 first (schema lorapod with its training_jobs)';
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS lorapod.ratings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id uuid NOT NULL REFERENCES lorapod.training_jobs (id) ON DELETE CASCADE,
    prompt_index integer NOT NULL,
    rater text NOT NULL,
    choice text NOT NULL,
    adapter_label text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    sync_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT ck_ratings_choice CHECK (choice IN ('adapter', 'base', 'tie')),
    CONSTRAINT ck_ratings_adapter_label CHECK (adapter_label IN ('A', 'B')),
    CONSTRAINT ck_ratings_prompt_index CHECK (prompt_index >= 0),
    CONSTRAINT ck_ratings_rater CHECK (length(rater) BETWEEN 1 AND 200)
);
COMMENT ON TABLE lorapod.ratings IS 'lorapod 003: blind human ratings of a job''s held-out replies';

CREATE UNIQUE INDEX IF NOT EXISTS uq_ratings_job_id_prompt_index_rater ON lorapod.ratings (job_id, prompt_index, rater);
CREATE INDEX IF NOT EXISTS ix_ratings_job_id ON lorapod.ratings (job_id);
CREATE INDEX IF NOT EXISTS ix_ratings_sync_xid ON lorapod.ratings (sync_xid);

DROP TRIGGER IF EXISTS lorapod_stamp_sync_xid ON lorapod.ratings;
CREATE TRIGGER lorapod_stamp_sync_xid BEFORE INSERT OR UPDATE ON lorapod.ratings
    FOR EACH ROW EXECUTE FUNCTION lorapod.stamp_sync_xid();

ALTER TABLE lorapod.ratings ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON lorapod.ratings FROM anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON lorapod.ratings TO authenticated, service_role;

DROP POLICY IF EXISTS "lorapod: owners manage their jobs' rows" ON lorapod.ratings;
CREATE POLICY "lorapod: owners manage their jobs' rows" ON lorapod.ratings
    FOR ALL TO authenticated
    USING (EXISTS (SELECT 1 FROM lorapod.training_jobs j WHERE j.id = job_id AND j.created_by = (SELECT auth.uid())))
    WITH CHECK (EXISTS (SELECT 1 FROM lorapod.training_jobs j WHERE j.id = job_id AND j.created_by = (SELECT auth.uid())));
DROP POLICY IF EXISTS "lorapod: service role manages all rows" ON lorapod.ratings;
CREATE POLICY "lorapod: service role manages all rows" ON lorapod.ratings
    FOR ALL TO service_role USING (true) WITH CHECK (true);

COMMIT;
