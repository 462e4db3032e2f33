-- Rollback of lorapod 001 (tables in `public`; 002 moves them to schema `lorapod` and has its own rollback).
--
-- Removes the storage policies named "lorapod: …", and those of job_events, training_metrics_history,
-- model_artifacts, job_attempts and training_jobs that carry lorapod's marker (a comment starting `lorapod`,
-- written by 001), WITH THEIR ROWS, then 001's trigger function. A table of those names without the marker
-- is another app's (the web app has a training_jobs and a model_artifacts) and is kept, as is anything
-- another object still depends on; each is reported with a NOTICE. The `model-artifacts` bucket is removed
-- only when lorapod's tables were found and it is empty: Supabase deletes stored files through its Storage
-- API, not through SQL (docs/supabase.md). Safe to run twice.

BEGIN;

DO $$
DECLARE
    kept text[] := ARRAY[]::text[];
    removed text[] := ARRAY[]::text[];
    found_ours boolean := false;
    rel regclass;
    fn regprocedure := to_regprocedure('public.lorapod_stamp_sync_xid()');
    remaining bigint;
    t text;
BEGIN
    DROP POLICY IF EXISTS "lorapod: owners read their job artifacts" ON storage.objects;
    DROP POLICY IF EXISTS "lorapod: owners delete their job artifacts" ON storage.objects;
    DROP POLICY IF EXISTS "lorapod: service role manages job artifacts" ON storage.objects;

    FOREACH t IN ARRAY ARRAY['job_events', 'training_metrics_history', 'model_artifacts', 'job_attempts',
                             'training_jobs'] LOOP
        rel := to_regclass(format('public.%I', t));
        CONTINUE WHEN rel IS NULL;
        IF coalesce(obj_description(rel, 'pg_class'), '') NOT LIKE 'lorapod%' THEN
            kept := kept || format('public.%s: no lorapod marker, so lorapod did not create it', t);
            CONTINUE;
        END IF;
        found_ours := true;
        BEGIN
            EXECUTE format('DROP TABLE public.%I', t);
            removed := removed || format('public.%s', t);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            kept := kept || format('public.%s: %s', t, SQLERRM);
        END;
    END LOOP;

    IF fn IS NOT NULL THEN
        IF coalesce(obj_description(fn, 'pg_proc'), '') NOT LIKE 'lorapod%' THEN
            kept := kept || 'public.lorapod_stamp_sync_xid(): no lorapod marker'::text;
        ELSE
            BEGIN
                DROP FUNCTION public.lorapod_stamp_sync_xid();
                removed := removed || 'public.lorapod_stamp_sync_xid()'::text;
            EXCEPTION WHEN dependent_objects_still_exist THEN
                kept := kept || 'public.lorapod_stamp_sync_xid(): triggers of the tables kept still use it'::text;
            END;
        END IF;
    END IF;

    IF EXISTS (SELECT 1 FROM storage.buckets WHERE id = 'model-artifacts') THEN
        SELECT count(*) INTO remaining FROM storage.objects WHERE bucket_id = 'model-artifacts';
        IF NOT found_ours THEN
            kept := kept || 'storage bucket model-artifacts: no table of lorapod 001 was here'::text;
        ELSIF remaining > 0 THEN
            kept := kept || format('storage bucket model-artifacts: it still holds %s objects; empty it from the '
                                   'dashboard or the Storage API, then run this script again', remaining);
        ELSE
            DELETE FROM storage.buckets WHERE id = 'model-artifacts';
            removed := removed || 'storage bucket model-artifacts'::text;
        END IF;
    END IF;

    FOREACH t IN ARRAY removed LOOP
        RAISE NOTICE 'lorapod rollback: removed %', t;
    END LOOP;
    FOREACH t IN ARRAY kept LOOP
        RAISE NOTICE 'lorapod rollback: kept %', t;
    END LOOP;
END
$$;

COMMIT;
