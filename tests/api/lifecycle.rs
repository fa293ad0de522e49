//! The lifecycle of a user's settings: export and import.

use serde_json::{Value, json};
use settings_api::auth::TokenRequest;

use crate::helpers::*;

const EXPORT: &str = "query($u: String) { exportSettings(userId: $u) }";
const IMPORT: &str = "mutation($d: JSON!, $m: ImportMode = MERGE, $dry: Boolean = false, $u: String) { \
    importSettings(document: $d, mode: $m, dryRun: $dry, userId: $u) { created updated deleted unchanged \
    errors { index scope key rule message } } }";
const TYPED_SCOPE: &str = "contract-003";

async fn set_in(app: &TestApp, token: &str, scope: &str, key: &str, value: Value) {
    let set = "mutation($k: String!, $v: JSON!, $s: String!) { setSetting(key: $k, value: $v, scope: $s) { version } }";
    app.data(token, set, json!({"k": key, "v": value, "s": scope}))
        .await;
}

async fn export(app: &TestApp, token: &str) -> Value {
    app.data(token, EXPORT, json!({})).await["exportSettings"].take()
}

async fn import(app: &TestApp, token: &str, variables: Value) -> Value {
    app.data(token, IMPORT, variables).await["importSettings"].take()
}

/// Every stored value of the user in every scope, as (scope, key, value).
fn values_of(document: &Value) -> Vec<(String, String, Value)> {
    let mut values: Vec<_> = document["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["scope"].as_str().unwrap().to_owned(),
                s["key"].as_str().unwrap().to_owned(),
                s["value"].clone(),
            )
        })
        .collect();
    values.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    values
}

both_backends! {
    async fn an_export_holds_every_scope_and_the_whole_history_also_as_a_download(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        app.set(&alice, "theme", json!("light")).await;
        set_in(&app, &alice, "mobile", "layout", json!({"dense": true})).await;
        set_in(&app, &alice, TYPED_SCOPE, "notifications", json!(false)).await;
        app.set(&app.token("bob"), "theme", json!("bob's")).await;

        let document = export(&app, &alice).await;
        assert_eq!(document["format"], "settings-api/export");
        assert_eq!(document["version"], 1);
        assert_eq!(document["user"]["id"], "alice");
        assert_eq!(
            values_of(&document),
            vec![
                ("".into(), "theme".into(), json!("light")),
                (TYPED_SCOPE.into(), "notifications".into(), json!(false)),
                ("mobile".into(), "layout".into(), json!({"dense": true})),
            ]
        );
        let theme = document["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == "theme")
            .unwrap();
        assert_eq!(theme["version"], 2);
        assert!(theme["createdAt"].as_str().unwrap().ends_with('Z'));
        let history: Vec<(&str, &str, &Value)> = document["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["key"].as_str().unwrap(), h["kind"].as_str().unwrap(), &h["newValue"]))
            .collect();
        assert_eq!(
            history,
            vec![
                ("theme", "CREATE", &json!("dark")),
                ("theme", "UPDATE", &json!("light")),
                ("layout", "CREATE", &json!({"dense": true})),
                ("notifications", "CREATE", &json!(false)),
            ]
        );
        assert!(document["history"].as_array().unwrap().iter().all(|h| h["actor"] == "alice"));

        let reply = app
            .send(app.client.get(app.url("/api/v1/me/export")).bearer_auth(&alice))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.header("content-disposition"),
            Some("attachment; filename=\"settings-export.json\"")
        );
        let mut downloaded = reply.body.clone();
        let mut expected = document.clone();
        downloaded["exportedAt"] = Value::Null;
        expected["exportedAt"] = Value::Null;
        assert_eq!(downloaded, expected);

        let anonymous = app.send(app.client.get(app.url("/api/v1/me/export"))).await;
        assert_eq!(anonymous.status, 401);
        assert_eq!(anonymous.body["error"]["code"], "UNAUTHENTICATED");
    }

    async fn a_large_export_downloads_whole_across_pages(app) {
        let token = app.token("large");
        for batch in 0..12 {
            let patch: serde_json::Map<String, Value> =
                (0..100).map(|i| (format!("key-{batch:02}-{i:03}"), json!(i))).collect();
            app.data(&token, "mutation($p: JSON!) { updateSettings(patch: $p) { key } }", json!({"p": patch}))
                .await;
        }
        let reply = app
            .send(app.client.get(app.url("/api/v1/me/export")).bearer_auth(&token))
            .await;
        assert_eq!(reply.status, 200);
        let settings = reply.body["settings"].as_array().unwrap();
        assert_eq!(settings.len(), 1200);
        assert_eq!(reply.body["history"].as_array().unwrap().len(), 1200);
        let mut keys: Vec<&str> = settings.iter().map(|s| s["key"].as_str().unwrap()).collect();
        keys.dedup();
        assert_eq!(keys.len(), 1200, "no setting twice across pages");
    }

    async fn an_export_imported_into_an_empty_account_reproduces_every_value(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        app.set(&alice, "nested", json!({"a": [1, {"b": null}], "c": "ü"})).await;
        set_in(&app, &alice, "mobile", "layout", json!([1, 2, 3])).await;
        set_in(&app, &alice, TYPED_SCOPE, "notifications", json!(false)).await;
        let document = export(&app, &alice).await;

        let carol = app.token("carol");
        let report = import(&app, &carol, json!({"d": document})).await;
        assert_eq!(
            report,
            json!({"created": 4, "updated": 0, "deleted": 0, "unchanged": 0, "errors": []})
        );
        assert_eq!(values_of(&export(&app, &carol).await), values_of(&document));
        assert_eq!(app.values_in(&carol, "mobile").await, json!({"layout": [1, 2, 3]}));

        // Again: nothing to do.
        let again = import(&app, &carol, json!({"d": document})).await;
        assert_eq!(
            again,
            json!({"created": 0, "updated": 0, "deleted": 0, "unchanged": 4, "errors": []})
        );
    }

    async fn merge_keeps_other_settings_and_replace_deletes_them(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        let document = export(&app, &alice).await;
        app.set(&alice, "theme", json!("light")).await;
        app.set(&alice, "extra", json!(1)).await;
        set_in(&app, &alice, "mobile", "layout", json!("grid")).await;

        let merged = import(&app, &alice, json!({"d": document})).await;
        assert_eq!(
            merged,
            json!({"created": 0, "updated": 1, "deleted": 0, "unchanged": 0, "errors": []})
        );
        assert_eq!(app.values(&alice).await, json!({"theme": "dark", "extra": 1}));

        let replaced = import(&app, &alice, json!({"d": document, "m": "REPLACE"})).await;
        assert_eq!(
            replaced,
            json!({"created": 0, "updated": 0, "deleted": 2, "unchanged": 1, "errors": []})
        );
        assert_eq!(values_of(&export(&app, &alice).await), values_of(&document));
    }

    async fn a_dry_run_reports_what_the_import_would_do_and_writes_nothing(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        app.set(&alice, "same", json!(true)).await;
        let mut document = export(&app, &alice).await;
        document["settings"].as_array_mut().unwrap().push(json!({"scope": "", "key": "new", "value": 5}));
        app.set(&alice, "theme", json!("light")).await;
        app.set(&alice, "gone", json!(0)).await;
        let before = export(&app, &alice).await;
        let changes_before = history_count(&app, "alice").await;

        let dry = import(&app, &alice, json!({"d": document, "m": "REPLACE", "dry": true})).await;
        assert_eq!(
            dry,
            json!({"created": 1, "updated": 1, "deleted": 1, "unchanged": 1, "errors": []})
        );
        assert_eq!(values_of(&export(&app, &alice).await), values_of(&before));
        assert_eq!(history_count(&app, "alice").await, changes_before);

        let real = import(&app, &alice, json!({"d": document, "m": "REPLACE"})).await;
        assert_eq!(real, dry, "the real run does what the dry run said");
        assert_eq!(app.values(&alice).await, json!({"theme": "dark", "same": true, "new": 5}));
    }

    async fn an_import_with_a_bad_entry_writes_nothing_and_names_every_bad_entry(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        let document = json!({
            "format": "settings-api/export",
            "version": 1,
            "settings": [
                {"scope": "", "key": "theme", "value": "light"},
                {"scope": "", "key": "", "value": 1},
                {"scope": TYPED_SCOPE, "key": "notifications", "value": "yes"},
                {"scope": "", "key": "theme", "value": "again"},
                {"scope": "", "key": "novalue"},
            ],
        });
        let report = import(&app, &alice, json!({"d": document})).await;
        let errors: Vec<(i64, &str)> = report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["index"].as_i64().unwrap(), e["rule"].as_str().unwrap()))
            .collect();
        assert_eq!(errors, vec![(1, "minLength"), (2, "type"), (3, "unique"), (4, "required")]);
        assert_eq!(report["created"], 0);
        assert_eq!(report["errors"][2]["key"], "theme");
        assert_eq!(app.values(&alice).await, json!({"theme": "dark"}));
        assert_eq!(history_count(&app, "alice").await, 1);
    }

    async fn a_document_that_is_not_an_export_is_refused(app) {
        let alice = app.token("alice");
        for document in [
            json!([1, 2]),
            json!({"format": "other", "version": 1, "settings": []}),
            json!({"format": "settings-api/export", "version": 2, "settings": []}),
            json!({"format": "settings-api/export", "version": 1}),
        ] {
            let error = app.error(&alice, IMPORT, json!({"d": document})).await;
            assert_eq!(code(&error), "BAD_USER_INPUT", "{document}: {error}");
            assert_eq!(error["extensions"]["rule"], "format", "{error}");
        }
    }

    async fn only_administrators_export_or_import_another_users_settings(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        let mallory = app.token("mallory");
        let error = app.error(&mallory, EXPORT, json!({"u": "alice"})).await;
        assert_eq!(code(&error), "FORBIDDEN");
        let document = export(&app, &mallory).await;
        let error = app.error(&mallory, IMPORT, json!({"d": document, "u": "alice", "m": "REPLACE"})).await;
        assert_eq!(code(&error), "FORBIDDEN");
        assert_eq!(app.values(&alice).await, json!({"theme": "dark"}));

        let admin = app.admin_token("privacy-1");
        let theirs = app.data(&admin, EXPORT, json!({"u": "alice"})).await;
        assert_eq!(values_of(&theirs["exportSettings"]), vec![("".into(), "theme".into(), json!("dark"))]);
    }
}

both_backends! {
    options = Options::default().env("QUOTA_KEYS_PER_SCOPE", "2");
    async fn an_import_past_a_quota_writes_nothing_and_says_which_scope(app) {
        let alice = app.token("alice");
        app.set(&alice, "a", json!(1)).await;
        let document = json!({
            "format": "settings-api/export",
            "version": 1,
            "settings": [
                {"scope": "other", "key": "x", "value": 1},
                {"scope": "", "key": "b", "value": 2},
                {"scope": "", "key": "c", "value": 3},
            ],
        });
        let report = import(&app, &alice, json!({"d": document})).await;
        assert_eq!(report["created"], 0);
        assert_eq!(
            report["errors"],
            json!([{"index": null, "scope": "", "key": null, "rule": "quotaKeys", "message": report["errors"][0]["message"]}])
        );
        assert_eq!(app.values(&alice).await, json!({"a": 1}));
        assert_eq!(app.values_in(&alice, "other").await, json!({}));
    }
}

const ERASE: &str = "mutation($u: String!) { eraseUser(userId: $u) }";

/// Every `table.column` of the database.
async fn columns(app: &TestApp) -> Vec<(String, String)> {
    let sql = if app.is_postgres() {
        "SELECT string_agg(table_name || '.' || column_name, ',') FROM information_schema.columns \
         WHERE table_schema = 'public'"
    } else {
        "SELECT group_concat(m.name || '.' || p.name, ',') FROM sqlite_master m, \
         pragma_table_info(m.name) p WHERE m.type = 'table'"
    };
    let list = app.query_text(sql).await.unwrap();
    list.split(',')
        .map(|pair| {
            let (table, column) = pair.split_once('.').unwrap();
            (table.to_owned(), column.to_owned())
        })
        .collect()
}

/// The columns that hold `text` anywhere in any row.
async fn holding(app: &TestApp, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (table, column) in columns(app).await {
        let sql = format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM \"{table}\" WHERE CAST(\"{column}\" AS TEXT) LIKE '%{text}%'"
        );
        if app.query_text(&sql).await.unwrap() != "0" {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

both_backends! {
    async fn an_erased_user_leaves_nothing_in_any_table(app) {
        let id = "erase-me-7f3a";
        let user = app.token_for(TokenRequest {
            sub: id.into(),
            email: Some("erase-me@example.com".into()),
            roles: vec!["admin".into()],
            scope: None,
            ttl: std::time::Duration::from_secs(600),
        });
        app.set(&user, "theme", json!("dark")).await;
        app.set(&user, "theme", json!("light")).await;
        set_in(&app, &user, "mobile", "layout", json!("grid")).await;
        // As an administrator, the user changed someone else's settings and an organisation
        // default: those records name them too.
        let other = app.token("other-user");
        app.set(&other, "theme", json!("x")).await;
        app.data(&user, "mutation { setSetting(key: \"theme\", value: \"y\", userId: \"other-user\") { version } }", json!({}))
            .await;
        app.data(&user, "mutation { setOrgDefault(key: \"notifications\", value: false) { key } }", json!({}))
            .await;
        assert!(!holding(&app, id).await.is_empty(), "the search finds the user before");

        assert_eq!(app.data(&user, ERASE, json!({"u": id})).await, json!({"eraseUser": true}));
        assert_eq!(holding(&app, id).await, Vec::<String>::new());
        assert_eq!(holding(&app, "erase-me@example.com").await, Vec::<String>::new());

        // The other user's history keeps the change, by an erased actor.
        let history = app
            .data(&other, "{ settingHistory(key: \"theme\") { nodes { actor newValue } } }", json!({}))
            .await;
        assert_eq!(
            history["settingHistory"]["nodes"],
            json!([{"actor": "erased-user", "newValue": "y"}, {"actor": "other-user", "newValue": "x"}])
        );
        assert_eq!(app.values(&other).await, json!({"theme": "y"}));

        // Erased twice: nothing was left to erase the second time.
        let admin = app.admin_token("privacy-1");
        assert_eq!(app.data(&admin, ERASE, json!({"u": id})).await, json!({"eraseUser": false}));
        // The token still works and starts an empty account.
        assert_eq!(app.values(&user).await, json!({}));
        assert_eq!(export(&app, &user).await["history"], json!([]));
    }

    async fn export_erase_import_gives_every_value_back(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        app.set(&alice, "fontSize", json!(14.5)).await;
        set_in(&app, &alice, "mobile", "layout", json!({"columns": 2})).await;
        set_in(&app, &alice, TYPED_SCOPE, "preferredLanguage", json!("pt-BR")).await;
        let document = export(&app, &alice).await;

        assert_eq!(app.data(&alice, ERASE, json!({"u": "alice"})).await, json!({"eraseUser": true}));
        assert_eq!(values_of(&export(&app, &alice).await), vec![]);

        let report = import(&app, &alice, json!({"d": document})).await;
        assert_eq!(report["created"], 4, "{report}");
        assert_eq!(values_of(&export(&app, &alice).await), values_of(&document));
        assert_eq!(app.values_in(&alice, "mobile").await, json!({"layout": {"columns": 2}}));
    }

    async fn only_administrators_erase_someone_else(app) {
        app.set(&app.token("alice"), "theme", json!("dark")).await;
        let error = app.error(&app.token("mallory"), ERASE, json!({"u": "alice"})).await;
        assert_eq!(code(&error), "FORBIDDEN");
        assert_eq!(app.values(&app.token("alice")).await, json!({"theme": "dark"}));
    }
}

const LOCK: &str = "mutation($k: String!, $v: JSON, $l: Boolean) { setOrgDefault(key: $k, value: $v, locked: $l) { key orgDefault locked } }";
const EFFECTIVE_TYPED: &str = "query($k: [String!]) { effectiveSettings(scope: \"contract-003\", keys: $k) { key value source locked setting { value } } }";

async fn effective_notifications(app: &TestApp, token: &str) -> Value {
    app.data(token, EFFECTIVE_TYPED, json!({"k": ["notifications"]}))
        .await["effectiveSettings"][0]
        .take()
}

both_backends! {
    async fn a_locked_key_applies_to_everyone_refuses_writes_everywhere_and_lets_go_when_unlocked(app) {
        let alice = app.token("alice");
        set_in(&app, &alice, TYPED_SCOPE, "notifications", json!(true)).await;
        set_in(&app, &alice, TYPED_SCOPE, "paymentNotifications", json!(false)).await;
        let admin = app.admin_token("org-admin");
        let locked = app.data(&admin, LOCK, json!({"k": "notifications", "v": false, "l": true})).await;
        assert_eq!(
            locked,
            json!({"setOrgDefault": {"key": "notifications", "orgDefault": false, "locked": true}})
        );

        // Every read path shows the organisation's value.
        assert_eq!(
            effective_notifications(&app, &alice).await,
            json!({"key": "notifications", "value": false, "source": "ORG", "locked": true, "setting": null})
        );
        let typed = app.rest("GET", "/api/v1/user-settings", Some(&alice), None).await;
        assert_eq!(typed.status, 200);
        assert_eq!(typed.body["notifications"], false, "{:?}", typed.body);

        // Every write of the key is refused, and says why.
        for mutation in [
            "mutation { setSetting(key: \"notifications\", value: false, scope: \"contract-003\") { version } }",
            "mutation { setSetting(key: \"notifications\", value: true, scope: \"contract-003\") { version } }",
            "mutation { updateSettings(patch: {notifications: true}, scope: \"contract-003\") { key } }",
            "mutation { deleteSetting(key: \"notifications\", scope: \"contract-003\") }",
            "mutation { resetSettings(scope: \"contract-003\", keys: [\"notifications\"]) { key } }",
        ] {
            let error = app.error(&alice, mutation, json!({})).await;
            assert_eq!(code(&error), "FORBIDDEN", "{mutation}: {error}");
            assert_eq!(error["extensions"]["rule"], "locked", "{error}");
            assert_eq!(error["extensions"]["field"], "notifications", "{error}");
        }
        let rest = app
            .rest("PATCH", "/api/v1/user-settings", Some(&alice), Some(json!({"notifications": false})))
            .await;
        assert_eq!(rest.status, 403, "{:?}", rest.body);
        let document = json!({"format": "settings-api/export", "version": 1, "settings": [
            {"scope": TYPED_SCOPE, "key": "notifications", "value": false},
        ]});
        let report = import(&app, &alice, json!({"d": document})).await;
        assert_eq!(report["errors"][0]["rule"], "locked", "{report}");
        assert_eq!(report["errors"][0]["key"], "notifications", "{report}");
        // Other keys stay writable, and resetting the whole scope leaves the locked key.
        set_in(&app, &alice, TYPED_SCOPE, "paymentNotifications", json!(true)).await;
        app.data(&alice, "mutation { resetSettings(scope: \"contract-003\") { key } }", json!({})).await;
        assert_eq!(app.values_in(&alice, TYPED_SCOPE).await, json!({"notifications": true}));

        // Unlocked: the user's own value applies again, and they may change it.
        app.data(&admin, LOCK, json!({"k": "notifications", "v": false, "l": false})).await;
        assert_eq!(
            effective_notifications(&app, &alice).await,
            json!({"key": "notifications", "value": true, "source": "SCOPE", "locked": false, "setting": {"value": true}})
        );
        set_in(&app, &alice, TYPED_SCOPE, "notifications", json!(false)).await;
        assert_eq!(app.values_in(&alice, TYPED_SCOPE).await, json!({"notifications": false}));
    }

    async fn contract_004_refuses_a_locked_key_in_its_own_envelope_and_writes_nothing(app) {
        let alice = app.token("alice");
        let admin = app.admin_token("org-admin");
        app.data(&admin, LOCK, json!({"k": "theme", "v": "light", "l": true})).await;
        let refused = app
            .rest("PATCH", "/api/v1/users/settings", Some(&alice), Some(json!({"theme": "dark", "digestMode": "WEEKLY"})))
            .await;
        assert_eq!(refused.status, 403, "{:?}", refused.body);
        assert_eq!(refused.body["success"], false, "{:?}", refused.body);
        assert_eq!(refused.body["error"]["code"], "AUTH_FORBIDDEN", "{:?}", refused.body);
        assert!(refused.body["error"]["correlationId"].is_string(), "{:?}", refused.body);
        // Nothing of the patch was written, and the organisation's value is what it reads.
        assert_eq!(app.values_in(&alice, "contract-004").await, json!({}));
        let read = app.rest("GET", "/api/v1/users/settings", Some(&alice), None).await;
        assert_eq!(read.status, 200);
        assert_eq!((read.body["data"]["theme"].clone(), read.body["data"]["digestMode"].clone()), (json!("light"), json!("DAILY")));
    }

    async fn a_lock_needs_a_value_and_an_administrator(app) {
        let admin = app.admin_token("org-admin");
        let error = app.error(&admin, LOCK, json!({"k": "notifications", "v": null, "l": true})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        let error = app.error(&app.token("alice"), LOCK, json!({"k": "notifications", "v": true, "l": true})).await;
        assert_eq!(code(&error), "FORBIDDEN", "{error}");
    }
}

/// The longest `ttlSeconds`: ten years of 366 days.
const TEN_YEARS: i64 = 10 * 366 * 24 * 3600;

const SET_EXPIRING: &str = "mutation($k: String!, $v: JSON!, $s: String! = \"\", $at: DateTime, $ttl: Int) { \
    setSetting(key: $k, value: $v, scope: $s, expiresAt: $at, ttlSeconds: $ttl) { key value version expiresAt } }";

/// Waits past an instant that a value was set to expire at.
async fn until_past(at: &Value) {
    let at = chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap()).unwrap();
    let wait = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(50)).await;
}

both_backends! {
    // The purge is far off: what the reads show is their own doing.
    options = Options::default().env("EXPIRY_PURGE_INTERVAL_MS", "3600000");
    async fn an_expired_value_is_invisible_at_once_on_every_read_path(app) {
        let alice = app.token("alice");
        app.set(&alice, "banner", json!("default-scope")).await;
        set_in(&app, &alice, TYPED_SCOPE, "notifications", json!(true)).await;
        let snoozed = app.data(&alice, SET_EXPIRING, json!({"k": "banner", "v": "snoozed", "s": "web", "ttl": 1})).await;
        assert_eq!(snoozed["setSetting"]["value"], "snoozed");
        let at = snoozed["setSetting"]["expiresAt"].clone();
        assert!(at.is_string(), "{snoozed}");
        let typed = app.data(&alice, SET_EXPIRING, json!({"k": "notifications", "v": false, "s": TYPED_SCOPE, "ttl": 1})).await;
        let plain = app.data(&alice, SET_EXPIRING, json!({"k": "plain", "v": 1, "ttl": 1})).await;
        // Read (and cached) before it expires.
        assert_eq!(app.values_in(&alice, "web").await, json!({"banner": "snoozed"}));
        assert_eq!(app.rest("GET", "/api/v1/user-settings", Some(&alice), None).await.body["notifications"], false);
        until_past(&typed["setSetting"]["expiresAt"]).await;
        until_past(&plain["setSetting"]["expiresAt"]).await;
        until_past(&at).await;

        assert_eq!(app.values_in(&alice, "web").await, json!({}));
        let one = app.data(&alice, "{ setting(key: \"banner\", scope: \"web\") { value } }", json!({})).await;
        assert_eq!(one, json!({"setting": null}));
        let effective = app
            .data(&alice, "{ effectiveSettings(scope: \"web\", keys: [\"banner\"]) { value source } }", json!({}))
            .await;
        assert_eq!(
            effective["effectiveSettings"],
            json!([{"value": "default-scope", "source": "USER"}]),
            "the next layer's value applies"
        );
        let snapshot = app.data(&alice, "{ snapshot(scope: \"web\") { settings { key } } }", json!({})).await;
        assert_eq!(snapshot["snapshot"]["settings"], json!([]));
        let me = app.data(&alice, "{ me { settings(scope: \"web\") { key } } }", json!({})).await;
        assert_eq!(me["me"]["settings"], json!([]));
        assert_eq!(
            app.rest("GET", "/api/v1/users/me/settings/plain", Some(&alice), None).await.status,
            404
        );
        let typed = app.rest("GET", "/api/v1/user-settings", Some(&alice), None).await;
        assert_eq!(typed.body["notifications"], true, "{:?}", typed.body);
        let document = export(&app, &alice).await;
        assert!(
            document["settings"].as_array().unwrap().iter().all(|s| s["key"] != "banner" || s["scope"] == ""),
            "{document}"
        );

        // Written again, the key starts over; the history has the expiry in between.
        let again = app.data(&alice, SET_EXPIRING, json!({"k": "banner", "v": "back", "s": "web"})).await;
        assert_eq!(again["setSetting"], json!({"key": "banner", "value": "back", "version": 2, "expiresAt": null}));
        let history = app
            .data(&alice, "{ settingHistory(key: \"banner\", scope: \"web\") { nodes { kind actor interface version } } }", json!({}))
            .await;
        assert_eq!(
            history["settingHistory"]["nodes"],
            json!([
                {"kind": "CREATE", "actor": "alice", "interface": "graphql", "version": 2},
                {"kind": "EXPIRE", "actor": "system", "interface": "expiry", "version": 1},
                {"kind": "CREATE", "actor": "alice", "interface": "graphql", "version": 1},
            ])
        );
    }

    async fn an_expiry_is_one_of_two_arguments_in_the_future(app) {
        let alice = app.token("alice");
        let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        for (variables, rule) in [
            (json!({"k": "a", "v": 1, "at": future, "ttl": 60}), "oneOf"),
            (json!({"k": "a", "v": 1, "at": past}), "future"),
            (json!({"k": "a", "v": 1, "ttl": 0}), "range"),
            (json!({"k": "a", "v": 1, "ttl": -60}), "range"),
            // Ten years is the most.
            (json!({"k": "a", "v": 1, "ttl": TEN_YEARS + 1}), "range"),
        ] {
            let error = app.error(&alice, SET_EXPIRING, variables.clone()).await;
            assert_eq!(code(&error), "BAD_USER_INPUT", "{variables}: {error}");
            assert_eq!(error["extensions"]["rule"], rule, "{error}");
        }
        let carol = app.token("carol");
        let longest = app.data(&carol, SET_EXPIRING, json!({"k": "long", "v": 1, "ttl": TEN_YEARS})).await;
        let expires: chrono::DateTime<chrono::Utc> =
            longest["setSetting"]["expiresAt"].as_str().unwrap().parse().unwrap();
        assert!(expires > chrono::Utc::now() + chrono::Duration::days(3650), "{longest}");
        // A later write without an expiry keeps the value for good.
        let set = app.data(&alice, SET_EXPIRING, json!({"k": "a", "v": 1, "at": future})).await;
        assert!(set["setSetting"]["expiresAt"].is_string());
        app.data(&alice, "mutation { updateSettings(patch: {a: 2}) { key } }", json!({})).await;
        let read = app.data(&alice, "{ settings { key value expiresAt } }", json!({})).await;
        assert_eq!(read["settings"], json!([{"key": "a", "value": 2, "expiresAt": null}]));
        // An export carries the expiry, and an import gives it back.
        app.data(&alice, SET_EXPIRING, json!({"k": "b", "v": 1, "at": future})).await;
        let document = export(&app, &alice).await;
        let bob = app.token("bob");
        import(&app, &bob, json!({"d": document})).await;
        let imported = app.data(&bob, "{ settings(keys: [\"b\"]) { expiresAt } }", json!({})).await;
        assert_eq!(imported["settings"][0]["expiresAt"], set["setSetting"]["expiresAt"]);
    }
}

both_backends! {
    options = Options::default().env("EXPIRY_PURGE_INTERVAL_MS", "50");
    async fn the_purge_records_an_expiry_in_the_history_and_the_feed(app) {
        let alice = app.token("alice");
        let cursor = app.data(&alice, "{ snapshot { cursor } }", json!({})).await["snapshot"]["cursor"].clone();
        let set = app.data(&alice, SET_EXPIRING, json!({"k": "dismissed", "v": true, "ttl": 1})).await;
        until_past(&set["setSetting"]["expiresAt"]).await;
        let changes = "query($c: String!) { changes(since: $c) { changes { key kind version actor setting { value } } } }";
        let mut seen = Value::Null;
        for _ in 0..100 {
            seen = app.data(&alice, changes, json!({"c": cursor})).await["changes"]["changes"].take();
            if seen.as_array().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            seen,
            json!([
                {"key": "dismissed", "kind": "CREATE", "version": 1, "actor": "alice", "setting": {"value": true}},
                {"key": "dismissed", "kind": "EXPIRE", "version": 1, "actor": "system", "setting": null},
            ])
        );
        assert_eq!(history_count(&app, "alice").await, 2, "recorded once");
        assert_eq!(
            app.query_text("SELECT CAST(COUNT(*) AS TEXT) FROM settings").await.unwrap(),
            "0",
            "the row is gone"
        );
    }
}

const RESTORE: &str = "mutation($s: String! = \"\", $at: DateTime!) { restoreSettings(scope: $s, asOf: $at) { key value version } }";

/// An instant between two writes of the test.
async fn instant() -> String {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    at
}

both_backends! {
    async fn a_restore_puts_every_key_back_across_creates_updates_and_deletes(app) {
        let alice = app.token("alice");
        app.set(&alice, "a", json!("a1")).await;
        app.set(&alice, "a", json!("a2")).await;
        app.set(&alice, "b", json!({"b": 1})).await;
        app.set(&alice, "same", json!(true)).await;
        set_in(&app, &alice, "mobile", "m", json!(1)).await;
        let yesterday = instant().await;
        app.set(&alice, "a", json!("a3")).await;
        app.data(&alice, "mutation { deleteSetting(key: \"b\") }", json!({})).await;
        app.set(&alice, "c", json!("new")).await;
        app.data(&alice, "mutation { updateSettings(patch: {c: \"newer\"}) { key } }", json!({})).await;
        set_in(&app, &alice, "mobile", "m", json!(2)).await;

        let restored = app.data(&alice, RESTORE, json!({"at": yesterday})).await;
        assert_eq!(
            restored["restoreSettings"],
            json!([
                {"key": "a", "value": "a2", "version": 4},
                {"key": "b", "value": {"b": 1}, "version": 2},
                {"key": "same", "value": true, "version": 1},
            ])
        );
        let history = app
            .data(&alice, "{ settingHistory(key: \"c\") { nodes { kind oldValue newValue } } }", json!({}))
            .await;
        assert_eq!(
            history["settingHistory"]["nodes"][0],
            json!({"kind": "RESTORE", "oldValue": "newer", "newValue": null})
        );
        let history = app
            .data(&alice, "{ settingHistory(key: \"a\") { nodes { kind newValue } } }", json!({}))
            .await;
        assert_eq!(history["settingHistory"]["nodes"][0], json!({"kind": "RESTORE", "newValue": "a2"}));
        // Only the scope asked for.
        assert_eq!(app.values_in(&alice, "mobile").await, json!({"m": 2}));
        // Restoring to the same instant again changes nothing.
        let again = app.data(&alice, RESTORE, json!({"at": yesterday})).await;
        assert_eq!(again["restoreSettings"], restored["restoreSettings"]);
        assert_eq!(history_count(&app, "alice").await, 13);

        let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
        let error = app.error(&alice, RESTORE, json!({"at": tomorrow})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
    }
}

both_backends! {
    options = Options::default()
        .env("HISTORY_KEEP_VERSIONS", "2")
        .env("HISTORY_PRUNE_INTERVAL_SECS", "1");
    async fn a_restore_beyond_the_retained_history_is_refused_and_writes_nothing(app) {
        let alice = app.token("alice");
        app.set(&alice, "x", json!(1)).await;
        let early = instant().await;
        for value in 2..=4 {
            app.set(&alice, "x", json!(value)).await;
        }
        for _ in 0..100 {
            if history_count(&app, "alice").await == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(history_count(&app, "alice").await, 2, "pruned to the newest two");
        let error = app.error(&alice, RESTORE, json!({"at": early})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["rule"], "retainedHistory", "{error}");
        assert_eq!(app.values(&alice).await, json!({"x": 4}));
        // Within the retained history it works.
        let later = instant().await;
        app.set(&alice, "x", json!(5)).await;
        let restored = app.data(&alice, RESTORE, json!({"at": later})).await;
        assert_eq!(restored["restoreSettings"], json!([{"key": "x", "value": 4, "version": 6}]));
    }
}
