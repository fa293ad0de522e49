//! Spawns the real application on port 0 with a fresh database per test.

use std::{collections::HashMap, sync::Arc, time::Duration};

use reqwest::{Client, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use settings_api::{
    Application, Config,
    auth::{Issuer, TokenRequest},
    config::{JwtKey, Secret},
    error::Error,
    settings::{Key, Origin, Scope, Setting, Store},
};
use tokio::task::JoinSet;

pub const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

/// Contract 003's boolean fields (its ninth is `preferredLanguage`).
pub const CONTRACT_003_BOOLEANS: [&str; 8] = [
    "notifications",
    "totalMinutesVisibility",
    "totalFundVisibility",
    "liveStreamNotifications",
    "paymentNotifications",
    "followNotifications",
    "messageNotifications",
    "followingActivityNotifications",
];

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each test once per backend: `sqlite` always, `postgres` when `TEST_DATABASE_URL` is set.
/// `options = EXPR;` first spawns every app of the block with those options.
macro_rules! both_backends {
    (options = $options:expr; $(async fn $name:ident($app:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::helpers::*;

            #[tokio::test]
            async fn sqlite() {
                let $app = TestApp::spawn_with(Backend::Sqlite, $options)
                    .await
                    .expect("SQLite is always available");
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let Some($app) = TestApp::spawn_with(Backend::Postgres, $options).await else {
                    return;
                };
                $body
            }
        }
    )*};
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        both_backends! { options = Options::default(); $(async fn $name($app) $body)* }
    };
}
pub(crate) use both_backends;

/// Runs each named `async fn(Backend)` once per backend, as `name::sqlite` and `name::postgres`:
/// for tests that configure the application themselves before spawning it.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// A database that exists for one test only.
enum TestDb {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        admin_url: String,
        name: String,
    },
    /// Another test app's: it drops it.
    Borrowed,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres { admin_url, name } = self else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let admin = Database::connect(&admin_url).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop test database: {err:#}");
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub database_url: String,
    /// The application's store, to count the statements a request cost.
    pub store: std::sync::Arc<settings_api::settings::Store>,
    issuer: Issuer,
    /// Stops the server (SIGTERM's path), and its end.
    #[allow(clippy::type_complexity)]
    stop: std::sync::Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<std::io::Result<()>>,
        )>,
    >,
    _db: TestDb,
}

/// See [`TestApp::lock_settings_table`].
pub struct TableLock {
    _db: sea_orm::DatabaseConnection,
    txn: sea_orm::DatabaseTransaction,
}

impl TableLock {
    pub async fn release(self) {
        self.txn.rollback().await.unwrap();
    }
}

pub struct Options {
    pub env: HashMap<String, String>,
    /// The PostgreSQL server to create the test database on, instead of TEST_DATABASE_URL's.
    pub postgres_admin_url: Option<String>,
    /// What `CREATE DATABASE` takes after the test database's name (a locale, say).
    pub postgres_database_options: Option<String>,
    /// PEM private key matching a configured public key, for minting test tokens.
    pub private_key: Option<Vec<u8>>,
}

impl Default for Options {
    fn default() -> Self {
        let mut env = HashMap::new();
        env.insert("JWT_SECRET".to_owned(), SECRET.to_owned());
        // Tests that race hundreds of writes as one user are about lost writes, not about the
        // rate limit, which its own tests turn on (tests/api/rate_limit.rs).
        env.insert("RATE_LIMIT_PER_MINUTE".to_owned(), "0".to_owned());
        env.insert("RATE_LIMIT_PER_IP_PER_MINUTE".to_owned(), "0".to_owned());
        Options {
            env,
            postgres_admin_url: None,
            postgres_database_options: None,
            private_key: None,
        }
    }
}

impl Options {
    /// The typed contracts (003, 004) bound to the default scope, so that their built-in types
    /// apply there: for tests of the catalog's mechanics rather than of the default bindings.
    pub fn typed_in_default_scope() -> Self {
        Options::default().env("REST_SCOPES", r#"{"003": "", "004": ""}"#)
    }

    /// A PostgreSQL test database whose default collation is ICU's linguistic order for
    /// English, as many servers are set up, instead of the test server's (PostgreSQL 15 or
    /// later, built with ICU, as Debian's and the official images are).
    pub fn linguistic_collation() -> Self {
        Options {
            postgres_database_options: Some(
                "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                    .to_owned(),
            ),
            ..Options::default()
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }
}

/// Where PostgreSQL tests create their databases, or None to skip them.
fn postgres_admin_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var_os("SETTINGS_API_REQUIRE_POSTGRES").is_some() {
                panic!("SETTINGS_API_REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not");
            }
            None
        }
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL has a database path");
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: Options) -> Option<TestApp> {
        let (database_url, db) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                // A test may bring a file of its own (to reopen it, read-only say).
                let url = options
                    .env
                    .get("DATABASE_URL_OVERRIDE")
                    .cloned()
                    .unwrap_or_else(|| {
                        format!(
                            "sqlite://{}?mode=rwc",
                            dir.path().join("settings.db").display()
                        )
                    });
                (url, TestDb::Sqlite(dir))
            }
            // Another instance on a database a test already made.
            Backend::Postgres if options.env.contains_key("DATABASE_URL_OVERRIDE") => {
                postgres_admin_url()?;
                (
                    options.env["DATABASE_URL_OVERRIDE"].clone(),
                    TestDb::Borrowed,
                )
            }
            Backend::Postgres => {
                let admin_url = match options.postgres_admin_url.clone() {
                    Some(url) => url,
                    None => postgres_admin_url()?,
                };
                let name = format!("settings_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("TEST_DATABASE_URL must be reachable");
                admin
                    .execute_unprepared(&format!(
                        "CREATE DATABASE \"{name}\" {}",
                        options
                            .postgres_database_options
                            .as_deref()
                            .unwrap_or_default()
                    ))
                    .await
                    .expect("create the test database");
                admin.close().await.ok();
                (
                    with_database(&admin_url, &name),
                    TestDb::Postgres { admin_url, name },
                )
            }
        };

        let mut env = options.env;
        env.insert("DATABASE_URL".into(), database_url.clone());
        env.insert("BIND_ADDR".into(), "127.0.0.1:0".into());
        env.insert("DATABASE_MAX_CONNECTIONS".into(), "4".into());
        let config =
            Config::from_lookup(|name| env.get(name).cloned()).expect("valid test configuration");
        let jwt = config.jwt.clone();
        let app = Application::build(config)
            .await
            .unwrap_or_else(|err| panic!("the application starts: {err:#}"));
        let address = format!("http://{}", app.local_addr());
        let store = app.store();
        let key = jwt
            .key
            .clone()
            .unwrap_or_else(|| JwtKey::Secret(Secret::new(SECRET)));
        let issuer =
            Issuer::new(&jwt, &key, options.private_key.as_deref()).expect("a token issuer");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));

        Some(TestApp {
            address,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            database_url,
            store,
            issuer,
            stop: std::sync::Mutex::new(Some((stop, served))),
            _db: db,
        })
    }

    /// PostgreSQL only: takes `LOCK TABLE settings` in a transaction from outside the service,
    /// so that any statement of the service on that table waits until it is released.
    pub async fn lock_settings_table(&self) -> TableLock {
        use sea_orm::TransactionTrait;
        let db = Database::connect(&self.database_url).await.unwrap();
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("LOCK TABLE settings IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        TableLock { _db: db, txn }
    }

    /// Starts the shutdown a SIGTERM starts; completes when the server has stopped.
    pub async fn shut_down(&self) {
        let (stop, served) = self
            .stop
            .lock()
            .unwrap()
            .take()
            .expect("the server is running");
        stop.send(()).ok();
        tokio::time::timeout(Duration::from_secs(60), served)
            .await
            .expect("the server stops")
            .expect("the server's task")
            .expect("the server ran without error");
    }

    /// A valid token for `sub` with no email and no roles.
    pub fn token(&self, sub: &str) -> String {
        self.token_for(TokenRequest {
            sub: sub.into(),
            ttl: Duration::from_secs(3600),
            ..Default::default()
        })
    }

    pub fn token_for(&self, request: TokenRequest) -> String {
        self.issuer.mint(&request).expect("mint a token")
    }

    /// A token with the `admin` role.
    pub fn admin_token(&self, sub: &str) -> String {
        self.token_for(TokenRequest {
            sub: sub.into(),
            email: None,
            roles: vec!["admin".into()],
            scope: None,
            ttl: Duration::from_secs(600),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Posts a GraphQL operation with a bearer token; returns the status and the JSON body.
    pub async fn graphql(&self, token: &str, query: &str, variables: Value) -> (StatusCode, Value) {
        self.post_graphql(
            Some(token),
            &json!({ "query": query, "variables": variables }),
        )
        .await
    }

    pub async fn post_graphql(&self, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = self.client.post(self.url("/graphql")).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Runs GraphQL that must succeed and returns its `data`.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.graphql(token, query, variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Runs GraphQL that must fail and returns its first error.
    pub async fn error(&self, token: &str, query: &str, variables: Value) -> Value {
        let (_, body) = self.graphql(token, query, variables).await;
        body["errors"][0].clone()
    }

    pub async fn set(&self, token: &str, key: &str, value: Value) -> Value {
        self.data(
            token,
            "mutation($k: String!, $v: JSON!) { setSetting(key: $k, value: $v) { key value version createdAt updatedAt } }",
            json!({ "k": key, "v": value }),
        )
        .await["setSetting"]
            .clone()
    }

    /// What `query` answered, and the statements it cost with the notice it sent to the other
    /// instances: the notices of earlier writes are sent before counting.
    pub async fn data_and_statements(
        &self,
        token: &str,
        query: &str,
        variables: Value,
    ) -> (Value, u64) {
        let flushed = || self.store.flush_notices(std::time::Duration::from_secs(5));
        flushed().await;
        let before = self.store.statements();
        let data = self.data(token, query, variables).await;
        flushed().await;
        (data, self.store.statements() - before)
    }

    /// All of the user's settings in the default scope, as key → value.
    pub async fn values(&self, token: &str) -> Value {
        self.values_in(token, "").await
    }

    /// The caller's stored settings in `scope`, as one object of keys to values.
    pub async fn values_in(&self, token: &str, scope: &str) -> Value {
        let data = self
            .data(
                token,
                "query($s: String!) { settings(scope: $s) { key value } }",
                json!({"s": scope}),
            )
            .await;
        let mut map = serde_json::Map::new();
        for setting in data["settings"].as_array().unwrap() {
            map.insert(
                setting["key"].as_str().unwrap().to_owned(),
                setting["value"].clone(),
            );
        }
        Value::Object(map)
    }

    /// Runs SQL on the app's own database, to arrange what no API can.
    pub async fn execute_sql(&self, sql: &str) {
        let db = Database::connect(&self.database_url)
            .await
            .expect("connect to the test database");
        db.execute_unprepared(sql).await.expect("SQL runs");
        db.close().await.ok();
    }

    /// The first column of the first row of `sql`, read as text (cast it in the SQL).
    pub async fn query_text(&self, sql: &str) -> Option<String> {
        let db = Database::connect(&self.database_url)
            .await
            .expect("connect to the test database");
        let statement = sea_orm::Statement::from_string(db.get_database_backend(), sql);
        let row = db.query_one_raw(statement).await.expect("SQL runs");
        db.close().await.ok();
        row.map(|row| row.try_get_by_index::<String>(0).expect("a text column"))
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }
}

pub fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or_default()
}

/// One REST response: status, headers, and the body as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestApp {
    /// A request to a REST route, with a bearer token when one is given.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let request = self.client.request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and reads the reply; every body a REST route sends must be JSON.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{status}: the body is not JSON ({err}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A REST call with an optional JSON body.
    pub async fn rest(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.request(method, path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }
}

fn sign_hs256(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}

/// A token for `sub` that expired an hour ago, well beyond the leeway.
pub fn expired_token(sub: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    sign_hs256(json!({"sub": sub, "exp": now - 3600}), SECRET)
}

/// A token for `sub` signed with another secret.
pub fn forged_token(sub: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    sign_hs256(
        json!({"sub": sub, "exp": now + 600}),
        "another-secret-that-is-at-least-32-bytes",
    )
}

/// A token for `sub` limited to OAuth scopes.
pub fn scoped_token(sub: &str, scope: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    sign_hs256(
        json!({"sub": sub, "exp": now + 600, "scope": scope}),
        SECRET,
    )
}

/// The user's `locale` column, the legacy mirror of the `locale` setting.
pub async fn legacy_locale(app: &TestApp, user: &str) -> Option<String> {
    app.query_text(&format!(
        "SELECT COALESCE(locale, '') FROM users WHERE id = '{user}'"
    ))
    .await
    .filter(|locale| !locale.is_empty())
}

/// Checks `instance` against a JSON Schema from `tests/fixtures/seed-schemas/{file}`: the
/// member at `pointer` of that file, resolved against the whole file.
pub fn assert_seed_schema(file: &str, pointer: &str, instance: &Value) {
    let path = format!(
        "{}/tests/fixtures/seed-schemas/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("the seed schema file");
    let mut root: Value = serde_json::from_str(&text).expect("JSON");
    root.as_object_mut()
        .expect("an object")
        .insert("$ref".into(), json!(format!("#{pointer}")));
    let validator = jsonschema::validator_for(&root).expect("a valid schema");
    let problems: Vec<String> = validator
        .iter_errors(instance)
        .map(|err| format!("{} at {}", err, err.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{instance} does not match {file}#{pointer}: {problems:?}"
    );
}

/// How many history rows the user has.
pub async fn history_count(app: &TestApp, user: &str) -> i64 {
    app.query_text(&format!(
        "SELECT CAST(COUNT(*) AS TEXT) FROM setting_changes WHERE user_id = '{user}'"
    ))
    .await
    .expect("a count")
    .parse()
    .expect("a number")
}

/// PostgreSQL: makes the app's database take no writes (`on`) or take them again, for new
/// sessions, and ends the service's current sessions so that the next ones get the setting.
pub async fn set_database_read_only(app: &TestApp, on: bool) {
    let path = app.database_url.rsplit('/').next().unwrap();
    let name = path.split('?').next().unwrap();
    let admin = Database::connect(std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = {on}"
        ))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
}

/// Starts every write before any runs (the test's runtime runs one task at a time), then
/// waits for them all: the answers in the order of `writes`.
pub async fn write_together(
    store: &Arc<Store>,
    scope: &str,
    writes: Vec<(String, &str, Value)>,
) -> Vec<Result<(Setting, bool), Error>> {
    let scope = Scope::parse(scope).unwrap();
    let mut tasks = JoinSet::new();
    for (at, (user, key, value)) in writes.into_iter().enumerate() {
        let (store, scope, key) = (
            store.clone(),
            scope.clone(),
            Key::parse(key, "key").unwrap(),
        );
        tasks.spawn(async move {
            let origin = Origin::new(user.clone(), "graphql", format!("together-{at}"));
            let written = store.set(&origin, &user, &scope, &key, value, None).await;
            (at, written)
        });
    }
    let mut answers: Vec<_> = tasks.join_all().await;
    answers.sort_by_key(|(at, _)| *at);
    answers.into_iter().map(|(_, written)| written).collect()
}
