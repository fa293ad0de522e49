//! The catalog of known setting keys: a JSON Schema (draft 2020-12), a default and a
//! description for each. Checked once at start-up; enforced on every write.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, bail};
use jsonschema::{Draft, Validator};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Violation};

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
    definitions: BTreeMap<String, Definition>,
    /// Reject keys that the catalog does not know.
    strict: bool,
}

/// An entry as written in a catalog file; an operator's entry may leave out what it keeps.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    schema: Option<Value>,
    default: Option<Value>,
    description: Option<String>,
}

impl Catalog {
    /// The built-in catalog, with the entries of `operator_file` added or overriding.
    pub fn load(operator_file: Option<&Path>, strict: bool) -> anyhow::Result<Self> {
        let mut entries = parse_entries(BUILTIN).context("the built-in catalog is invalid")?;
        if let Some(path) = operator_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read SETTINGS_CATALOG {}", path.display()))?;
            let operator = parse_entries(&text)
                .with_context(|| format!("SETTINGS_CATALOG {} is not a catalog", path.display()))?;
            for (key, entry) in operator {
                match entries.get_mut(&key) {
                    Some(builtin) => {
                        builtin.schema = entry.schema.or(builtin.schema.take());
                        builtin.default = entry.default.or(builtin.default.take());
                        builtin.description = entry.description.or(builtin.description.take());
                    }
                    None => {
                        entries.insert(key, entry);
                    }
                }
            }
        }
        let definitions = entries
            .into_iter()
            .map(|(key, entry)| Ok((key.clone(), definition(key, entry)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Catalog {
            definitions,
            strict,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Definition> {
        self.definitions.get(key)
    }

    /// Every definition, ordered by key.
    pub fn definitions(&self) -> impl Iterator<Item = &Definition> {
        self.definitions.values()
    }

    /// Checks a value about to be stored under `key`.
    pub fn check(&self, key: &str, value: &Value) -> Result<(), Error> {
        match self.definitions.get(key) {
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

fn parse_entries(text: &str) -> anyhow::Result<BTreeMap<String, Entry>> {
    let raw: BTreeMap<String, Value> =
        serde_json::from_str(text).context("expected a JSON object of keys to entries")?;
    raw.into_iter()
        .map(|(key, entry)| {
            crate::settings::Key::parse(key.as_str(), "catalog")
                .map_err(|err| anyhow::anyhow!("catalog key `{key}`: {err}"))?;
            let entry = serde_json::from_value(entry).with_context(|| {
                format!("catalog key `{key}` is not an entry of schema, default and description")
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

    fn with_file(content: &str) -> anyhow::Result<Catalog> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        Catalog::load(Some(file.path()), false)
    }

    fn rule(result: Result<(), Error>) -> String {
        match result {
            Err(Error::BadInput(violation)) => violation.rule.into_owned(),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn the_builtin_catalog_holds_every_typed_legacy_field() {
        let catalog = Catalog::load(None, false).unwrap();
        let keys: Vec<_> = catalog.definitions().map(|d| d.key.as_str()).collect();
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
        let catalog = Catalog::load(None, false).unwrap();
        assert_eq!(rule(catalog.check("digestMode", &json!("HOURLY"))), "enum");
        assert_eq!(
            rule(catalog.check("theme", &json!("t".repeat(21)))),
            "maxLength"
        );
        assert_eq!(rule(catalog.check("locale", &json!(12))), "type");
        assert_eq!(
            rule(catalog.check("pushNotifications", &json!("yes"))),
            "type"
        );
        catalog.check("digestMode", &json!("WEEKLY")).unwrap();
        catalog.check("anything", &json!({"free": "form"})).unwrap();
    }

    #[test]
    fn a_violation_names_the_pointer_inside_the_value() {
        let catalog = with_file(
            r#"{"editor": {"schema": {"type": "object", "properties": {"fontSize": {"type": "integer", "minimum": 8}}}, "default": {}}}"#,
        )
        .unwrap();
        match catalog.check("editor", &json!({"fontSize": 4})) {
            Err(Error::BadInput(v)) => {
                assert_eq!((v.field.as_str(), v.rule.as_ref()), ("editor", "minimum"));
                assert_eq!(v.pointer.as_deref(), Some("/fontSize"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strict_mode_rejects_unknown_keys() {
        let catalog = Catalog::load(None, true).unwrap();
        assert_eq!(rule(catalog.check("anything", &json!(1))), "knownKey");
        catalog.check("theme", &json!("light")).unwrap();
    }

    #[test]
    fn an_operator_file_adds_keys_and_overrides_builtin_defaults() {
        let catalog = with_file(
            r#"{"fontSize": {"schema": {"type": "integer", "minimum": 8}, "default": 14, "description": "Editor font size"},
                "theme": {"default": "light"}}"#,
        )
        .unwrap();
        let font = catalog.get("fontSize").unwrap();
        assert_eq!(
            (font.default.clone(), font.description.as_str()),
            (json!(14), "Editor font size")
        );
        let theme = catalog.get("theme").unwrap();
        assert_eq!(theme.default, json!("light"));
        assert_eq!(
            theme.schema,
            json!({"type": "string", "maxLength": 20}),
            "the built-in schema is kept"
        );
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
