//! PostgreSQL: a write that only updates stored keys (most merge patches) is planned on the
//! settings as last read and written in one statement that applies only if every key is
//! still at the version read (src/settings/checked_update.rs); patches of different users that
//! arrive together share that statement. Whatever was read, the outcome must be the one the
//! locking transaction gives: nothing lost when the settings read are out of date, each
//! refusal decided on the stored rows, and one user's refusal never holds back another's write.

use std::sync::Arc;

use serde_json::{Value, json};
use settings_api::{
    error::Error,
    settings::{Origin, Preconditions, Scope, Setting, Store},
};
use tokio::task::JoinSet;

use crate::helpers::*;

const LOCK: &str = "mutation($k: String!, $v: JSON, $l: Boolean) { setOrgDefault(key: $k, value: $v, locked: $l) { key locked } }";
const TYPED_SCOPE: &str = "contract-003";

/// Starts every patch (user, patch) in `scope` before any runs (the test's runtime runs one
/// task at a time), then waits for them all: the answers in the order of `patches`.
async fn patch_together(
    store: &Arc<Store>,
    scope: &str,
    patches: Vec<(String, Value)>,
) -> Vec<Result<Vec<Setting>, Error>> {
    let scope = Scope::parse(scope).unwrap();
    let mut tasks = JoinSet::new();
    for (at, (user, patch)) in patches.into_iter().enumerate() {
        let (store, scope) = (store.clone(), scope.clone());
        tasks.spawn(async move {
            let origin = Origin::new(user.clone(), "graphql", format!("together-{at}"));
            let written = store
                .apply_patch(&origin, &user, &scope, patch, &Preconditions::default())
                .await;
            (at, written)
        });
    }
    let mut answers: Vec<_> = tasks.join_all().await;
    answers.sort_by_key(|(at, _)| *at);
    answers.into_iter().map(|(_, written)| written).collect()
}

/// The user's history as (key, kind, version, position, new value), in feed order.
async fn history_of(app: &TestApp, user: &str) -> Value {
    let text = app
        .query_text(&format!(
            "SELECT COALESCE(json_agg(json_build_array(key, kind, version, position, new_value) \
             ORDER BY position), '[]')::text FROM setting_changes WHERE user_id = '{user}'"
        ))
        .await
        .expect("a history");
    serde_json::from_str(&text).unwrap()
}

async fn patch(app: &TestApp, token: &str, patch: Value, expected: Value) -> Value {
    let query = "mutation($p: JSON!, $e: JSON) { updateSettings(patch: $p, expectedVersions: $e) { key value version } }";
    app.graphql(token, query, json!({"p": patch, "e": expected}))
        .await
        .1
}

#[tokio::test]
async fn patches_of_many_users_share_statements_and_each_keeps_its_own_history() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let users: Vec<String> = (0..40).map(|n| format!("user-{n:02}")).collect();
    for user in &users {
        let token = app.token(user);
        app.set(&token, "prefs", json!({"font": "serif", "size": 12}))
            .await;
        app.set(&token, "tags", json!(["a"])).await;
    }
    app.store
        .flush_notices(std::time::Duration::from_secs(5))
        .await;
    let before = app.store.statements();
    let patches = users
        .iter()
        .map(|user| {
            let patch = json!({"prefs": {"size": null, "for": user}, "tags": [user]});
            (user.clone(), patch)
        })
        .collect();
    let answers = patch_together(&app.store, "", patches).await;
    app.store
        .flush_notices(std::time::Duration::from_secs(5))
        .await;
    let statements = app.store.statements() - before;

    for (user, answer) in users.iter().zip(answers) {
        let written: Vec<(String, Value, i32)> = answer
            .expect("patched")
            .into_iter()
            .map(|setting| (setting.key, setting.value, setting.version))
            .collect();
        let prefs = json!({"font": "serif", "for": user});
        assert_eq!(
            written,
            [
                ("prefs".to_owned(), prefs.clone(), 2),
                ("tags".to_owned(), json!([user]), 2)
            ],
            "{user}"
        );
        assert_eq!(
            history_of(&app, user).await,
            json!([
                ["prefs", "create", 1, 1, {"font": "serif", "size": 12}],
                ["tags", "create", 1, 2, ["a"]],
                ["prefs", "update", 2, 3, prefs],
                ["tags", "update", 2, 4, [user]],
            ]),
            "{user}"
        );
        assert_eq!(
            app.values(&app.token(user)).await,
            json!({"prefs": prefs, "tags": [user]})
        );
    }
    // Reads of the settings (statements of at most 32) and the writes (of at most 64, each
    // notifying); a transaction for each patch would be 120 and more.
    assert!(statements <= 10, "40 patches took {statements} statements");
}

/// Alice's token, once her `prefs` (version 1) and `other` (1) are stored and read, so that the
/// cache holds them.
async fn alice_with_cached_settings(app: &TestApp) -> String {
    let token = app.token("alice");
    app.set(&token, "prefs", json!({"font": "serif"})).await;
    app.set(&token, "other", json!(1)).await;
    assert_eq!(
        app.values(&token).await,
        json!({"prefs": {"font": "serif"}, "other": 1})
    );
    token
}

#[tokio::test]
async fn a_patch_planned_on_settings_changed_since_they_were_read_loses_nothing() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    // The cache holds version 1 of `prefs`; another writer then changes it, unseen (as an
    // instance whose notice has not arrived yet).
    let token = alice_with_cached_settings(&app).await;
    app.execute_sql(
        "UPDATE settings SET value = value || '{\"size\": 14}', version = version + 1 \
         WHERE user_id = 'alice' AND key = 'prefs'",
    )
    .await;

    let data = patch(
        &app,
        &token,
        json!({"prefs": {"font": "mono"}, "other": 2}),
        json!(null),
    )
    .await;
    assert_eq!(
        data["data"]["updateSettings"],
        json!([
            {"key": "other", "value": 2, "version": 2},
            {"key": "prefs", "value": {"font": "mono", "size": 14}, "version": 3}
        ]),
        "{data}"
    );
    assert_eq!(
        app.values(&token).await,
        json!({"prefs": {"font": "mono", "size": 14}, "other": 2})
    );
}

const SETTINGS: &str = "{ settings { key value version } }";

#[tokio::test]
async fn after_a_patch_the_cache_holds_what_it_left_and_the_next_patch_and_read_need_no_read() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = app.token("alice");
    app.set(&token, "prefs", json!({"font": "serif"})).await;
    app.set(&token, "tags", json!(["a"])).await;
    let update = "mutation($p: JSON!) { updateSettings(patch: $p) { key version } }";
    // The settings are read once, for the first patch.
    let (_, statements) = app
        .data_and_statements(&token, update, json!({"p": {"prefs": {"size": 14}}}))
        .await;
    assert_eq!(statements, 2, "the read and the write, which notifies");
    let (data, statements) = app.data_and_statements(&token, SETTINGS, json!({})).await;
    assert_eq!(
        data["settings"],
        json!([
            {"key": "prefs", "value": {"font": "serif", "size": 14}, "version": 2},
            {"key": "tags", "value": ["a"], "version": 1}
        ])
    );
    assert_eq!(statements, 0, "the read after the patch");
    let (_, statements) = app
        .data_and_statements(
            &token,
            update,
            json!({"p": {"tags": ["b"], "prefs": {"font": null}}}),
        )
        .await;
    assert_eq!(statements, 1, "the next patch: the write");
    let (data, statements) = app.data_and_statements(&token, SETTINGS, json!({})).await;
    assert_eq!(
        data["settings"],
        json!([
            {"key": "prefs", "value": {"size": 14}, "version": 3},
            {"key": "tags", "value": ["b"], "version": 2}
        ])
    );
    assert_eq!(statements, 0);
}

#[tokio::test]
async fn a_patch_after_a_commit_the_cache_did_not_hear_of_leaves_the_next_read_to_the_database() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = alice_with_cached_settings(&app).await;
    // Another instance commits a change of `other`, whose notice has not arrived: the cache
    // still holds `other` at 1.
    app.execute_sql(
        "WITH bump AS (UPDATE users SET feed_position = feed_position + 1 WHERE id = 'alice' \
         RETURNING feed_position) \
         UPDATE settings SET value = '2', version = version + 1 \
         WHERE user_id = 'alice' AND key = 'other'",
    )
    .await;
    // The patch of `prefs` is planned on the cached settings and applies (prefs is as read),
    // but what it leaves is not the settings read with `prefs` replaced.
    let data = patch(&app, &token, json!({"prefs": {"size": 14}}), json!(null)).await;
    assert_eq!(
        data["data"]["updateSettings"],
        json!([{"key": "prefs", "value": {"font": "serif", "size": 14}, "version": 2}]),
        "{data}"
    );
    assert_eq!(
        app.values(&token).await,
        json!({"prefs": {"font": "serif", "size": 14}, "other": 2})
    );
}

#[tokio::test]
async fn expected_versions_are_checked_against_the_stored_rows_not_the_settings_read() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = app.token("alice");
    app.set(&token, "prefs", json!({"font": "serif"})).await;
    let bump =
        "UPDATE settings SET version = version + 1 WHERE user_id = 'alice' AND key = 'prefs'";

    // What was read says version 1; the stored row is at 2, as the client expects.
    app.values(&token).await;
    app.execute_sql(bump).await;
    let data = patch(
        &app,
        &token,
        json!({"prefs": {"size": 1}}),
        json!({"prefs": 2}),
    )
    .await;
    assert_eq!(
        data["data"]["updateSettings"],
        json!([{"key": "prefs", "value": {"font": "serif", "size": 1}, "version": 3}]),
        "{data}"
    );

    // What was read says version 3, as the client expects; the stored row is at 4.
    app.values(&token).await;
    app.execute_sql(bump).await;
    let data = patch(
        &app,
        &token,
        json!({"prefs": {"size": 2}}),
        json!({"prefs": 3}),
    )
    .await;
    assert_eq!(
        data["errors"][0]["extensions"]["code"], "CONFLICT",
        "{data}"
    );
    assert_eq!(
        data["errors"][0]["extensions"]["currentVersion"], 4,
        "{data}"
    );
    assert_eq!(
        app.values(&token).await,
        json!({"prefs": {"font": "serif", "size": 1}})
    );
}

#[tokio::test]
async fn a_patch_refused_by_its_own_rules_writes_none_of_its_keys_and_holds_back_no_other() {
    let options = Options::default().env("QUOTA_BYTES_PER_SCOPE", "200");
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let set = "mutation($k: String!, $v: JSON!) { setSetting(scope: \"contract-003\", key: $k, value: $v) { version } }";
    for user in ["alice", "bob", "carol"] {
        let token = app.token(user);
        app.data(&token, set, json!({"k": "nickname", "v": "x"}))
            .await;
        app.data(&token, set, json!({"k": "notifications", "v": true}))
            .await;
        app.data(&token, set, json!({"k": "note", "v": "x"})).await;
    }
    let history_before = history_count(&app, "bob").await;

    // Past the byte quota of bob's scope, in one key of two.
    let answers = patch_together(
        &app.store,
        TYPED_SCOPE,
        vec![
            ("alice".to_owned(), json!({"nickname": "al", "note": "a"})),
            (
                "bob".to_owned(),
                json!({"nickname": "b", "note": "b".repeat(300)}),
            ),
            ("carol".to_owned(), json!({"nickname": "caz", "note": "c"})),
        ],
    )
    .await;
    let [alice, bob, carol] = <[_; 3]>::try_from(answers).ok().unwrap();
    assert_eq!(alice.expect("alice's patch").len(), 2);
    assert_eq!(carol.expect("carol's patch").len(), 2);
    match bob {
        Err(Error::BadInput(violation)) => assert_eq!(violation.rule, "quotaBytes"),
        other => panic!("bob's patch past the quota: {other:?}"),
    }

    // A key the organisation locked, beside a free one.
    let admin = app.admin_token("org-admin");
    app.data(
        &admin,
        LOCK,
        json!({"k": "notifications", "v": false, "l": true}),
    )
    .await;
    let answers = patch_together(
        &app.store,
        TYPED_SCOPE,
        vec![
            (
                "alice".to_owned(),
                json!({"nickname": "alice", "note": "b"}),
            ),
            (
                "bob".to_owned(),
                json!({"nickname": "bobby", "notifications": false}),
            ),
        ],
    )
    .await;
    let [alice, bob] = <[_; 2]>::try_from(answers).ok().unwrap();
    let versions: Vec<i32> = alice
        .expect("alice's patch")
        .iter()
        .map(|setting| setting.version)
        .collect();
    assert_eq!(versions, [3, 3]);
    assert!(
        matches!(&bob, Err(Error::Locked { key }) if key == "notifications"),
        "{bob:?}"
    );

    assert_eq!(
        app.values_in(&app.token("bob"), TYPED_SCOPE).await,
        json!({"nickname": "x", "notifications": true, "note": "x"})
    );
    assert_eq!(history_count(&app, "bob").await, history_before);
}
