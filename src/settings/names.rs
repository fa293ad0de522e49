//! Setting keys and scopes: validated once at the edge, then trusted.

use std::borrow::Cow;

use crate::error::Error;

pub const MAX_NAME_CHARS: usize = 255;

/// A setting key: 1 to 255 characters, none of them a control character.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Cow<'static, str>);

/// A settings scope: like a key, but empty is allowed and means the default scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
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
        Ok(Key(Cow::Owned(raw)))
    }

    /// A key named in the code, such as a contract's field. Used in a `const`, a name that breaks
    /// the rules of [`Key::parse`] fails the build, so requests never check it again.
    pub const fn from_static(name: &'static str) -> Self {
        assert!(is_valid_static_key(name), "not a valid setting key");
        Key(Cow::Borrowed(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// [`Key::parse`]'s rules, in a form the compiler can evaluate: non-empty, at most
/// [`MAX_NAME_CHARS`] characters, and no control character (C0, DEL, or C1, which UTF-8 writes as
/// 0xC2 followed by 0x80 to 0x9F).
const fn is_valid_static_key(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut chars = 0;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte < 0x20 || byte == 0x7f {
            return false;
        }
        if byte == 0xc2 && i + 1 < bytes.len() && bytes[i + 1] >= 0x80 && bytes[i + 1] <= 0x9f {
            return false;
        }
        // Continuation bytes do not start a character.
        if byte & 0xc0 != 0x80 {
            chars += 1;
        }
        i += 1;
    }
    chars > 0 && chars <= MAX_NAME_CHARS
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
    fn keys_named_in_code_follow_the_rules_of_parse() {
        let named = ["theme", "ключ", "é", &"k".repeat(255)];
        for name in named {
            assert!(is_valid_static_key(name), "{name:?}");
            assert!(Key::parse(name, "key").is_ok(), "{name:?}");
        }
        let broken = [
            "",
            "a\nb",
            "nul\0",
            "del\u{7f}",
            "c1\u{85}",
            &"é".repeat(256),
        ];
        for name in broken {
            assert!(!is_valid_static_key(name), "{name:?}");
            assert!(Key::parse(name, "key").is_err(), "{name:?}");
        }
        const THEME: Key = Key::from_static("theme");
        assert_eq!(THEME, Key::parse("theme", "key").unwrap());
    }

    #[test]
    fn the_default_scope_is_empty() {
        assert_eq!(Scope::parse("").unwrap(), Scope::default());
        assert!(Scope::parse("x".repeat(256)).is_err());
    }
}
