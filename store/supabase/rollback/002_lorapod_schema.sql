-- Rollback of lorapod 002: removes what lorapod created and nothing else, and says what it kept and why.
--
-- Dropped, WITH THEIR ROWS: the objects in schema `lorapod` that carry lorapod's marker (a comment starting
-- `lorapod`: tables, views, functions), then the schema itself once nothing else is left in it; the storage
-- policies named "lorapod: …" and the role lorapod_job_uploader (pods' upload credentials stop working); the `model-artifacts` bucket when lorapod created it and it is empty
-- (Supabase deletes stored files through its Storage API, not SQL: docs/supabase.md).
-- Kept, each with a NOTICE saying why: anything without the marker, a table another object still depends
-- on, a bucket that still holds files or that lorapod did not create. Nothing in `public` is touched.
-- Safe to run twice.

BEGIN;

DO $$
DECLARE
    kept text[] := ARRAY[]::text[];
    removed text[] := ARRAY[]::text[];
    schema_oid oid := to_regnamespace('lorapod');
    ours boolean;
    bucket_waits boolean := false;
    remaining bigint;
    item record;
    t text;
BEGIN
    DROP POLICY IF EXISTS "lorapod: owners read their job artifacts" ON storage.objects;
    DROP POLICY IF EXISTS "lorapod: owners delete their job artifacts" ON storage.objects;
    DROP POLICY IF EXISTS "lorapod: service role manages job artifacts" ON storage.objects;
    DROP POLICY IF EXISTS "lorapod: a pod writes its job's folder" ON storage.objects;
    DROP POLICY IF EXISTS "lorapod: a pod reads back its job's folder" ON storage.objects;
    DROP POLICY IF EXISTS "lorapod: a pod replaces files in its job's folder" ON storage.objects;
    DROP POLICY IF EXISTS "lorapod: a pod sees its bucket" ON storage.buckets;
    IF EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = 'lorapod_job_uploader'
               AND coalesce(shobj_description(r.oid, 'pg_authid'), '') LIKE 'lorapod%') THEN
        REVOKE ALL ON storage.objects, storage.buckets FROM lorapod_job_uploader;
        REVOKE USAGE ON SCHEMA storage FROM lorapod_job_uploader;
        BEGIN
            DROP ROLE lorapod_job_uploader;
            removed := removed || 'role lorapod_job_uploader'::text;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            -- Roles belong to the whole server: another database's policies may still name it.
            kept := kept || 'role lorapod_job_uploader: another database on this server still uses it'::text;
        END;
    END IF;

    ours := false;
    IF to_regclass('lorapod.created_outside') IS NOT NULL THEN
        -- Dynamic: a static reference would not compile once the table is gone (a second run).
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM lorapod.created_outside WHERE kind = $1 AND name = $2)'
            INTO ours USING 'bucket', 'model-artifacts';
    END IF;
    IF EXISTS (SELECT 1 FROM storage.buckets WHERE id = 'model-artifacts') THEN
        SELECT count(*) INTO remaining FROM storage.objects WHERE bucket_id = 'model-artifacts';
        IF NOT ours THEN
            kept := kept || 'storage bucket model-artifacts: lorapod did not create it'::text;
        ELSIF remaining > 0 THEN
            bucket_waits := true;
            kept := kept || format('storage bucket model-artifacts: it still holds %s objects; empty it from the '
                                   'dashboard or the Storage API, then run this script again', remaining);
        ELSE
            DELETE FROM storage.buckets WHERE id = 'model-artifacts';
            removed := removed || 'storage bucket model-artifacts'::text;
        END IF;
    END IF;

    IF schema_oid IS NULL THEN
        RAISE NOTICE 'lorapod rollback: there is no schema lorapod; nothing else to remove';
    ELSE
        -- Views first, then tables children before parents, then functions.
        FOR item IN
            SELECT c.oid, c.relname AS name, c.relkind AS kind,
                   coalesce(obj_description(c.oid, 'pg_class'), '') LIKE 'lorapod%' AS marked
            FROM pg_class c
            WHERE c.relnamespace = schema_oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            ORDER BY c.relkind = 'r', array_position(ARRAY['job_events', 'training_metrics_history',
                     'model_artifacts', 'job_attempts', 'training_jobs', 'created_outside'], c.relname::text),
                     c.relname
        LOOP
            IF NOT item.marked THEN
                kept := kept || format('lorapod.%s: no lorapod marker, so lorapod did not create it', item.name);
                CONTINUE;
            END IF;
            IF bucket_waits AND item.name = 'created_outside' THEN
                kept := kept || 'lorapod.created_outside: it records that lorapod created the bucket, for the next '
                                'run of this script'::text;
                CONTINUE;
            END IF;
            BEGIN
                EXECUTE format('DROP %s lorapod.%I', CASE WHEN item.kind = 'v' THEN 'VIEW' ELSE 'TABLE' END,
                               item.name);
                removed := removed || format('lorapod.%s', item.name);
            EXCEPTION WHEN dependent_objects_still_exist THEN
                kept := kept || format('lorapod.%s: %s', item.name, SQLERRM);
            END;
        END LOOP;
        FOR item IN
            SELECT p.oid::regprocedure AS signature, p.proname AS name,
                   coalesce(obj_description(p.oid, 'pg_proc'), '') LIKE 'lorapod%' AS marked
            FROM pg_proc p WHERE p.pronamespace = schema_oid
        LOOP
            IF NOT item.marked THEN
                kept := kept || format('%s: no lorapod marker, so lorapod did not create it', item.signature);
                CONTINUE;
            END IF;
            BEGIN
                EXECUTE format('DROP FUNCTION %s', item.signature);
                removed := removed || item.signature::text;
            EXCEPTION WHEN dependent_objects_still_exist THEN
                kept := kept || format('%s: %s', item.signature, SQLERRM);
            END;
        END LOOP;
        IF coalesce(obj_description(schema_oid, 'pg_namespace'), '') NOT LIKE 'lorapod%' THEN
            kept := kept || 'schema lorapod: no lorapod marker, so lorapod did not create it'::text;
        ELSIF cardinality(kept) > 0 AND EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = schema_oid
                                                UNION ALL SELECT 1 FROM pg_proc WHERE pronamespace = schema_oid
                                                UNION ALL SELECT 1 FROM pg_type WHERE typnamespace = schema_oid
                                                    AND typtype IN ('c', 'd', 'e', 'r')) THEN
            kept := kept || 'schema lorapod: it still holds what is listed above'::text;
        ELSE
            -- Without CASCADE: anything left that nothing above listed makes this fail rather than vanish.
            DROP SCHEMA lorapod;
            removed := removed || 'schema lorapod'::text;
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
