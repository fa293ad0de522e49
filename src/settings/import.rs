//! Import: an export document (`export.rs`) written back, all of it or nothing. Every entry
//! is checked as any write is (key and scope names, the value limits, the key's schema in its
//! scope) before anything is written; then every scope is written in one transaction, with
//! the quotas checked as each write does. A dry run takes the same path and rolls back, so
//! what it reports is what a real run would do.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::Value;

use super::{
    EXPORT_FORMAT, EXPORT_VERSION, Key, Origin, Scope, Store,
    plan::{Change, Kinds, Op, Target},
    write::{Write, WriteError},
};
use crate::{
    entity::setting,
    error::{Error, Result},
};

/// How often an import is retried when another writer created one of its keys meanwhile.
const IMPORT_ATTEMPTS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    /// The document's settings are written; the user's other settings stay.
    Merge,
    /// Afterwards the user has exactly the document's settings: every other one is deleted.
    Replace,
}

/// What an import did, or for a dry run would do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// Why nothing was written; empty when the import applied.
    pub errors: Vec<ImportIssue>,
}

/// One entry of the document that cannot be imported.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportIssue {
    /// The entry's index in the document's `settings`; `None` for what a scope's write as a
    /// whole refused (a quota, a locked key).
    pub index: Option<usize>,
    pub scope: Option<String>,
    pub key: Option<String>,
    /// A short, stable name of the rule broken, as in `BAD_USER_INPUT` errors.
    pub rule: String,
    pub message: String,
}

/// A valid entry.
struct Entry {
    key: Key,
    value: Value,
    expires_at: Option<DateTime<Utc>>,
}

/// A stored value and its expiry.
type Stored = (Value, Option<DateTime<Utc>>);

/// A document's valid entries by scope.
type Entries = BTreeMap<Scope, Vec<Entry>>;

fn format_error(message: impl Into<String>) -> Error {
    Error::bad_input("document", "format", message)
}

impl Store {
    /// Imports an export document for `user_id`; with `dry_run`, reports and writes nothing.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn import(
        &self,
        origin: &Origin,
        user_id: &str,
        document: &Value,
        mode: ImportMode,
        dry_run: bool,
    ) -> Result<ImportReport> {
        let (scopes, issues) = self.read_document(document)?;
        if !issues.is_empty() {
            return Ok(ImportReport {
                errors: issues,
                ..ImportReport::default()
            });
        }
        self.user(user_id).await?;
        let mut attempt = 1;
        loop {
            match self
                .try_import(origin, user_id, &scopes, mode, dry_run)
                .await
            {
                Ok(report) => return Ok(report),
                Err(WriteError::Failed(err)) => return Err(err),
                Err(WriteError::Raced) if attempt < IMPORT_ATTEMPTS => attempt += 1,
                Err(WriteError::Raced) => {
                    return Err(Error::Conflict {
                        message: "the settings kept changing during the import; retry".into(),
                        current_version: None,
                    });
                }
            }
        }
    }

    /// The document's entries by scope, or every problem with them.
    fn read_document(&self, document: &Value) -> Result<(Entries, Vec<ImportIssue>)> {
        let Value::Object(members) = document else {
            return Err(format_error(
                "the document must be a JSON object, as exportSettings writes it",
            ));
        };
        if members.get("format").and_then(Value::as_str) != Some(EXPORT_FORMAT) {
            return Err(format_error(format!(
                "the document's `format` must be `{EXPORT_FORMAT}`"
            )));
        }
        if members.get("version").and_then(Value::as_u64) != Some(EXPORT_VERSION) {
            return Err(format_error(format!(
                "this service reads version {EXPORT_VERSION} of the export format"
            )));
        }
        let Some(Value::Array(entries)) = members.get("settings") else {
            return Err(format_error("the document's `settings` must be an array"));
        };
        let mut scopes: Entries = BTreeMap::new();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        let mut issues = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
            let (scope_text, key_text) = (text("scope"), text("key"));
            let issue = |rule: &str, message: String| ImportIssue {
                index: Some(index),
                scope: scope_text.clone(),
                key: key_text.clone(),
                rule: rule.to_owned(),
                message,
            };
            let of = |err: Error| match err {
                Error::BadInput(violation) => issue(&violation.rule, violation.message),
                other => issue("invalid", other.to_string()),
            };
            let (Some(raw_scope), Some(raw_key)) = (scope_text.clone(), key_text.clone()) else {
                issues.push(issue(
                    "required",
                    "each setting needs a string `scope` and `key`".into(),
                ));
                continue;
            };
            let value = match entry.get("value") {
                None | Some(Value::Null) => {
                    issues.push(issue(
                        "required",
                        "each setting needs a `value` that is not null".into(),
                    ));
                    continue;
                }
                Some(value) => value,
            };
            let parsed = Scope::parse(raw_scope.clone())
                .and_then(|scope| Ok((scope, Key::parse(raw_key.clone(), "key")?)));
            let (scope, key) = match parsed {
                Ok(parsed) => parsed,
                Err(err) => {
                    issues.push(of(err));
                    continue;
                }
            };
            let expires_at = match entry.get("expiresAt") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => match DateTime::parse_from_rfc3339(text) {
                    Ok(at) => Some(at.with_timezone(&Utc)),
                    Err(_) => {
                        issues.push(issue(
                            "format",
                            "`expiresAt` must be an RFC 3339 date-time".into(),
                        ));
                        continue;
                    }
                },
                Some(_) => {
                    issues.push(issue(
                        "format",
                        "`expiresAt` must be an RFC 3339 date-time".into(),
                    ));
                    continue;
                }
            };
            if let Some(first) = seen.insert((raw_scope, raw_key), index) {
                issues.push(issue(
                    "unique",
                    format!("the same scope and key as setting {first}"),
                ));
                continue;
            }
            if let Err(err) = self.check_value(&scope, key.as_str(), value) {
                issues.push(of(err));
                continue;
            }
            // A value that expired since the export is not brought back.
            if expires_at.is_some_and(|at| at <= Utc::now()) {
                continue;
            }
            scopes.entry(scope).or_default().push(Entry {
                key,
                value: value.clone(),
                expires_at,
            });
        }
        Ok((scopes, issues))
    }

    async fn try_import(
        &self,
        origin: &Origin,
        user_id: &str,
        scopes: &Entries,
        mode: ImportMode,
        dry_run: bool,
    ) -> Result<ImportReport, WriteError> {
        let txn = self.begin_write().await?;
        // What the user has now, under lock: to leave equal values alone and, to replace, to
        // delete what the document lacks.
        let stored: Vec<(String, String, Value, Option<DateTime<Utc>>)> = setting::Entity::find()
            .select_only()
            .column(setting::Column::Scope)
            .column(setting::Column::Key)
            .column(setting::Column::Value)
            .column(setting::Column::ExpiresAt)
            .filter(setting::Column::UserId.eq(user_id))
            .filter(super::expiry::unexpired())
            .lock_exclusive()
            .into_tuple()
            .all(&txn)
            .await?;
        let mut current: BTreeMap<Scope, HashMap<String, Stored>> = BTreeMap::new();
        for (scope, key, value, expires_at) in stored {
            current
                .entry(Scope::parse(scope)?)
                .or_default()
                .insert(key, (value, expires_at));
        }
        let mut report = ImportReport::default();
        let mut plans: BTreeMap<&Scope, Vec<Op>> = BTreeMap::new();
        for (scope, entries) in scopes {
            let now = current.get(scope);
            let ops = plans.entry(scope).or_default();
            for entry in entries {
                let stored = now.and_then(|now| now.get(entry.key.as_str()));
                if stored == Some(&(entry.value.clone(), entry.expires_at)) {
                    report.unchanged += 1;
                } else {
                    ops.push(Op {
                        key: entry.key.clone(),
                        change: Change::Replace(entry.value.clone()),
                        expect: None,
                        expires_at: entry.expires_at,
                    });
                }
            }
        }
        if mode == ImportMode::Replace {
            for (scope, now) in &current {
                let wanted = scopes.get(scope);
                let ops = plans.entry(scope).or_default();
                for key in now.keys() {
                    if !wanted.is_some_and(|entries| entries.iter().any(|e| e.key.as_str() == key))
                    {
                        ops.push(Op {
                            key: Key::parse(key.as_str(), "key")?,
                            change: Change::Remove,
                            expect: None,
                            expires_at: None,
                        });
                    }
                }
            }
        }
        let mut done = Vec::new();
        for (scope, ops) in plans {
            if ops.is_empty() {
                continue;
            }
            let write = Write {
                origin,
                user_id,
                scope,
                target: Target::Keys(ops),
                kinds: Kinds::PLAIN,
                document: None,
            };
            let written = match self.write_in(&txn, &write).await {
                Ok(written) => written,
                // A quota or a locked key: the import cannot apply, and says why.
                Err(WriteError::Failed(err @ (Error::BadInput(_) | Error::Locked { .. }))) => {
                    txn.rollback().await?;
                    let message = err.to_string();
                    let (key, rule) = match err {
                        Error::Locked { key } => (Some(key), "locked".to_owned()),
                        Error::BadInput(violation) => (None, violation.rule.into_owned()),
                        _ => (None, String::new()),
                    };
                    let issue = ImportIssue {
                        index: None,
                        scope: Some(scope.as_str().to_owned()),
                        key,
                        rule,
                        message,
                    };
                    return Ok(ImportReport {
                        errors: vec![issue],
                        ..ImportReport::default()
                    });
                }
                Err(err) => return Err(err),
            };
            for outcome in &written.outcomes {
                match (&outcome.before, &outcome.after) {
                    (None, Some(_)) => report.created += 1,
                    (Some(_), Some(_)) => report.updated += 1,
                    (Some(_), None) => report.deleted += 1,
                    (None, None) => {}
                }
            }
            done.push((write, written));
        }
        if dry_run {
            txn.rollback().await?;
            return Ok(report);
        }
        txn.commit().await?;
        for (write, written) in &done {
            self.publish(write, written);
        }
        Ok(report)
    }
}
