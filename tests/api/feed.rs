//! The change feed: a snapshot and its cursor, the changes after a cursor (deletes included)
//! from every interface, expired cursors, and positions that follow commit order.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::*;

const SNAPSHOT: &str =
    "query($s: String!) { snapshot(scope: $s) { cursor settings { key value version } } }";
const CHANGES: &str = "query($since: String!, $scope: String, $first: Int!) { changes(since: $since, scope: $scope, first: $first) { cursor hasMore changes { cursor key scope kind version setting { key value version } } } }";

/// Every change after `since` in `scope` (all scopes when None), a page of `first` at a time:
/// the changes and the cursor to continue from.
async fn follow(
    app: &TestApp,
    token: &str,
    since: &str,
    scope: Option<&str>,
    first: i32,
) -> (Vec<Value>, String) {
    let (mut cursor, mut all) = (since.to_owned(), Vec::new());
    loop {
        let data = app
            .data(
                token,
                CHANGES,
                json!({"since": cursor, "scope": scope, "first": first}),
            )
            .await;
        let page = &data["changes"];
        all.extend(page["changes"].as_array().unwrap().iter().cloned());
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if page["hasMore"] != true {
            return (all, cursor);
        }
    }
}

/// Applies feed events to a local copy, as a client does: a `setting: null` removes the key.
fn apply(state: &mut BTreeMap<(String, String), Value>, events: &[Value]) {
    for event in events {
        let at = (
            event["scope"].as_str().unwrap().to_owned(),
            event["key"].as_str().unwrap().to_owned(),
        );
        match &event["setting"] {
            Value::Null => state.remove(&at),
            setting => state.insert(at, setting["value"].clone()),
        };
    }
}

fn local(snapshot: &Value, scope: &str) -> BTreeMap<(String, String), Value> {
    snapshot["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                (scope.to_owned(), s["key"].as_str().unwrap().to_owned()),
                s["value"].clone(),
            )
        })
        .collect()
}

both_backends! {
    async fn changes_since_an_old_snapshot_reproduce_the_final_state_deletes_included(app) {
        let token = app.token("alice");
        app.set(&token, "kept", json!(1)).await;
        let old = app.data(&token, SNAPSHOT, json!({"s": ""})).await["snapshot"].clone();
        let mut state = local(&old, "");

        // Creates, updates, deletes, a reset, a revert, a patch and a legacy REST write.
        app.set(&token, "theme", json!("dark")).await;
        app.set(&token, "theme", json!("light")).await;
        app.set(&token, "gone", json!([1])).await;
        app.data(&token, r#"mutation { deleteSetting(key: "gone") }"#, json!({})).await;
        app.data(&token, r#"mutation { revertSetting(key: "theme", toVersion: 1) { version } }"#, json!({})).await;
        app.data(&token, "mutation($p: JSON!) { updateSettings(patch: $p) { key } }", json!({"p": {"a": 1, "kept": null}})).await;
        app.rest("PUT", "/settings/user", Some(&token), Some(json!({"rest": true}))).await;
        app.set(&token, "resetme", json!(0)).await;
        app.data(&token, r#"mutation { resetSettings(keys: ["resetme"]) { key } }"#, json!({})).await;

        let (events, cursor) = follow(&app, &token, old["cursor"].as_str().unwrap(), Some(""), 2).await;
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["CREATE", "UPDATE", "CREATE", "DELETE", "REVERT", "CREATE", "DELETE", "CREATE", "CREATE", "RESET"],
            "{events:?}"
        );
        apply(&mut state, &events);
        let now = app.data(&token, SNAPSHOT, json!({"s": ""})).await["snapshot"].clone();
        assert_eq!(state, local(&now, ""), "the feed reproduces the settings");
        // The cursor after the last page is the snapshot's: nothing more to read.
        assert_eq!(cursor, now["cursor"].as_str().unwrap());
        let (after, _) = follow(&app, &token, &cursor, None, 100).await;
        assert!(after.is_empty(), "{after:?}");
        // Every event carries a cursor that resumes right after it.
        let third = events[2]["cursor"].as_str().unwrap();
        let (rest, _) = follow(&app, &token, third, Some(""), 100).await;
        assert_eq!(rest.len(), events.len() - 3);
    }

    async fn the_feed_covers_every_scope_unless_one_is_named_and_is_per_user(app) {
        let token = app.token("alice");
        let start = app.data(&token, SNAPSHOT, json!({"s": ""})).await["snapshot"]["cursor"].as_str().unwrap().to_owned();
        app.set(&token, "a", json!(1)).await;
        app.data(&token, r#"mutation { setSetting(scope: "mobile", key: "b", value: 2) { key } }"#, json!({})).await;
        app.set(&app.token("bob"), "bobs", json!(3)).await;
        let (all, _) = follow(&app, &token, &start, None, 100).await;
        let keys: Vec<&str> = all.iter().map(|e| e["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["a", "b"]);
        let (mobile, _) = follow(&app, &token, &start, Some("mobile"), 100).await;
        assert_eq!(mobile.len(), 1);
        assert_eq!(mobile[0]["scope"], "mobile");
    }

    async fn a_cursor_that_is_not_one_or_a_bad_page_size_is_refused_clearly(app) {
        let token = app.token("alice");
        let error = app.error(&token, CHANGES, json!({"since": "nonsense", "first": 10})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["rule"], "cursor");
        let start = app.data(&token, SNAPSHOT, json!({"s": ""})).await["snapshot"]["cursor"].as_str().unwrap().to_owned();
        let error = app.error(&token, CHANGES, json!({"since": start, "first": 0})).await;
        assert_eq!(error["extensions"]["field"], "first", "{error}");
        let error = app.error(&token, CHANGES, json!({"since": start, "first": 1001})).await;
        assert_eq!(error["extensions"]["field"], "first", "{error}");
    }
}

both_backends! {
    options = Options::default()
        .env("HISTORY_KEEP_DAYS", "1")
        .env("HISTORY_KEEP_VERSIONS", "0")
        .env("HISTORY_PRUNE_INTERVAL_SECS", "1");
    async fn a_cursor_behind_the_pruned_history_is_cursor_expired(app) {
        let token = app.token("alice");
        let old = app.data(&token, SNAPSHOT, json!({"s": ""})).await["snapshot"]["cursor"].as_str().unwrap().to_owned();
        app.set(&token, "theme", json!("dark")).await;
        let seen = app.data(&token, SNAPSHOT, json!({"s": ""})).await["snapshot"]["cursor"].as_str().unwrap().to_owned();
        // The change becomes older than the retention; pruning takes it.
        app.execute_sql("UPDATE setting_changes SET changed_at = '2001-01-01 00:00:00+00'").await;
        for _ in 0..100 {
            if history_count(&app, "alice").await == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(history_count(&app, "alice").await, 0, "the history was pruned");
        let error = app.error(&token, CHANGES, json!({"since": old, "first": 10})).await;
        assert_eq!(code(&error), "CURSOR_EXPIRED", "{error}");
        // A client that had seen the pruned change is fine.
        let (after, _) = follow(&app, &token, &seen, None, 10).await;
        assert!(after.is_empty());
    }
}

/// PostgreSQL only (SQLite has one writer at a time): writers racing on one user while a
/// reader follows the feed. Positions handed out in one order and committed in another would
/// let the reader pass a change that commits later below its cursor.
#[tokio::test]
async fn a_reader_following_the_feed_never_misses_a_change_committed_behind_its_cursor() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = app.token("alice");
    let start = app.data(&token, SNAPSHOT, json!({"s": ""})).await["snapshot"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let writers = (0..8).map(|w| {
        let (app, token) = (&app, &token);
        async move {
            for n in 0..25 {
                // One-key writes (the one-statement path) and patches (the transaction).
                if n % 2 == 0 {
                    app.set(token, &format!("w{w}"), json!(n)).await;
                } else {
                    app.data(
                        token,
                        "mutation($p: JSON!) { updateSettings(patch: $p) { key } }",
                        json!({"p": {format!("p{w}"): n}}),
                    )
                    .await;
                }
            }
        }
    });
    let reader = async {
        let (mut cursor, mut seen) = (start.clone(), Vec::new());
        for _ in 0..400 {
            let data = app
                .data(&token, CHANGES, json!({"since": cursor, "first": 1000}))
                .await;
            let page = &data["changes"];
            seen.extend(
                page["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["cursor"].as_str().unwrap().to_owned()),
            );
            cursor = page["cursor"].as_str().unwrap().to_owned();
            if seen.len() == 200 {
                break;
            }
        }
        (seen, cursor)
    };
    let (_, (mut seen, cursor)) =
        futures_util::future::join(futures_util::future::join_all(writers), reader).await;
    // Whatever the reader had not reached when the writers finished, it reads now.
    let (rest, _) = follow(&app, &token, &cursor, None, 1000).await;
    seen.extend(
        rest.iter()
            .map(|e| e["cursor"].as_str().unwrap().to_owned()),
    );
    let (all, _) = follow(&app, &token, &start, None, 1000).await;
    let all: Vec<String> = all
        .iter()
        .map(|e| e["cursor"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 200);
    assert_eq!(seen, all, "the reader saw every change once, in feed order");
}
