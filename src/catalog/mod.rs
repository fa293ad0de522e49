//! The catalog of known setting keys: a JSON Schema (draft 2020-12), a default and a
//! description for each, per scope. The built-in entries type the fields of the typed legacy
//! contracts and apply in the scopes those contracts are bound to; an operator's file adds
//! entries for the scopes it names (or every scope) and overrides built-in ones. Checked once
//! at start-up; enforced on every write.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, bail};
use jsonschema::{Draft, Validator};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Violation};

/// The built-in entries, by the contract whose fields they type.
const BUILTIN: &str = include_str!("builtin.json");

/// One known key.
pub struct Definition {
    pub key: String,
    pub schema: Value,
    pub default: Value,
    pub description: String,
    validator: Validator,
}

impl std::fmt::Debug for Definition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definition")
            .field("key", &self.key)
            .field("schema", &self.schema)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Catalog {
    /// The definitions of each scope that has its own, by key.
    scoped: BTreeMap<String, BTreeMap<String, Definition>>,
    /// The definitions of every scope: operator entries that name no scope.
    everywhere: BTreeMap<String, Definition>,
    /// Reject keys that the catalog does not know.
    strict: bool,
}

/// An entry as written in a catalog file; an operator's entry may leave out what it keeps.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    schema: Option<Value>,
    default: Option<Value>,
    description: Option<String>,
    /// The scopes the entry applies in; every scope when absent (operator entries only).
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

impl Entry {
    /// Takes what `other` gives, keeps the rest.
    fn override_with(&mut self, other: &Entry) {
        self.schema = other.schema.clone().or(self.schema.take());
        self.default = other.default.clone().or(self.default.take());
        self.description = other.description.clone().or(self.description.take());
    }
}

impl Catalog {
    /// The built-in entries of each contract in `contracts` (contract id, scope) in the scope
    /// it is bound to, then the entries of `operator_file` added or overriding. Two contracts
    /// bound to one scope get the union of their entries; a key they type differently stops
    /// start-up.
    pub fn load(
        operator_file: Option<&Path>,
        strict: bool,
        contracts: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::load_with(BUILTIN, operator_file, strict, contracts)
    }

    fn load_with(
        builtin: &str,
        operator_file: Option<&Path>,
        strict: bool,
        contracts: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let builtin: BTreeMap<String, BTreeMap<String, Value>> =
            serde_json::from_str(builtin).context("the built-in catalog is invalid")?;
        let mut scoped: BTreeMap<String, BTreeMap<String, (Entry, &str)>> = BTreeMap::new();
        for &(contract, scope) in contracts {
            let Some(fields) = builtin.get(contract) else {
                continue;
            };
            let fields = parse_entries(fields.clone())
                .with_context(|| format!("the built-in catalog of contract {contract}"))?;
            let entries = scoped.entry(scope.to_owned()).or_default();
            for (key, entry) in fields {
                match entries.get(&key) {
                    Some((other, by)) if other.schema != entry.schema => bail!(
                        "contracts {by} and {contract} are both bound to scope `{scope}` but type \
                         `{key}` differently: bind them to different scopes"
                    ),
                    Some(_) => {}
                    None => {
                        entries.insert(key, (entry, contract));
                    }
                }
            }
        }
        let mut everywhere = BTreeMap::new();
        if let Some(path) = operator_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read SETTINGS_CATALOG {}", path.display()))?;
            let operator = serde_json::from_str(&text)
                .map_err(anyhow::Error::from)
                .and_then(parse_entries)
                .with_context(|| format!("SETTINGS_CATALOG {} is not a catalog", path.display()))?;
            for (key, entry) in operator {
                let scopes = match &entry.scopes {
                    Some(scopes) => scopes.clone(),
                    // An entry for every scope overrides the key where it is built in.
                    None => scoped
                        .iter()
                        .filter(|(_, entries)| entries.contains_key(&key))
                        .map(|(scope, _)| scope.clone())
                        .collect(),
                };
                if scopes.is_empty() {
                    everywhere.insert(key, entry);
                    continue;
                }
                for scope in scopes {
                    crate::settings::Scope::parse(scope.as_str()).map_err(|err| {
                        anyhow::anyhow!("catalog key `{key}` names the scope `{scope}`: {err}")
                    })?;
                    let entries = scoped.entry(scope).or_default();
                    match entries.get_mut(&key) {
                        Some((builtin, _)) => builtin.override_with(&entry),
                        None => {
                            entries.insert(key.clone(), (entry.clone(), "the operator's"));
                        }
                    }
                }
            }
        }
        let scoped = scoped
            .into_iter()
            .map(|(scope, entries)| {
                let definitions = entries
                    .into_iter()
                    .map(|(key, (entry, _))| Ok((key.clone(), definition(key, entry)?)))
                    .collect::<anyhow::Result<_>>()?;
                Ok((scope, definitions))
            })
            .collect::<anyhow::Result<_>>()?;
        let everywhere = everywhere
            .into_iter()
            .map(|(key, entry)| Ok((key.clone(), definition(key, entry)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Catalog {
            scoped,
            everywhere,
            strict,
        })
    }

    /// The definition of `key` in `scope`.
    pub fn get(&self, scope: &str, key: &str) -> Option<&Definition> {
        self.scoped
            .get(scope)
            .and_then(|definitions| definitions.get(key))
            .or_else(|| self.everywhere.get(key))
    }

    /// Every definition of `scope`, ordered by key.
    pub fn definitions(&self, scope: &str) -> Vec<&Definition> {
        let own = self.scoped.get(scope);
        let mut definitions: Vec<&Definition> = own.into_iter().flat_map(|d| d.values()).collect();
        definitions.extend(
            self.everywhere
                .values()
                .filter(|d| own.is_none_or(|own| !own.contains_key(&d.key))),
        );
        definitions.sort_by(|a, b| a.key.cmp(&b.key));
        definitions
    }

    /// Every definition of `key`, whatever its scope.
    pub fn definitions_of<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Definition> {
        self.scoped
            .values()
            .filter_map(move |definitions| definitions.get(key))
            .chain(self.everywhere.get(key))
    }

    /// Checks a value that applies under `key` in every scope that knows the key.
    pub fn check_everywhere(&self, key: &str, value: &Value) -> Result<(), Error> {
        for definition in self.definitions_of(key) {
            definition.check(value).map_err(Error::BadInput)?;
        }
        Ok(())
    }

    /// Checks a value about to be stored under `key` in `scope`.
    pub fn check(&self, scope: &str, key: &str, value: &Value) -> Result<(), Error> {
        match self.get(scope, key) {
            Some(definition) => definition.check(value).map_err(Error::BadInput),
            None if self.strict => Err(Error::bad_input(
                key,
                "knownKey",
                format!("`{key}` is not a known setting key, and unknown keys are not accepted"),
            )),
            None => Ok(()),
        }
    }
}

impl Definition {
    /// Whether `value` satisfies the schema.
    pub fn accepts(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }

    fn check(&self, value: &Value) -> Result<(), Violation> {
        let Some(error) = self.validator.iter_errors(value).next() else {
            return Ok(());
        };
        let pointer = error.instance_path().to_string();
        let place = if pointer.is_empty() {
            String::new()
        } else {
            format!(" at `{pointer}`")
        };
        Err(Violation {
            field: self.key.clone(),
            rule: error.kind().keyword().to_owned().into(),
            pointer: Some(pointer),
            message: format!("the value of `{}`{place} is invalid: {error}", self.key),
        })
    }
}

fn parse_entries(raw: BTreeMap<String, Value>) -> anyhow::Result<BTreeMap<String, Entry>> {
    raw.into_iter()
        .map(|(key, entry)| {
            crate::settings::Key::parse(key.as_str(), "catalog")
                .map_err(|err| anyhow::anyhow!("catalog key `{key}`: {err}"))?;
            let entry = serde_json::from_value(entry).with_context(|| {
                format!(
                    "catalog key `{key}` is not an entry of schema, default, description and \
                     scopes"
                )
            })?;
            Ok((key, entry))
        })
        .collect()
}

fn definition(key: String, entry: Entry) -> anyhow::Result<Definition> {
    let Some(schema) = entry.schema else {
        bail!("catalog key `{key}` has no `schema`");
    };
    let Some(default) = entry.default else {
        bail!("catalog key `{key}` has no `default`");
    };
    if let Err(err) = jsonschema::draft202012::meta::validate(&schema) {
        bail!(
            "catalog key `{key}` has an invalid schema: {err} (at `{}`)",
            err.instance_path()
        );
    }
    let validator = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|err| anyhow::anyhow!("catalog key `{key}` has an unusable schema: {err}"))?;
    let definition = Definition {
        key,
        schema,
        default,
        description: entry.description.unwrap_or_default(),
        validator,
    };
    if let Err(violation) = definition.check(&definition.default) {
        bail!(
            "catalog key `{}` has a default that fails its own schema: {} (rule `{}`)",
            definition.key,
            violation.message,
            violation.rule
        );
    }
    Ok(definition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    /// Both typed contracts bound to the default scope, so keys are looked up in `""`.
    const IN_DEFAULT_SCOPE: &[(&str, &str)] = &[("003", ""), ("004", "")];

    fn with_file(content: &str) -> anyhow::Result<Catalog> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        Catalog::load(Some(file.path()), false, IN_DEFAULT_SCOPE)
    }

    fn rule(result: Result<(), Error>) -> String {
        match result {
            Err(Error::BadInput(violation)) => violation.rule.into_owned(),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn the_builtin_catalog_holds_every_typed_legacy_field() {
        let catalog = Catalog::load(None, false, IN_DEFAULT_SCOPE).unwrap();
        let keys: Vec<_> = catalog
            .definitions("")
            .into_iter()
            .map(|d| d.key.as_str())
            .collect();
        for key in [
            "notifications",
            "totalMinutesVisibility",
            "totalFundVisibility",
            "liveStreamNotifications",
            "paymentNotifications",
            "followNotifications",
            "messageNotifications",
            "followingActivityNotifications",
            "preferredLanguage",
            "locale",
            "theme",
            "emailNotifications",
            "pushNotifications",
            "inAppNotifications",
            "digestMode",
        ] {
            assert!(keys.contains(&key), "{key}");
        }
    }

    #[test]
    fn builtin_keys_reject_wrong_types_lengths_and_enum_values() {
        let catalog = Catalog::load(None, false, IN_DEFAULT_SCOPE).unwrap();
        assert_eq!(
            rule(catalog.check("", "digestMode", &json!("HOURLY"))),
            "enum"
        );
        assert_eq!(
            rule(catalog.check("", "theme", &json!("t".repeat(21)))),
            "maxLength"
        );
        assert_eq!(rule(catalog.check("", "locale", &json!(12))), "type");
        assert_eq!(
            rule(catalog.check("", "pushNotifications", &json!("yes"))),
            "type"
        );
        catalog.check("", "digestMode", &json!("WEEKLY")).unwrap();
        catalog
            .check("", "anything", &json!({"free": "form"}))
            .unwrap();
    }

    #[test]
    fn a_violation_names_the_pointer_inside_the_value() {
        let catalog = with_file(
            r#"{"editor": {"schema": {"type": "object", "properties": {"fontSize": {"type": "integer", "minimum": 8}}}, "default": {}}}"#,
        )
        .unwrap();
        match catalog.check("", "editor", &json!({"fontSize": 4})) {
            Err(Error::BadInput(v)) => {
                assert_eq!((v.field.as_str(), v.rule.as_ref()), ("editor", "minimum"));
                assert_eq!(v.pointer.as_deref(), Some("/fontSize"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strict_mode_rejects_unknown_keys() {
        let catalog = Catalog::load(None, true, IN_DEFAULT_SCOPE).unwrap();
        assert_eq!(rule(catalog.check("", "anything", &json!(1))), "knownKey");
        catalog.check("", "theme", &json!("light")).unwrap();
    }

    #[test]
    fn an_operator_file_adds_keys_and_overrides_builtin_defaults() {
        let catalog = with_file(
            r#"{"fontSize": {"schema": {"type": "integer", "minimum": 8}, "default": 14, "description": "Editor font size"},
                "theme": {"default": "light"}}"#,
        )
        .unwrap();
        let font = catalog.get("", "fontSize").unwrap();
        assert_eq!(
            (font.default.clone(), font.description.as_str()),
            (json!(14), "Editor font size")
        );
        let theme = catalog.get("", "theme").unwrap();
        assert_eq!(theme.default, json!("light"));
        assert_eq!(
            theme.schema,
            json!({"type": "string", "maxLength": 20}),
            "the built-in schema is kept"
        );
    }

    #[test]
    fn each_contracts_types_apply_only_in_the_scope_it_is_bound_to() {
        let catalog = Catalog::load(None, false, &[("003", "a"), ("004", "b")]).unwrap();
        assert_eq!(
            rule(catalog.check("a", "notifications", &json!({"email": false}))),
            "type"
        );
        catalog
            .check("b", "notifications", &json!({"email": false}))
            .unwrap();
        assert_eq!(
            rule(catalog.check("b", "theme", &json!({"theme": "dark"}))),
            "type"
        );
        catalog
            .check("a", "theme", &json!({"theme": "dark"}))
            .unwrap();
        catalog
            .check("", "theme", &json!({"theme": "dark"}))
            .unwrap();
        assert!(catalog.definitions("").is_empty());
        let keys = |scope| -> Vec<String> {
            catalog
                .definitions(scope)
                .iter()
                .map(|d| d.key.clone())
                .collect()
        };
        assert!(keys("b").contains(&"digestMode".to_owned()));
        assert!(!keys("a").contains(&"digestMode".to_owned()));
    }

    #[test]
    fn contracts_bound_to_one_scope_share_it_and_a_key_typed_twice_differently_stops_loading() {
        let union = Catalog::load(None, false, &[("003", "s"), ("004", "s")]).unwrap();
        assert!(
            union.get("s", "notifications").is_some() && union.get("s", "digestMode").is_some()
        );

        let builtin = r#"{"a": {"mode": {"schema": {"type": "string"}, "default": "x"}},
                          "b": {"mode": {"schema": {"type": "boolean"}, "default": true}},
                          "c": {"mode": {"schema": {"type": "string"}, "default": "y"}}}"#;
        let err = Catalog::load_with(builtin, None, false, &[("a", "s"), ("b", "s")]).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("`mode`") && err.contains("`s`"), "{err}");
        Catalog::load_with(builtin, None, false, &[("a", "s"), ("b", "t")]).unwrap();
        Catalog::load_with(builtin, None, false, &[("a", "s"), ("c", "s")]).unwrap();
    }

    #[test]
    fn an_operator_entry_applies_in_the_scopes_it_names_or_in_every_scope() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(
            br#"{"fontSize": {"schema": {"type": "integer"}, "default": 14, "scopes": ["web"]},
                 "density": {"schema": {"type": "string"}, "default": "cozy"}}"#,
        )
        .unwrap();
        let catalog = Catalog::load(Some(file.path()), false, &[("004", "b")]).unwrap();
        assert!(catalog.get("web", "fontSize").is_some());
        assert!(catalog.get("", "fontSize").is_none());
        for scope in ["", "web", "b", "anything"] {
            assert!(catalog.get(scope, "density").is_some(), "{scope}");
        }
        assert_eq!(catalog.definitions_of("density").count(), 1);
    }

    #[test]
    fn a_broken_catalog_is_refused_with_the_key_and_the_problem() {
        let cases = [
            (
                r#"{"k": {"schema": {"type": "integr"}, "default": 1}}"#,
                "invalid schema",
            ),
            (
                r#"{"k": {"schema": {"minimum": "eight"}, "default": 1}}"#,
                "invalid schema",
            ),
            (
                r#"{"k": {"schema": {"type": "integer"}, "default": "x"}}"#,
                "fails its own schema",
            ),
            (
                r#"{"k": {"schema": {"$ref": "https://example.com/s.json"}, "default": 1}}"#,
                "unusable schema",
            ),
            (r#"{"k": {"default": 1}}"#, "has no `schema`"),
            (
                r#"{"k": {"schema": {"type": "integer"}}}"#,
                "has no `default`",
            ),
            (
                r#"{"k": {"schema": {}, "default": 1, "descripton": "typo"}}"#,
                "unknown field",
            ),
            (r#"{"": {"schema": {}, "default": 1}}"#, "must not be empty"),
            (r#"{"theme": {"default": 42}}"#, "fails its own schema"),
            ("[1, 2]", "not a catalog"),
        ];
        for (content, problem) in cases {
            let err = format!("{:#}", with_file(content).unwrap_err());
            assert!(err.contains(problem), "{content}: {err}");
            if content.contains("\"k\"") {
                assert!(err.contains("`k`"), "the key is named: {err}");
            }
        }
    }
}
