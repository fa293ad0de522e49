-- Read ceiling: the one statement the service runs for the `settings` query (Store::list, the
-- default scope, all keys), verbatim, for one of the users that hold a token in the service runs.
-- bench/run passes -M prepared (the service's driver prepares and caches its statements too)
-- and -D width=W -D step=S -D tokens=T.
\set u 1 + random(0, :tokens - 1) * :step
SELECT "settings"."user_id", "settings"."scope", "settings"."key", "settings"."value",
       "settings"."version", "settings"."created_at", "settings"."updated_at"
FROM "settings"
WHERE "settings"."user_id" = 'user-' || lpad(:u::text, :width, '0') AND "settings"."scope" = ''
ORDER BY "settings"."key" ASC;
