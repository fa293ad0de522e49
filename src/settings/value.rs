//! Limits on setting values: size, nesting, and what PostgreSQL `jsonb` cannot hold.

use std::io;

use serde_json::Value;

use crate::error::{Error, Violation};

#[derive(Clone, Copy, Debug)]
pub struct ValueLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
    /// Most keys one write may change: every key is a row and a history row in one
    /// transaction, and the database bounds the parameters of one statement.
    pub max_keys: usize,
    /// What one user may keep in one scope.
    pub quotas: super::Quotas,
}

impl ValueLimits {
    /// Checks that a write of `keys` keys (the members of a patch) is within the limit.
    pub fn check_key_count(&self, field: &str, keys: usize) -> Result<(), Error> {
        if keys <= self.max_keys {
            return Ok(());
        }
        Err(Error::bad_input(
            field,
            "maxKeys",
            format!(
                "a write may change at most {} keys, not {keys}; split it into several",
                self.max_keys
            ),
        ))
    }

    /// Checks a value about to be stored under `field` (a key, or `patch`).
    pub fn check(&self, field: &str, value: &Value) -> Result<(), Error> {
        check_tree(field, value, self.max_depth, &mut Vec::new())?;
        let size = serialized_len(value);
        if size > self.max_bytes {
            return Err(Error::PayloadTooLarge {
                message: format!(
                    "the value of `{field}` is {size} bytes serialized; the limit is {} bytes",
                    self.max_bytes
                ),
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// One step from a value into one of its members or items.
enum Step<'v> {
    Index(usize),
    Name(&'v str),
}

/// The JSON pointer (RFC 6901) of the place `path` leads to.
fn pointer_of(path: &[Step]) -> String {
    let mut pointer = String::new();
    for step in path {
        pointer.push('/');
        match step {
            Step::Index(index) => pointer.push_str(&index.to_string()),
            Step::Name(name) => pointer.push_str(&name.replace('~', "~0").replace('/', "~1")),
        }
    }
    pointer
}

/// Walks the value once for depth and NUL characters. `path` leads from the value stored to
/// `value`; the JSON pointer for the message is written only for a violation.
fn check_tree<'v>(
    field: &str,
    value: &'v Value,
    max_depth: usize,
    path: &mut Vec<Step<'v>>,
) -> Result<(), Error> {
    let violation = |rule: &'static str, pointer: String, message: String| {
        Error::BadInput(Violation {
            field: field.to_owned(),
            rule: rule.into(),
            pointer: Some(pointer),
            message,
        })
    };
    let nested = |path: &[Step]| {
        let pointer = pointer_of(path);
        let message =
            format!("the value of `{field}` nests deeper than {max_depth} levels at `{pointer}`");
        violation("maxDepth", pointer, message)
    };
    let nul = |path: &[Step]| {
        let pointer = pointer_of(path);
        let message =
            format!("the value of `{field}` contains the character \\u0000 at `{pointer}`");
        violation("noNulCharacter", pointer, message)
    };
    // The depth of `value` is the length of its path.
    let depth = path.len();
    // A NUL byte in UTF-8 is only ever the character U+0000.
    let has_nul = |text: &str| text.as_bytes().contains(&0);
    match value {
        Value::String(s) if has_nul(s) => Err(nul(path)),
        Value::Array(items) => {
            if depth + 1 > max_depth {
                return Err(nested(path));
            }
            for (index, item) in items.iter().enumerate() {
                path.push(Step::Index(index));
                check_tree(field, item, max_depth, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Object(members) => {
            if depth + 1 > max_depth {
                return Err(nested(path));
            }
            for (name, item) in members {
                path.push(Step::Name(name));
                if has_nul(name) {
                    return Err(nul(path));
                }
                check_tree(field, item, max_depth, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The length of the compact serialization, counted without building the string.
pub(super) fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` to an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: ValueLimits = ValueLimits {
        max_bytes: 64,
        max_depth: 3,
        max_keys: 10,
        quotas: crate::settings::Quotas {
            keys: None,
            bytes: None,
        },
    };

    fn nest(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, _| json!([inner]))
    }

    #[test]
    fn values_within_limits_pass() {
        for value in [
            json!(null),
            json!(true),
            json!("dark"),
            json!({"a": {"b": [1]}}),
            nest(3),
        ] {
            LIMITS.check("k", &value).unwrap();
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_rejected_with_its_pointer() {
        let err = LIMITS.check("k", &json!({"a": {"b": [[1]]}})).unwrap_err();
        match err {
            Error::BadInput(v) => {
                assert_eq!(v.rule, "maxDepth");
                assert!(v.message.contains("/a/b/0"), "{}", v.message);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_pointer_escapes_member_names_and_names_the_place_of_a_nul() {
        let pointer = |value: Value| match LIMITS.check("k", &value) {
            Err(Error::BadInput(v)) => (v.rule.into_owned(), v.pointer),
            other => panic!("{value}: {other:?}"),
        };
        assert_eq!(
            pointer(json!({"a/b": {"~c": [[1]]}})),
            ("maxDepth".into(), Some("/a~1b/~0c/0".into()))
        );
        assert_eq!(
            pointer(json!({"ok": 1, "x": [0, {"y\u{0}": 1}]})),
            ("noNulCharacter".into(), Some("/x/1/y\u{0}".into()))
        );
        assert_eq!(
            pointer(json!([1, "\u{0}"])),
            ("noNulCharacter".into(), Some("/1".into()))
        );
    }

    #[test]
    fn nul_is_rejected_in_strings_and_member_names() {
        for value in [json!("a\u{0}b"), json!({"x\u{0}": 1}), json!([["\u{0}"]])] {
            match LIMITS.check("k", &value) {
                Err(Error::BadInput(v)) => assert_eq!(v.rule, "noNulCharacter"),
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn size_is_the_compact_serialized_length() {
        let value = json!("x".repeat(62)); // 64 bytes with its quotes
        LIMITS.check("k", &value).unwrap();
        let value = json!("x".repeat(63));
        assert!(matches!(
            LIMITS.check("k", &value),
            Err(Error::PayloadTooLarge { limit: 64, .. })
        ));
    }
}
