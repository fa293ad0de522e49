//! Setting keys and scopes: validated once at the edge, then trusted.

use crate::error::Error;

pub const MAX_NAME_CHARS: usize = 255;

/// A setting key: 1 to 255 characters, none of them a control character.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

/// A settings scope: like a key, but empty is allowed and means the default scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Scope(String);

impl Key {
    /// `field` names the input in errors: `key`, or `patch` for the members of a patch.
    pub fn parse(raw: impl Into<String>, field: &str) -> Result<Self, Error> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(Error::bad_input(
                field,
                "minLength",
                "a setting key must not be empty",
            ));
        }
        check_name(&raw, field, "setting key")?;
        Ok(Key(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Scope {
    pub fn parse(raw: impl Into<String>) -> Result<Self, Error> {
        Self::parse_as(raw, "scope")
    }

    /// Like `parse`, for an input that names the scope otherwise (the `space` of a route).
    pub fn parse_as(raw: impl Into<String>, field: &str) -> Result<Self, Error> {
        let raw = raw.into();
        check_name(&raw, field, field)?;
        Ok(Scope(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_name(raw: &str, field: &str, what: &str) -> Result<(), Error> {
    if raw.chars().count() > MAX_NAME_CHARS {
        return Err(Error::bad_input(
            field,
            "maxLength",
            format!("a {what} must be at most {MAX_NAME_CHARS} characters long"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(Error::bad_input(
            field,
            "noControlCharacters",
            format!("a {what} must not contain control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(result: Result<Key, Error>) -> String {
        match result {
            Err(Error::BadInput(v)) => v.rule.into_owned(),
            other => panic!("expected a bad input error, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_keys_are_accepted() {
        for key in ["theme", "editor.fontSize", "ключ", "a", &"k".repeat(255)] {
            assert_eq!(Key::parse(key, "key").unwrap().as_str(), key);
        }
    }

    #[test]
    fn an_empty_key_is_rejected() {
        assert_eq!(rule(Key::parse("", "key")), "minLength");
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(Key::parse("é".repeat(255), "key").is_ok());
        assert_eq!(rule(Key::parse("é".repeat(256), "key")), "maxLength");
    }

    #[test]
    fn control_characters_are_rejected() {
        for key in ["a\nb", "tab\there", "nul\0", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(
                rule(Key::parse(key, "key")),
                "noControlCharacters",
                "{key:?}"
            );
        }
    }

    #[test]
    fn the_default_scope_is_empty() {
        assert_eq!(Scope::parse("").unwrap(), Scope::default());
        assert!(Scope::parse("x".repeat(256)).is_err());
    }
}
