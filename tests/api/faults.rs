//! The database failing under a running service: stopped, read-only. Requests answer
//! `UNAVAILABLE` with a message an operator understands, readiness says what is wrong, reads
//! go on where the database still serves them, and the service recovers by itself.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A PostgreSQL cluster of this test's own, so that stopping it stops nothing else.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    /// Only where the PostgreSQL tests run and the server's programs are installed.
    fn start() -> Option<Cluster> {
        std::env::var_os("TEST_DATABASE_URL")?;
        let bin = PathBuf::from(
            String::from_utf8(
                Command::new("pg_config")
                    .arg("--bindir")
                    .output()
                    .ok()?
                    .stdout,
            )
            .ok()?
            .trim(),
        );
        if !bin.join("initdb").exists() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { dir, bin, port };
        // PostgreSQL refuses to run as root.
        if is_root() {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(cluster.dir.path()));
        }
        cluster.as_postgres(&[
            "initdb",
            "-D",
            &cluster.data(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]);
        cluster.up();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.as_postgres(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-o",
            &options,
            "-l",
            &log,
            "-w",
            "start",
        ]);
    }

    fn down(&self) {
        self.as_postgres(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }

    fn as_postgres(&self, command: &[&str]) {
        let program = self.bin.join(command[0]);
        let mut line = if is_root() {
            let mut line = Command::new("runuser");
            line.args(["-u", "postgres", "--"]).arg(program);
            line
        } else {
            Command::new(program)
        };
        run(line.args(&command[1..]));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
        if is_root() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &self.data(), "-m", "immediate", "stop"])
                .output();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn run(command: &mut Command) {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn readiness(app: &TestApp) -> (StatusCode, Value) {
    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Waits (at most 20 s) until readiness reports `database`.
async fn until_ready_says(app: &TestApp, database: &str) -> (StatusCode, Value) {
    for _ in 0..200 {
        let answer = readiness(app).await;
        if answer.1["database"] == database {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "readiness never said the database is {database}: {:?}",
        readiness(app).await
    );
}

/// Runs `query` until it answers without errors (at most 20 s): the pool may hold connections
/// the database dropped, which fail once each.
async fn eventually(app: &TestApp, token: &str, query: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, body) = app.graphql(token, query, json!({})).await;
        if body.get("errors").is_none() {
            return body["data"].clone();
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{query} kept failing: {last}");
}

#[tokio::test]
async fn a_stopped_database_fails_requests_at_once_and_the_service_recovers_when_it_returns() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let options = Options {
        postgres_admin_url: Some(cluster.admin_url()),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Postgres, options)
        .await
        .unwrap();
    let token = app.token("alice");
    app.set(&token, "theme", json!("dark")).await;
    assert_eq!(readiness(&app).await.0, StatusCode::OK);

    cluster.down();
    let (status, body) = until_ready_says(&app, "unreachable").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Once the outage is known, requests fail without waiting for the pool.
    let error = app.error(&token, "{ settings { key } }", json!({})).await;
    assert_eq!(code(&error), "UNAVAILABLE", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("retry later"),
        "{error}"
    );
    // Contract 004 answers 503 in its envelope (others answer what their documents list).
    let reply = app
        .rest("GET", "/api/v1/users/settings", Some(&token), None)
        .await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);

    // Back up: the service finds it again without a restart, and nothing was lost.
    cluster.up();
    until_ready_says(&app, "ok").await;
    let data = eventually(&app, &token, r#"{ setting(key: "theme") { value } }"#).await;
    assert_eq!(data["setting"]["value"], "dark");
    app.set(&token, "theme", json!("light")).await;
}

/// A write is UNAVAILABLE, and says the database takes no writes.
async fn writes_are_refused_as_read_only(app: &TestApp, token: &str) {
    let error = app
        .error(
            token,
            "mutation { setSetting(key: \"theme\", value: \"light\") { version } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&error), "UNAVAILABLE", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("read-only or out of space"),
        "{error}"
    );
}

#[tokio::test]
async fn a_read_only_postgresql_database_serves_reads_and_refuses_writes_clearly() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = app.token("alice");
    app.set(&token, "theme", json!("dark")).await;
    set_database_read_only(&app, true).await;

    let (status, body) = until_ready_says(&app, "read-only").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Reads work, for a user seen before and for a new one.
    let data = eventually(&app, &token, r#"{ setting(key: "theme") { value } }"#).await;
    assert_eq!(data["setting"]["value"], "dark");
    let bob = app.token("bob");
    assert_eq!(app.values(&bob).await, json!({}));
    // Writes fail with UNAVAILABLE (503 on REST), saying why.
    writes_are_refused_as_read_only(&app, &token).await;
    // Contract 004 answers 503 in its envelope (others answer what their documents list).
    let reply = app
        .rest(
            "PATCH",
            "/api/v1/users/settings",
            Some(&token),
            Some(json!({"theme": "light"})),
        )
        .await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(
        reply.body["error"]["code"], "SERVICE_UNAVAILABLE",
        "{:?}",
        reply.body
    );

    set_database_read_only(&app, false).await;
    until_ready_says(&app, "ok").await;
    eventually(
        &app,
        &token,
        "mutation { setSetting(key: \"theme\", value: \"light\") { version } }",
    )
    .await;
    assert_eq!(app.values(&token).await, json!({"theme": "light"}));
}

#[tokio::test]
async fn a_sqlite_file_opened_read_only_serves_reads_and_refuses_writes_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file: &Path = &dir.path().join("settings.db");
    // A first run creates the file and a setting.
    let writable = format!("sqlite://{}?mode=rwc", file.display());
    {
        let app = TestApp::spawn_with(
            Backend::Sqlite,
            Options::default().env("DATABASE_URL_OVERRIDE", &writable),
        )
        .await
        .unwrap();
        let token = app.token("alice");
        app.set(&token, "theme", json!("dark")).await;
        app.shut_down().await;
    }
    let read_only = format!("sqlite://{}?mode=ro", file.display());
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        Options::default().env("DATABASE_URL_OVERRIDE", &read_only),
    )
    .await
    .unwrap();
    let token = app.token("alice");
    let (status, body) = readiness(&app).await;
    assert_eq!(
        (status, body["database"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("read-only")),
        "{body}"
    );
    assert_eq!(app.values(&token).await, json!({"theme": "dark"}));
    assert_eq!(app.values(&app.token("bob")).await, json!({}));
    writes_are_refused_as_read_only(&app, &token).await;
}
