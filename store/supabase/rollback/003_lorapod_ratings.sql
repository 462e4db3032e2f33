-- Rollback of lorapod 003: drops lorapod.ratings WITH ITS ROWS when it carries lorapod's marker; a table of
-- that name without the marker is kept, with a NOTICE. Run it before 002's rollback. Safe to run twice.

BEGIN;

DO $$
BEGIN
    IF to_regclass('lorapod.ratings') IS NULL THEN
        RETURN;  -- nothing to remove, and nothing to say: 002's rollback reports on the schema
    ELSIF coalesce(obj_description(to_regclass('lorapod.ratings'), 'pg_class'), '') LIKE 'lorapod%' THEN
        DROP TABLE lorapod.ratings;
        RAISE NOTICE 'lorapod rollback 003: removed lorapod.ratings';
    ELSE
        RAISE NOTICE 'lorapod rollback 003: kept lorapod.ratings: it does not carry lorapod''s marker';
    END IF;
END
$$;

COMMIT;
