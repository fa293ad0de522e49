-- Write-transaction ceiling: what the service sends for a one-key write that takes the
-- transaction (src/settings/write.rs, Store::try_write: a patch, a write with a precondition, or
-- any write on SQLite), statement for statement: BEGIN; lock and read the row; the upsert
-- guarded by the version read; one history row with the old and new value; COMMIT. Five round
-- trips, like the service. A replacement without preconditions takes one statement instead
-- (src/settings/replace_one.rs). The key and value are those setSetting sends; the users are
-- those that hold a token in the service runs. bench/run passes -M prepared -D width=W
-- -D step=S -D tokens=T.
\set u 1 + random(0, :tokens - 1) * :step
\set mode random(0, 2)
BEGIN;
SELECT "settings"."user_id", "settings"."scope", "settings"."key", "settings"."value",
       "settings"."version", "settings"."created_at", "settings"."updated_at"
FROM "settings"
WHERE "settings"."user_id" = 'user-' || lpad(:u::text, :width, '0') AND "settings"."scope" = ''
  AND "settings"."key" IN ('appearance')
FOR UPDATE \gset old_
INSERT INTO "settings" ("user_id", "scope", "key", "value", "version", "created_at", "updated_at")
VALUES (:old_user_id, '', 'appearance',
        jsonb_build_object('mode', (ARRAY['dark', 'light', 'system'])[1 + :mode],
                           'accent', '#3b82f6', 'fontScale', 1.1),
        :old_version + 1, now(), now())
ON CONFLICT ("user_id", "scope", "key") DO UPDATE
SET "value" = "excluded"."value", "version" = "excluded"."version",
    "updated_at" = "excluded"."updated_at"
WHERE "settings"."version" + 1 = "excluded"."version"
RETURNING "user_id", "scope", "key", "value", "version", "created_at", "updated_at" \gset new_
INSERT INTO "setting_changes" ("user_id", "scope", "key", "kind", "version", "old_value",
                               "new_value", "actor", "interface", "correlation_id", "changed_at")
VALUES (:old_user_id, '', 'appearance', 'update', :new_version, :old_value, :new_value,
        :old_user_id, 'graphql', gen_random_uuid()::text, now());
COMMIT;
