-- Seeds the benchmark database: :users users with 20 settings each, in the default scope ('').
-- psql -v users=10000 -v width=5 -f bench/seed.sql
-- User ids are 'user-' || lpad(n, :width, '0'); emails match the tokens' `email` claim and roles
-- are [] so that the service's ensure_user finds nothing to refresh.
-- Ten keys are catalog keys with values their schemas accept; ten are free-form (objects, nested
-- objects, arrays) as clients store them.

\set ON_ERROR_STOP on

BEGIN;

INSERT INTO users (id, email, roles, locale, settings_id, created_at, updated_at)
SELECT 'user-' || lpad(n::text, :width, '0'),
       'user-' || lpad(n::text, :width, '0') || '@example.com',
       '[]'::jsonb,
       (ARRAY['en', 'de', 'tr', 'pt-BR', 'fr'])[1 + n % 5],
       gen_random_uuid(),
       now() - interval '90 days' + (n % 1000) * interval '1 minute',
       now() - (n % 90) * interval '1 day'
FROM generate_series(1, :users) AS n;

INSERT INTO settings (user_id, scope, key, value, version, created_at, updated_at)
SELECT 'user-' || lpad(n::text, :width, '0'),
       '',
       k.key,
       k.value,
       1 + (n + k.ord) % 7,
       now() - interval '60 days',
       now() - ((n + k.ord) % 60) * interval '1 day'
FROM generate_series(1, :users) AS n
CROSS JOIN LATERAL (VALUES
    -- catalog keys
    (1, 'theme', to_jsonb((ARRAY['dark', 'light', 'system'])[1 + n % 3])),
    (2, 'locale', to_jsonb((ARRAY['en', 'de', 'tr', 'pt-BR', 'fr'])[1 + n % 5])),
    (3, 'preferredLanguage', to_jsonb((ARRAY['en', 'de', 'tr', 'pt-BR', 'fr'])[1 + n % 5])),
    (4, 'digestMode', to_jsonb((ARRAY['DAILY', 'WEEKLY', 'NONE'])[1 + n % 3])),
    (5, 'notifications', to_jsonb(n % 10 <> 0)),
    (6, 'emailNotifications', to_jsonb(n % 2 = 0)),
    (7, 'pushNotifications', to_jsonb(n % 3 <> 0)),
    (8, 'inAppNotifications', 'true'::jsonb),
    (9, 'followNotifications', to_jsonb(n % 4 <> 0)),
    (10, 'messageNotifications', to_jsonb(n % 5 <> 0)),
    -- free-form keys
    (11, 'appearance', jsonb_build_object(
        'mode', (ARRAY['dark', 'light', 'system'])[1 + n % 3],
        'accent', (ARRAY['#3b82f6', '#ef4444', '#10b981', '#f59e0b'])[1 + n % 4],
        'fontScale', 1.0 + (n % 5) * 0.1,
        'density', (ARRAY['comfortable', 'compact'])[1 + n % 2])),
    (12, 'notificationPrefs', jsonb_build_object(
        'email', jsonb_build_object('enabled', n % 2 = 0, 'digest', 'daily',
                                    'categories', jsonb_build_array('billing', 'security')),
        'push', jsonb_build_object('enabled', n % 3 <> 0,
                                   'quietHours', jsonb_build_object('start', '22:00', 'end', '07:00')),
        'inApp', jsonb_build_object('enabled', true, 'sound', n % 2 = 1))),
    (13, 'editor', jsonb_build_object('tabSize', 2 + 2 * (n % 2), 'wordWrap', n % 3 = 0,
                                      'fontFamily', 'JetBrains Mono', 'lineNumbers', true)),
    (14, 'recentSearches', jsonb_build_array('invoice ' || n % 100, 'team settings',
                                             'user-' || (n * 7) % 1000)),
    (15, 'pinnedProjects', jsonb_build_array(n % 50, (n * 3) % 50, (n * 7) % 50)),
    (16, 'timezone', to_jsonb((ARRAY['Europe/Berlin', 'Europe/Istanbul', 'America/Sao_Paulo',
                                      'UTC'])[1 + n % 4])),
    (17, 'dateFormat', to_jsonb((ARRAY['YYYY-MM-DD', 'DD.MM.YYYY', 'MM/DD/YYYY'])[1 + n % 3])),
    (18, 'dashboardLayout', jsonb_build_array(
        jsonb_build_object('widget', 'activity', 'w', 2, 'h', 1),
        jsonb_build_object('widget', 'balance', 'w', 1, 'h', 1),
        jsonb_build_object('widget', 'followers', 'w', 1, 'h', 2))),
    (19, 'privacy', jsonb_build_object('profileVisible', n % 7 <> 0, 'showEmail', false,
                                       'searchable', true)),
    (20, 'onboardingCompleted', to_jsonb(n % 11 <> 0))
) AS k(ord, key, value);

COMMIT;

VACUUM ANALYZE users;
VACUUM ANALYZE settings;
