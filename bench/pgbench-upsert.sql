-- Upsert ceiling: the service's upsert of one setting as one autocommitted statement, without the
-- locking read, the history row and the transaction around them (see pgbench-txn.sql for those).
-- The key and value are those setSetting and the REST write send; the users are those that hold
-- a token in the service runs. bench/run passes -M prepared -D width=W -D step=S -D tokens=T.
\set u 1 + random(0, :tokens - 1) * :step
\set mode random(0, 2)
INSERT INTO "settings" ("user_id", "scope", "key", "value", "version", "created_at", "updated_at")
VALUES ('user-' || lpad(:u::text, :width, '0'), '', 'appearance',
        jsonb_build_object('mode', (ARRAY['dark', 'light', 'system'])[1 + :mode],
                           'accent', '#3b82f6', 'fontScale', 1.1),
        1, now(), now())
ON CONFLICT ("user_id", "scope", "key") DO UPDATE
SET "value" = "excluded"."value", "version" = "settings"."version" + 1,
    "updated_at" = "excluded"."updated_at"
RETURNING "user_id", "scope", "key", "value", "version", "created_at", "updated_at";
