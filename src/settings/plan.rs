//! The write planner: from the rows a write locked and the change it asks for, decides every
//! row to delete, create and update, every history row, and the legacy `locale` mirror. It is
//! pure (no database, no clock), so each rule of a write is decided here once and tested
//! without a database; `write.rs` reads the rows, calls it and carries out the plan.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    ChangeKind, Expect, Key, Setting, merge_patch,
    model::Outcome,
    tags::{DocumentCheck, document_tag, stale_document},
};
use crate::error::{Error, Result};

/// The setting whose value the users table mirrors in its legacy `locale` column.
pub const LOCALE_KEY: &str = "locale";
/// The width of that column.
const LOCALE_MIRROR_CHARS: usize = 10;

/// What a write does to one key.
#[derive(Clone, Debug)]
pub(super) enum Change {
    Replace(Value),
    /// An RFC 7386 merge patch applied to the stored value.
    Merge(Value),
    Remove,
}

#[derive(Clone, Debug)]
pub(super) struct Op {
    pub key: Key,
    pub change: Change,
    pub expect: Option<Expect>,
    /// When the value written expires; `None` keeps it (and clears an earlier expiry).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Which keys a write touches.
#[derive(Clone, Debug)]
pub(super) enum Target {
    Keys(Vec<Op>),
    /// Every key the user has in the scope, removed.
    WholeScope,
}

/// How the history names the changes of one write.
#[derive(Clone, Copy, Debug)]
pub(super) struct Kinds {
    /// For a value written; `None` means create or update as it happens.
    pub write: Option<ChangeKind>,
    pub removal: ChangeKind,
}

impl Kinds {
    pub const PLAIN: Kinds = Kinds {
        write: None,
        removal: ChangeKind::Delete,
    };

    /// The kind of a value written to a key that `existed` before the write.
    pub fn of_write(self, existed: bool) -> ChangeKind {
        self.write.unwrap_or(if existed {
            ChangeKind::Update
        } else {
            ChangeKind::Create
        })
    }
}

/// Everything a plan depends on.
pub(super) struct Input<'a> {
    /// Whether the scope's `locale` is mirrored to the users table.
    pub mirrors_locale: bool,
    pub target: &'a Target,
    pub kinds: Kinds,
    pub document: Option<&'a DocumentCheck>,
    /// The locked rows by key: those of [`locked_keys`] ([`by_key`] of a map that owns them).
    pub current: &'a ByKey<&'a str, &'a Setting>,
    /// The last version the history records for keys of [`created_keys`].
    pub last_versions: &'a HashMap<String, i32>,
    /// Keys the organisation locked in this scope: no write may name them, and removing the
    /// whole scope leaves them.
    pub locked: &'a HashSet<String>,
}

/// A row to write.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Row {
    pub key: String,
    pub value: Value,
    pub version: i32,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A history row to append. Its old and new values are those of the plan's outcome at the
/// same place (`before` and `after`), so that the plan holds no copies of them.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct HistoryRow {
    pub key: String,
    pub kind: ChangeKind,
    /// The version written, or for a removal the version removed.
    pub version: i32,
}

/// The legacy `locale` column after the write.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum LocaleMirror {
    Set(String),
    Clear,
}

#[derive(Debug, Default)]
pub(super) struct Plan {
    pub removals: Vec<String>,
    /// Keys created: inserted, never replacing a row another writer created meanwhile.
    pub creates: Vec<Row>,
    /// Keys updated: replaced only at the version that was read.
    pub updates: Vec<Row>,
    pub history: Vec<HistoryRow>,
    /// One per key that changes; `after` is filled in from the rows as saved.
    pub outcomes: Vec<Outcome>,
    /// `None` when the write leaves the mirrored `locale` alone.
    pub locale: Option<LocaleMirror>,
}

/// The keys a write locks: those it changes and those its document precondition covers;
/// `None` locks every key of the scope.
pub(super) fn locked_keys<'a>(
    target: &'a Target,
    document: Option<&'a DocumentCheck>,
) -> Option<Vec<&'a str>> {
    let Target::Keys(ops) = target else {
        return None;
    };
    let mut keys: Vec<&str> = ops.iter().map(|op| op.key.as_str()).collect();
    match document {
        None => {}
        Some(DocumentCheck { keys: None, .. }) => return None,
        Some(DocumentCheck {
            keys: Some(covered),
            ..
        }) => keys.extend(covered.iter().map(Key::as_str)),
    }
    Some(keys)
}

/// A write's keys, or the settings it reads, by key: a handful per write, named by the
/// request. Hashed with foldhash, which takes a fraction of the instructions of the standard
/// library's SipHash on short keys; a map holds no more keys than one write names.
pub(super) type ByKey<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The settings of `rows` by key, as [`Input::current`] borrows them.
pub(super) fn by_key(rows: &HashMap<String, Setting>) -> ByKey<&str, &Setting> {
    rows.iter().map(|(key, row)| (key.as_str(), row)).collect()
}

/// The keys a write may create: written, and without a row now.
pub(super) fn created_keys<'a>(
    target: &'a Target,
    current: &HashMap<String, Setting>,
) -> Vec<&'a str> {
    let Target::Keys(ops) = target else {
        return Vec::new();
    };
    ops.iter()
        .filter(|op| !matches!(op.change, Change::Remove))
        .map(|op| op.key.as_str())
        .filter(|key| !current.contains_key(*key))
        .collect()
}

/// The version a write gives a key: one more than the stored version, or for a key without a
/// row one more than the last version its history records, so that a key written again after
/// a delete goes on from there and a version (or an entity tag made of versions) never names
/// two different values.
pub(super) fn next_version(
    key: &str,
    stored: Option<i32>,
    last_recorded: Option<i32>,
) -> Result<i32> {
    match stored.or(last_recorded) {
        None => Ok(1),
        Some(version) => version
            .checked_add(1)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("`{key}` reached the largest version"))),
    }
}

/// Plans a write. `check` is the rule every stored value obeys (limits and catalog); nothing
/// is planned when a precondition, a value or the locale mirror fails.
pub(super) fn plan(input: Input<'_>, check: impl Fn(&str, &Value) -> Result<()>) -> Result<Plan> {
    let Input {
        mirrors_locale,
        target,
        kinds,
        document,
        current,
        last_versions,
        locked,
    } = input;
    if let Some(check) = document {
        let tag = document_tag(
            current
                .values()
                .filter(|row| check.covers(&row.key))
                .map(|row| (row.key.as_str(), row.version)),
        );
        if tag != check.tag {
            return Err(stale_document());
        }
    }

    let whole_scope: Vec<Op>;
    let ops = match target {
        Target::Keys(ops) => ops,
        Target::WholeScope => {
            whole_scope = current
                .keys()
                .filter(|key| !locked.contains(**key))
                .map(|key| {
                    Ok(Op {
                        key: Key::parse(*key, "key")?,
                        change: Change::Remove,
                        expect: None,
                        expires_at: None,
                    })
                })
                .collect::<Result<_>>()?;
            &whole_scope
        }
    };

    let mut plan = Plan::default();
    for op in ops {
        let existing = current.get(op.key.as_str()).copied();
        check_expectation(&op.key, op.expect, existing)?;
        let new_value = match &op.change {
            Change::Replace(value) => Some(value.clone()),
            Change::Merge(patch) => merge_patch(existing.map(|row| row.value.clone()), patch),
            Change::Remove => None,
        };
        if locked.contains(op.key.as_str()) {
            return Err(Error::Locked {
                key: op.key.as_str().to_owned(),
            });
        }
        match (new_value, existing) {
            (None, None) => {}
            (None, Some(row)) => {
                plan.removals.push(row.key.clone());
                plan.history.push(HistoryRow {
                    key: row.key.clone(),
                    kind: kinds.removal,
                    version: row.version,
                });
                plan.outcomes.push(Outcome {
                    key: row.key.clone(),
                    before: Some(row.clone()),
                    after: None,
                    position: 0,
                });
            }
            (Some(value), existing) => {
                check(op.key.as_str(), &value)?;
                let version = next_version(
                    op.key.as_str(),
                    existing.map(|row| row.version),
                    last_versions.get(op.key.as_str()).copied(),
                )?;
                let key = op.key.as_str().to_owned();
                plan.history.push(HistoryRow {
                    key: key.clone(),
                    kind: kinds.of_write(existing.is_some()),
                    version,
                });
                let row = Row {
                    key: key.clone(),
                    value,
                    version,
                    expires_at: op.expires_at,
                };
                match existing {
                    None => plan.creates.push(row),
                    Some(_) => plan.updates.push(row),
                }
                plan.outcomes.push(Outcome {
                    key,
                    before: existing.cloned(),
                    after: None,
                    position: 0,
                });
            }
        }
    }
    plan.locale = match mirrors_locale {
        true => locale_mirror(&plan)?,
        false => None,
    };
    Ok(plan)
}

/// The users table keeps a legacy copy of one scope's `locale`, in a column that holds a short
/// string: a write that would put anything else there is refused.
fn locale_mirror(plan: &Plan) -> Result<Option<LocaleMirror>> {
    if !plan.outcomes.iter().any(|o| o.key == LOCALE_KEY) {
        return Ok(None);
    }
    let written = plan
        .creates
        .iter()
        .chain(&plan.updates)
        .find(|row| row.key == LOCALE_KEY);
    match written.map(|row| &row.value) {
        None => Ok(Some(LocaleMirror::Clear)),
        Some(Value::String(text)) if text.chars().count() <= LOCALE_MIRROR_CHARS => {
            Ok(Some(LocaleMirror::Set(text.clone())))
        }
        Some(_) => Err(Error::bad_input(
            LOCALE_KEY,
            "legacyLocale",
            format!(
                "`{LOCALE_KEY}` must be a string of at most {LOCALE_MIRROR_CHARS} characters: it \
                 is mirrored to the user's legacy locale"
            ),
        )),
    }
}

fn check_expectation(key: &Key, expect: Option<Expect>, existing: Option<&Setting>) -> Result<()> {
    let current = existing.map(|row| row.version);
    let message = match (expect, current) {
        (Some(Expect::Version(expected)), Some(actual)) if expected != actual => {
            format!(
                "`{}` is at version {actual}, not the expected version {expected}",
                key.as_str()
            )
        }
        (Some(Expect::Version(expected)), None) => {
            format!(
                "`{}` does not exist, so it is not at the expected version {expected}",
                key.as_str()
            )
        }
        (Some(Expect::Present), None) => format!("`{}` does not exist", key.as_str()),
        (Some(Expect::Absent), Some(actual)) => {
            format!("`{}` already exists (version {actual})", key.as_str())
        }
        _ => return Ok(()),
    };
    Err(Error::PreconditionFailed {
        message,
        current_version: current,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;

    fn key(name: &str) -> Key {
        Key::parse(name, "key").unwrap()
    }

    /// Alice's setting `name` in the default scope, by its key.
    pub(in crate::settings) fn stored(name: &str, value: Value, version: i32) -> (String, Setting) {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let setting = Setting {
            user_id: "alice".into(),
            key: name.to_owned(),
            scope: String::new(),
            value,
            version,
            created_at: at,
            updated_at: at,
            expires_at: None,
        };
        (name.to_owned(), setting)
    }

    fn op(name: &str, change: Change) -> Op {
        Op {
            key: key(name),
            change,
            expect: None,
            expires_at: None,
        }
    }

    fn accept_all(_: &str, _: &Value) -> Result<()> {
        Ok(())
    }

    struct Case {
        mirrors_locale: bool,
        target: Target,
        kinds: Kinds,
        document: Option<DocumentCheck>,
        current: HashMap<String, Setting>,
        last_versions: HashMap<String, i32>,
        locked: HashSet<String>,
    }

    impl Case {
        fn new(target: Target) -> Self {
            Case {
                mirrors_locale: true,
                target,
                kinds: Kinds::PLAIN,
                document: None,
                current: HashMap::new(),
                last_versions: HashMap::new(),
                locked: HashSet::new(),
            }
        }

        fn with(mut self, rows: impl IntoIterator<Item = (String, Setting)>) -> Self {
            self.current.extend(rows);
            self
        }

        fn plan(&self) -> Result<Plan> {
            self.plan_checked(accept_all)
        }

        fn plan_checked(&self, check: impl Fn(&str, &Value) -> Result<()>) -> Result<Plan> {
            plan(
                Input {
                    mirrors_locale: self.mirrors_locale,
                    target: &self.target,
                    kinds: self.kinds,
                    document: self.document.as_ref(),
                    current: &by_key(&self.current),
                    last_versions: &self.last_versions,
                    locked: &self.locked,
                },
                check,
            )
        }
    }

    #[test]
    fn a_locked_key_cannot_change_but_the_whole_scope_removed_leaves_it() {
        let locked = |target| {
            let mut case = Case::new(target).with([
                stored("theme", json!("dark"), 3),
                stored("other", json!(1), 1),
            ]);
            case.locked.insert("theme".into());
            case
        };
        // Even a write of the value it has: the user's own setting stays as it was.
        for change in [
            Change::Replace(json!("light")),
            Change::Replace(json!("dark")),
            Change::Merge(json!("x")),
            Change::Remove,
        ] {
            let refused = locked(Target::Keys(vec![op("theme", change)])).plan();
            assert!(
                matches!(&refused, Err(Error::Locked { key }) if key == "theme"),
                "{refused:?}"
            );
        }
        let reset = locked(Target::WholeScope).plan().unwrap();
        assert_eq!(reset.removals, vec!["other".to_owned()]);
    }

    #[test]
    fn a_new_key_is_created_at_version_one_and_recorded_as_a_create() {
        let plan = Case::new(Target::Keys(vec![op(
            "theme",
            Change::Replace(json!("dark")),
        )]))
        .plan()
        .unwrap();
        assert_eq!(
            plan.creates,
            vec![Row {
                key: "theme".into(),
                value: json!("dark"),
                version: 1,
                expires_at: None,
            }]
        );
        assert!(plan.updates.is_empty() && plan.removals.is_empty());
        assert_eq!(
            plan.history,
            vec![HistoryRow {
                key: "theme".into(),
                kind: ChangeKind::Create,
                version: 1,
            }]
        );
        assert!(plan.outcomes[0].before.is_none());
    }

    #[test]
    fn a_key_written_again_after_a_delete_goes_on_from_its_last_recorded_version() {
        let mut case = Case::new(Target::Keys(vec![op("theme", Change::Replace(json!("x")))]));
        case.last_versions.insert("theme".into(), 7);
        let plan = case.plan().unwrap();
        assert_eq!(plan.creates[0].version, 8);
        assert_eq!(plan.history[0].version, 8);
        assert_eq!(plan.history[0].kind, ChangeKind::Create);
    }

    #[test]
    fn a_stored_key_is_updated_one_version_up_with_its_old_value_in_the_history() {
        let plan = Case::new(Target::Keys(vec![op("theme", Change::Replace(json!("b")))]))
            .with([stored("theme", json!("a"), 4)])
            .plan()
            .unwrap();
        assert!(plan.creates.is_empty());
        assert_eq!(plan.updates[0].version, 5);
        assert_eq!(plan.history[0].kind, ChangeKind::Update);
        let before = plan.outcomes[0].before.as_ref().unwrap();
        assert_eq!((&before.value, before.version), (&json!("a"), 4));
    }

    #[test]
    fn a_merge_patch_merges_into_the_locked_value() {
        let patch = json!({"tabs": 2, "font": null});
        let plan = Case::new(Target::Keys(vec![op("editor", Change::Merge(patch))]))
            .with([stored("editor", json!({"font": "mono", "wrap": true}), 1)])
            .plan()
            .unwrap();
        assert_eq!(plan.updates[0].value, json!({"tabs": 2, "wrap": true}));
    }

    #[test]
    fn a_null_merge_removes_the_key_and_records_the_removed_version() {
        let plan = Case::new(Target::Keys(vec![op("editor", Change::Merge(Value::Null))]))
            .with([stored("editor", json!({"a": 1}), 3)])
            .plan()
            .unwrap();
        assert_eq!(plan.removals, vec!["editor".to_owned()]);
        assert_eq!(plan.history[0].kind, ChangeKind::Delete);
        assert_eq!(plan.history[0].version, 3);
        assert_eq!(
            plan.outcomes[0].before.as_ref().unwrap().value,
            json!({"a": 1})
        );
    }

    #[test]
    fn removing_an_absent_key_plans_nothing() {
        let plan = Case::new(Target::Keys(vec![op("gone", Change::Remove)]))
            .plan()
            .unwrap();
        assert!(plan.removals.is_empty() && plan.history.is_empty() && plan.outcomes.is_empty());
    }

    #[test]
    fn a_whole_scope_reset_removes_every_locked_row_as_a_reset() {
        let mut case = Case::new(Target::WholeScope)
            .with([stored("a", json!(1), 1), stored("b", json!(2), 2)]);
        case.kinds = Kinds {
            write: None,
            removal: ChangeKind::Reset,
        };
        let plan = case.plan().unwrap();
        let mut removed = plan.removals.clone();
        removed.sort();
        assert_eq!(removed, vec!["a".to_owned(), "b".to_owned()]);
        assert!(plan.history.iter().all(|h| h.kind == ChangeKind::Reset));
    }

    #[test]
    fn a_revert_is_recorded_as_a_revert_whether_or_not_the_key_exists() {
        let kinds = Kinds {
            write: Some(ChangeKind::Revert),
            removal: ChangeKind::Delete,
        };
        assert_eq!(kinds.of_write(true), ChangeKind::Revert);
        assert_eq!(kinds.of_write(false), ChangeKind::Revert);
        assert_eq!(Kinds::PLAIN.of_write(true), ChangeKind::Update);
        assert_eq!(Kinds::PLAIN.of_write(false), ChangeKind::Create);
    }

    #[test]
    fn an_expected_version_that_does_not_hold_plans_nothing() {
        let mut set = op("theme", Change::Replace(json!("b")));
        set.expect = Some(Expect::Version(1));
        let err = Case::new(Target::Keys(vec![set.clone()]))
            .with([stored("theme", json!("a"), 2)])
            .plan()
            .unwrap_err();
        assert!(matches!(
            err,
            Error::PreconditionFailed {
                current_version: Some(2),
                ..
            }
        ));

        set.expect = Some(Expect::Absent);
        let err = Case::new(Target::Keys(vec![set.clone()]))
            .with([stored("theme", json!("a"), 2)])
            .plan()
            .unwrap_err();
        assert!(matches!(err, Error::PreconditionFailed { .. }));

        set.expect = Some(Expect::Present);
        let err = Case::new(Target::Keys(vec![set])).plan().unwrap_err();
        assert!(matches!(
            err,
            Error::PreconditionFailed {
                current_version: None,
                ..
            }
        ));
    }

    #[test]
    fn a_stale_document_tag_plans_nothing_and_a_current_one_passes() {
        let rows = [stored("a", json!(1), 3), stored("b", json!(2), 1)];
        let target = || Target::Keys(vec![op("a", Change::Replace(json!(9)))]);
        let mut case = Case::new(target()).with(rows.clone());
        case.document = Some(DocumentCheck {
            keys: None,
            tag: document_tag([("a", 3), ("b", 1)]),
        });
        assert!(case.plan().is_ok());

        let mut stale = Case::new(target()).with(rows);
        stale.document = Some(DocumentCheck {
            keys: None,
            tag: document_tag([("a", 2), ("b", 1)]),
        });
        assert!(matches!(
            stale.plan().unwrap_err(),
            Error::PreconditionFailed { .. }
        ));
    }

    #[test]
    fn a_value_the_check_refuses_plans_nothing() {
        let case = Case::new(Target::Keys(vec![
            op("ok", Change::Replace(json!(1))),
            op("bad", Change::Replace(json!(2))),
        ]));
        let err = case
            .plan_checked(|key, _| match key {
                "bad" => Err(Error::bad_input(key, "type", "refused")),
                _ => Ok(()),
            })
            .unwrap_err();
        assert!(matches!(err, Error::BadInput(v) if v.field == "bad"));
    }

    #[test]
    fn the_mirrored_scopes_locale_is_mirrored_and_must_be_a_short_string() {
        let set =
            |value: Value| Case::new(Target::Keys(vec![op(LOCALE_KEY, Change::Replace(value))]));
        assert_eq!(
            set(json!("pt-BR")).plan().unwrap().locale,
            Some(LocaleMirror::Set("pt-BR".into()))
        );
        let err = set(json!({"lang": "pt"})).plan().unwrap_err();
        assert!(matches!(err, Error::BadInput(v) if v.rule == "legacyLocale"));
        assert!(set(json!("x".repeat(11))).plan().is_err());

        let removed = Case::new(Target::Keys(vec![op(LOCALE_KEY, Change::Remove)]))
            .with([stored(LOCALE_KEY, json!("en"), 1)])
            .plan()
            .unwrap();
        assert_eq!(removed.locale, Some(LocaleMirror::Clear));

        let mut other_scope = set(json!({"not": "mirrored"}));
        other_scope.mirrors_locale = false;
        assert_eq!(other_scope.plan().unwrap().locale, None);
    }

    #[test]
    fn the_rows_locked_are_the_keys_written_and_those_a_document_covers() {
        let target = Target::Keys(vec![op("a", Change::Remove)]);
        assert_eq!(locked_keys(&target, None), Some(vec!["a"]));
        let partial = DocumentCheck {
            keys: Some(vec![key("b")]),
            tag: String::new(),
        };
        assert_eq!(locked_keys(&target, Some(&partial)), Some(vec!["a", "b"]));
        let whole = DocumentCheck {
            keys: None,
            tag: String::new(),
        };
        assert_eq!(locked_keys(&target, Some(&whole)), None);
        assert_eq!(locked_keys(&Target::WholeScope, None), None);
    }

    #[test]
    fn only_written_keys_without_a_row_are_created() {
        let target = Target::Keys(vec![
            op("new", Change::Replace(json!(1))),
            op("old", Change::Replace(json!(1))),
            op("gone", Change::Remove),
        ]);
        let current: HashMap<_, _> = [stored("old", json!(0), 1)].into_iter().collect();
        assert_eq!(created_keys(&target, &current), vec!["new"]);
    }
}
