//! PostgreSQL: replacements of stored settings, and reads of whole scopes, that arrive
//! together go to the database together (src/settings/batch.rs). Each must still get its own
//! answer: a write its own version, history row and feed position, and one that cannot take
//! the shared statement must not hold back the others; a read its own user's settings. The
//! operations go straight to the store, all started before any of them runs, so that they are
//! queued together whatever the machine's speed.

use serde_json::{Value, json};
use settings_api::{
    error::Error,
    settings::{Key, Scope},
};
use tokio::task::JoinSet;

use crate::helpers::*;

const LOCK: &str = "mutation($k: String!, $v: JSON, $l: Boolean) { setOrgDefault(key: $k, value: $v, locked: $l) { key locked } }";
const TYPED_SCOPE: &str = "contract-003";

/// The user's history of `key` as (kind, version, position, new value), oldest first.
async fn history_of(app: &TestApp, user: &str, key: &str) -> Value {
    let text = app
        .query_text(&format!(
            "SELECT COALESCE(json_agg(json_build_array(kind, version, position, new_value) \
             ORDER BY position), '[]')::text FROM setting_changes \
             WHERE user_id = '{user}' AND key = '{key}'"
        ))
        .await
        .expect("a history");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn replacements_of_many_users_share_statements_and_each_keeps_its_own_history() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let users: Vec<String> = (0..40).map(|n| format!("user-{n:02}")).collect();
    for user in &users {
        app.set(&app.token(user), "theme", json!("light")).await;
    }
    app.store
        .flush_notices(std::time::Duration::from_secs(5))
        .await;
    let before = app.store.statements();
    let writes = users
        .iter()
        .map(|user| (user.clone(), "theme", json!({"mode": "dark", "for": user})))
        .collect();
    let answers = write_together(&app.store, "", writes).await;
    app.store
        .flush_notices(std::time::Duration::from_secs(5))
        .await;
    let statements = app.store.statements() - before;

    for (user, answer) in users.iter().zip(answers) {
        let (setting, created) = answer.expect("replaced");
        assert!(!created, "{user}");
        assert_eq!(setting.user_id, *user);
        assert_eq!(setting.version, 2, "{user}");
        assert_eq!(setting.value, json!({"mode": "dark", "for": user}));
        assert_eq!(
            history_of(&app, user, "theme").await,
            json!([
                ["create", 1, 1, "light"],
                ["update", 2, 2, {"mode": "dark", "for": user}]
            ]),
            "{user}"
        );
        assert_eq!(
            app.values(&app.token(user)).await,
            json!({"theme": {"mode": "dark", "for": user}})
        );
    }
    // Statements of at most 64 replacements, each notifying; one statement for each
    // replacement would be 40.
    assert!(
        statements <= 6,
        "40 replacements took {statements} statements"
    );
}

#[tokio::test]
async fn replacements_of_one_user_that_arrive_together_each_get_their_own_version() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = app.token("alice");
    app.set(&token, "counter", json!(0)).await;
    app.set(&token, "other", json!(0)).await;
    let writes = (1..=6)
        .map(|n| {
            (
                "alice".to_owned(),
                if n % 2 == 0 { "counter" } else { "other" },
                json!(n),
            )
        })
        .collect();
    let answers = write_together(&app.store, "", writes).await;
    let mut versions: Vec<(String, i32)> = answers
        .into_iter()
        .map(|answer| {
            let (setting, _) = answer.expect("replaced");
            (setting.key, setting.version)
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        [
            ("counter".to_owned(), 2),
            ("counter".to_owned(), 3),
            ("counter".to_owned(), 4),
            ("other".to_owned(), 2),
            ("other".to_owned(), 3),
            ("other".to_owned(), 4),
        ]
    );
    // Every write kept its history row, with the user's positions one after another.
    let positions = app
        .query_text(
            "SELECT string_agg(position::text, ',' ORDER BY position) FROM setting_changes \
             WHERE user_id = 'alice'",
        )
        .await;
    assert_eq!(positions.as_deref(), Some("1,2,3,4,5,6,7,8"));
    assert_eq!(app.values(&token).await, json!({"counter": 6, "other": 5}));
}

#[tokio::test]
async fn a_replacement_refused_by_its_own_rules_does_not_hold_back_the_others() {
    let options = Options::default().env("QUOTA_BYTES_PER_SCOPE", "200");
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    for user in ["alice", "bob", "carol"] {
        app.set(&app.token(user), "nickname", json!("x")).await;
    }
    let bob = app.token("bob");
    let set = "mutation($v: JSON!) { setSetting(scope: \"contract-003\", key: \"notifications\", value: $v) { version } }";
    app.data(&bob, set, json!({"v": true})).await;
    let alice = app.token("alice");
    let nickname = "mutation { setSetting(scope: \"contract-003\", key: \"nickname\", value: \"a\") { version } }";
    app.data(&alice, nickname, json!({})).await;
    let admin = app.admin_token("org-admin");
    app.data(
        &admin,
        LOCK,
        json!({"k": "notifications", "v": false, "l": true}),
    )
    .await;

    let answers = write_together(
        &app.store,
        "",
        vec![
            ("alice".to_owned(), "nickname", json!("al")),
            // Past the byte quota of bob's default scope.
            ("bob".to_owned(), "nickname", json!("b".repeat(300))),
            ("carol".to_owned(), "nickname", json!("caz")),
        ],
    )
    .await;
    let [alice, bob_answer, carol] = <[_; 3]>::try_from(answers).ok().unwrap();
    assert_eq!(alice.expect("alice's write").0.value, json!("al"));
    assert_eq!(carol.expect("carol's write").0.value, json!("caz"));
    match bob_answer {
        Err(Error::BadInput(violation)) => assert_eq!(violation.rule, "quotaBytes"),
        other => panic!("bob's write past the quota: {other:?}"),
    }
    assert_eq!(app.values(&bob).await, json!({"nickname": "x"}));

    // A locked key beside a free one.
    let answers = write_together(
        &app.store,
        TYPED_SCOPE,
        vec![
            ("bob".to_owned(), "notifications", json!(true)),
            ("alice".to_owned(), "nickname", json!("alice")),
        ],
    )
    .await;
    let [bob_answer, alice] = <[_; 2]>::try_from(answers).ok().unwrap();
    assert!(
        matches!(&bob_answer, Err(Error::Locked { key }) if key == "notifications"),
        "{bob_answer:?}"
    );
    assert_eq!(alice.expect("alice's write").0.version, 2);
    assert_eq!(history_count(&app, "bob").await, 2);
}

#[tokio::test]
async fn a_statement_the_database_refuses_is_retried_one_replacement_at_a_time() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    for user in ["alice", "bob", "carol"] {
        app.set(&app.token(user), "theme", json!("light")).await;
    }
    // A rule of the operator's that the service does not know: one value fails the whole
    // statement it is in.
    app.execute_sql(
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.value = '\"boom\"'::jsonb THEN RAISE EXCEPTION 'boom is refused'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_boom BEFORE UPDATE ON settings FOR EACH ROW \
         EXECUTE FUNCTION refuse_boom()",
    )
    .await;
    let answers = write_together(
        &app.store,
        "",
        vec![
            ("alice".to_owned(), "theme", json!("dark")),
            ("bob".to_owned(), "theme", json!("boom")),
            ("carol".to_owned(), "theme", json!("dark")),
        ],
    )
    .await;
    let [alice, bob, carol] = <[_; 3]>::try_from(answers).ok().unwrap();
    assert_eq!(alice.expect("alice's write").0.version, 2);
    assert_eq!(carol.expect("carol's write").0.version, 2);
    assert!(bob.is_err(), "{bob:?}");
    assert_eq!(
        app.values(&app.token("bob")).await,
        json!({"theme": "light"})
    );
    assert_eq!(history_count(&app, "bob").await, 1);
    assert_eq!(history_count(&app, "alice").await, 2);
}

#[tokio::test]
async fn reads_of_many_users_share_statements_and_each_gets_its_own_settings() {
    let options = Options::default().env("SETTINGS_CACHE_MB", "0");
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let users: Vec<String> = (0..30).map(|n| format!("user-{n:02}")).collect();
    for (n, user) in users.iter().enumerate() {
        let token = app.token(user);
        app.set(&token, "theme", json!({"for": user})).await;
        app.set(&token, "n", json!(n)).await;
    }
    app.store
        .flush_notices(std::time::Duration::from_secs(5))
        .await;
    // Every user, one who has nothing, one user twice, and one read of a single key.
    let mut reads: Vec<(String, Option<&str>)> = users.iter().map(|u| (u.clone(), None)).collect();
    reads.push(("nobody".to_owned(), None));
    reads.push((users[3].clone(), None));
    reads.push((users[4].clone(), Some("n")));
    let before = app.store.statements();
    let scope = Scope::parse("").unwrap();
    let mut tasks = JoinSet::new();
    for (at, (user, key)) in reads.clone().into_iter().enumerate() {
        let (store, scope) = (app.store.clone(), scope.clone());
        let key = key.map(|key| [Key::parse(key, "key").unwrap()]);
        tasks.spawn(async move {
            let listed = store
                .list(&user, &scope, key.as_ref().map(|k| k.as_slice()))
                .await;
            (at, listed)
        });
    }
    let mut answers = tasks.join_all().await;
    answers.sort_by_key(|(at, _)| *at);
    let statements = app.store.statements() - before;

    for ((user, key), (_, listed)) in reads.iter().zip(answers) {
        let listed = listed.expect("read");
        // Each user's settings come ordered by key, whatever the order they were written in.
        let keys: Vec<&str> = listed.iter().map(|setting| setting.key.as_str()).collect();
        let mut ordered = keys.clone();
        ordered.sort_unstable();
        assert_eq!(keys, ordered, "{user}");
        let values: serde_json::Map<String, Value> = listed
            .into_iter()
            .map(|setting| {
                assert_eq!(setting.user_id, *user);
                (setting.key, setting.value)
            })
            .collect();
        let expected = match (user.strip_prefix("user-"), key) {
            (None, _) => json!({}),
            (Some(n), None) => json!({"n": n.parse::<u64>().unwrap(), "theme": {"for": user}}),
            (Some(n), Some(_)) => json!({"n": n.parse::<u64>().unwrap()}),
        };
        assert_eq!(Value::Object(values), expected, "{user} {key:?}");
    }
    // 33 reads of the default scope: two statements of at most 32; one each would be 33.
    assert!(statements <= 3, "33 reads took {statements} statements");
}

#[tokio::test]
async fn replacements_together_on_a_database_that_takes_no_writes_each_get_unavailable() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    for user in ["alice", "bob", "carol"] {
        app.set(&app.token(user), "theme", json!("light")).await;
    }
    set_database_read_only(&app, true).await;

    let writes = ["alice", "bob", "carol"]
        .map(|user| (user.to_owned(), "theme", json!("dark")))
        .into();
    let before = app.store.statements();
    for answer in write_together(&app.store, "", writes).await {
        assert!(matches!(answer, Err(Error::Unavailable(_))), "{answer:?}");
    }
    // The shared statement failed, and none was sent again alone: none would fare better.
    assert_eq!(app.store.statements() - before, 1);
    // Read on a connection of the test's own: the service's pool may still hold sessions
    // that were ended.
    let stored = app
        .query_text("SELECT string_agg(value::text, ',' ORDER BY user_id) FROM settings")
        .await;
    assert_eq!(stored.as_deref(), Some(r#""light","light","light""#));
}
