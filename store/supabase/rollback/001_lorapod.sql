-- Rollback of lorapod 001: removes the storage policies, the triggers and their function, and the tables
-- job_events, training_metrics_history, model_artifacts, job_attempts and training_jobs WITH THEIR ROWS.
-- The web app's training_files table is left alone. The `model-artifacts` bucket is removed only when it
-- is empty: Supabase deletes stored files through its Storage API, not through SQL (docs/supabase.md).
-- Safe to run twice.

BEGIN;

DROP POLICY IF EXISTS "lorapod: owners read their job artifacts" ON storage.objects;
DROP POLICY IF EXISTS "lorapod: owners delete their job artifacts" ON storage.objects;
DROP POLICY IF EXISTS "lorapod: service role manages job artifacts" ON storage.objects;

DO $$
DECLARE
    remaining bigint;
BEGIN
    SELECT count(*) INTO remaining FROM storage.objects WHERE bucket_id = 'model-artifacts';
    IF remaining = 0 THEN
        DELETE FROM storage.buckets WHERE id = 'model-artifacts';
    ELSE
        RAISE NOTICE 'bucket model-artifacts kept: it still holds % objects; empty it from the dashboard or the '
                     'Storage API, then run this script again', remaining;
    END IF;
END
$$;

DROP TABLE IF EXISTS public.job_events;
DROP TABLE IF EXISTS public.training_metrics_history;
DROP TABLE IF EXISTS public.model_artifacts;
DROP TABLE IF EXISTS public.job_attempts;
DROP TABLE IF EXISTS public.training_jobs;
DROP FUNCTION IF EXISTS public.lorapod_stamp_sync_xid();

COMMIT;
