//! The `settings-api` binary as a user runs it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_settings-api");

fn command(dir: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[tokio::test]
async fn with_no_configuration_it_serves_sqlite_and_prints_a_working_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
            .find(|line| line.get("token").is_some())
    })
    .await
    .unwrap()
    .expect("the service logs a development token");
    let graphiql = banner["graphiql"].as_str().unwrap().to_owned();
    let token = banner["token"].as_str().unwrap().to_owned();

    let client = reqwest::Client::new();
    let page = client
        .get(&graphiql)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&token),
        "GraphiQL opens with the token filled in"
    );

    let response: Value = client
        .post(&graphiql)
        .bearer_auth(&token)
        .json(&json!({"query": "mutation { setSetting(key: \"theme\", value: \"dark\") { version } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response, json!({"data": {"setSetting": {"version": 1}}}));
    assert!(
        dir.path().join("settings-api.db").exists(),
        "the SQLite file is in the working directory"
    );

    // SIGTERM stops it gracefully: a request in flight finishes, new connections are refused.
    let address = graphiql
        .trim_start_matches("http://")
        .trim_end_matches("/graphql")
        .to_owned();
    let body =
        json!({"query": "mutation { setSetting(key: \"theme\", value: \"light\") { version } }"})
            .to_string();
    let mut in_flight = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (first_half, second_half) = body.split_at(body.len() / 2);
    in_flight
        .write_all(format!("{head}{first_half}").as_bytes())
        .await
        .unwrap();
    // Let the server start on the request before it is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tokio::net::TcpStream::connect(&address).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "new connections are refused once stopping");
    in_flight.write_all(second_half.as_bytes()).await.unwrap();
    let mut reply = String::new();
    in_flight.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with(r#"{"data":{"setSetting":{"version":2}}}"#),
        "{reply}"
    );

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn production_refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .env("APP_ENV", "production")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(
        !dir.path().join("settings-api.db").exists(),
        "nothing was created"
    );
}

#[tokio::test]
async fn the_token_command_mints_a_token_the_service_accepts() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .env("JWT_SECRET", SECRET)
        .args([
            "token", "--sub", "alice", "--email", "a@x.io", "--role", "admin", "--ttl", "5m",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let me = app
        .data(&token, "{ me { id email roles } }", json!({}))
        .await;
    assert_eq!(
        me,
        json!({"me": {"id": "alice", "email": "a@x.io", "roles": ["admin"]}})
    );

    let claims = token.split('.').nth(1).unwrap();
    let claims: Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap()
    };
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(Duration::from_secs(ttl), Duration::from_secs(300));
}

#[test]
fn the_token_command_explains_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["token", "--sub", "alice"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("JWT_SECRET"));
}

#[test]
fn the_schema_command_prints_the_committed_schema() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path()).arg("schema").output().unwrap();
    assert!(output.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), committed);
}

#[tokio::test]
async fn an_update_through_contract_004_logs_the_audit_line_with_the_requests_correlation_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, mut logged) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(line) = serde_json::from_str::<Value>(&line)
                && lines.send(line).is_err()
            {
                break;
            }
        }
    });
    let banner = loop {
        let line = logged.recv().await.expect("the service logs a banner");
        if line.get("token").is_some() {
            break line;
        }
    };
    let token = banner["token"].as_str().unwrap();
    let base = banner["graphiql"]
        .as_str()
        .unwrap()
        .trim_end_matches("/graphql");

    let response = reqwest::Client::new()
        .patch(format!("{base}/api/v1/users/settings"))
        .bearer_auth(token)
        .json(&json!({"theme": "light"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let correlation_id = response.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let audit = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = logged.recv().await.expect("the service keeps logging");
            if line["target"] == "audit" {
                break line;
            }
        }
    })
    .await
    .expect("an audit line within 10 s");
    assert_eq!(audit["message"], "[settings] Updated for user dev");
    assert_eq!(audit["span"]["correlation_id"], correlation_id.as_str());

    // Every request ends with one line that says what it was, for whom, and how it went.
    let finished = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = logged.recv().await.expect("the service keeps logging");
            if line["message"] == "request finished"
                && line["span"]["correlation_id"] == correlation_id.as_str()
            {
                break line;
            }
        }
    })
    .await
    .expect("a request line within 10 s");
    let span = &finished["span"];
    assert_eq!(span["method"], "PATCH", "{finished}");
    assert_eq!(span["path"], "/api/v1/users/settings", "{finished}");
    assert_eq!(span["user_id"], "dev", "{finished}");
    assert_eq!(finished["status"], 200, "{finished}");
    assert!(finished["latency_ms"].as_f64().is_some(), "{finished}");

    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn the_migrate_command_creates_the_tables_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    for run in ["first", "second"] {
        let output = command(dir.path()).arg("migrate").output().unwrap();
        assert!(
            output.status.success(),
            "{run} run: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let url = format!(
        "sqlite://{}?mode=ro",
        dir.path().join("settings-api.db").display()
    );
    let db = sea_orm::Database::connect(&url).await.unwrap();
    let statement = sea_orm::Statement::from_string(
        sea_orm::DbBackend::Sqlite,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    );
    let tables: Vec<String> = sea_orm::ConnectionTrait::query_all_raw(&db, statement)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect();
    for table in ["org_defaults", "setting_changes", "settings", "users"] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
}
