//! RFC 7386 JSON Merge Patch.

use serde_json::{Map, Value};

/// Applies `patch` to `target` (absent when the setting does not exist yet).
/// Returns `None` when the result is removal: a `null` patch.
pub fn merge_patch(target: Option<Value>, patch: &Value) -> Option<Value> {
    let Value::Object(patch_members) = patch else {
        return (!patch.is_null()).then(|| patch.clone());
    };
    let mut merged = match target {
        Some(Value::Object(members)) => members,
        _ => Map::new(),
    };
    for (name, member_patch) in patch_members {
        if member_patch.is_null() {
            merged.remove(name);
        } else {
            let current = merged.remove(name);
            if let Some(value) = merge_patch(current, member_patch) {
                merged.insert(name.clone(), value);
            }
        }
    }
    Some(Value::Object(merged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The test vectors of RFC 7386, Appendix A.
    #[test]
    fn rfc_7386_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                merge_patch(Some(target.clone()), &patch),
                Some(expected),
                "{target} + {patch}"
            );
        }
        assert_eq!(merge_patch(Some(json!({"a":"foo"})), &json!(null)), None);
        assert_eq!(
            merge_patch(Some(json!({"a":"foo"})), &json!("bar")),
            Some(json!("bar"))
        );
    }

    #[test]
    fn an_absent_target_merges_like_an_empty_object() {
        assert_eq!(
            merge_patch(None, &json!({"a": 1, "b": null})),
            Some(json!({"a": 1}))
        );
        assert_eq!(merge_patch(None, &json!(null)), None);
    }
}
