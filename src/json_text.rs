//! JSON text written straight into a byte buffer, byte for byte as `serde_json` writes it
//! compactly: for the responses that the direct GraphQL path writes itself.
//!
//! A read of 20 settings writes about a hundred strings (keys, string values, object members).
//! Through `serde_json`'s serializer each one costs a call through its writer and formatter
//! layers and a look-up of every byte in its escape table; here a string is checked eight bytes
//! at a time for the bytes JSON escapes (`"`, `\` and those below 0x20), which settings rarely
//! hold, and copied whole when it has none. Escapes are `serde_json`'s: the short forms
//! `\" \\ \b \t \n \f \r`, otherwise `\u00XX` with lower-case hex digits. Numbers are written
//! by `serde_json` itself.

use serde_json::Value;

/// What each byte becomes in a JSON string: 0 for itself, `u` for `\u00XX`, or the character
/// after the backslash.
const ESCAPE: [u8; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Every byte of a word set to `byte`.
const fn repeated(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// Whether any of the eight bytes of `word` is escaped in a JSON string. Each test is exact
/// (a borrow can only pass into a byte above one that already matched): a byte below 0x20 has
/// its high bit clear and turns it on when 0x20 is taken from it; a byte equal to `"` or `\`
/// is zero after the exclusive or.
fn escapes_any(word: u64) -> bool {
    const HIGH: u64 = repeated(0x80);
    let below = |word: u64, bound: u8| word.wrapping_sub(repeated(bound)) & !word & HIGH;
    let zero = |word: u64| below(word, 1);
    (below(word, 0x20) | zero(word ^ repeated(b'"')) | zero(word ^ repeated(b'\\'))) != 0
}

/// `text` as a JSON string, quoted and escaped.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if escapes(bytes) {
        write_escaped(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
    out.push(b'"');
}

/// Whether any byte of `bytes` is escaped in a JSON string: eight at a time, the last eight
/// overlapping the words before them.
fn escapes(bytes: &[u8]) -> bool {
    let (words, _) = bytes.as_chunks::<8>();
    match bytes.last_chunk::<8>() {
        Some(&last) => {
            escapes_any(u64::from_ne_bytes(last))
                || words
                    .iter()
                    .any(|&word| escapes_any(u64::from_ne_bytes(word)))
        }
        None => bytes.iter().any(|&byte| ESCAPE[usize::from(byte)] != 0),
    }
}

/// The contents of a JSON string of `bytes`, some of which are escaped.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    // `bytes[copied..at]` needs no escape and is not written yet.
    let mut copied = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(byte)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[copied..at]);
        match escape {
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]),
            letter => out.extend_from_slice(&[b'\\', letter]),
        }
        copied = at + 1;
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// `value` as compact JSON text, object members in the map's order, as `serde_json` writes it.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_str(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            for (index, (name, member)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_str(out, name);
                out.push(b':');
                write_value(out, member);
            }
            out.push(b'}');
        }
    }
}

/// A number (or anything else that always serializes), by `serde_json`.
pub fn write_number(out: &mut Vec<u8>, number: &(impl serde::Serialize + ?Sized)) {
    // Writing into a Vec cannot fail, and numbers always serialize.
    let _ = serde_json::to_writer(&mut *out, number);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn written(value: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, value);
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    fn assert_as_serde_json(value: &Value) {
        assert_eq!(written(value), serde_json::to_string(value).unwrap());
    }

    #[test]
    fn every_character_below_0x80_at_every_place_of_a_word_is_written_as_serde_json_writes_it() {
        for character in (0..0x80u8).map(char::from) {
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9] {
                    let text = format!("{}{character}{}", "a".repeat(before), "é".repeat(after));
                    assert_as_serde_json(&Value::String(text));
                }
            }
        }
    }

    #[test]
    fn runs_of_escapes_and_text_beyond_ascii_are_written_as_serde_json_writes_them() {
        let texts = [
            "",
            "\"",
            "\\\\\\\\\\\\\\\\\\",
            "\u{0}\u{1}\u{1f}\u{7f}\u{80}\u{ff}",
            "line\nbreak\ttab\r\u{8}\u{c}",
            "😀 emoji, ümlaut, 漢字, \u{2028}\u{2029} separators, \u{feff}",
            "/slashes/ are not escaped</script>",
            "exactly8",
            "sixteen bytes!!!",
            "nearly all safe but the last one\"",
        ];
        for text in texts {
            assert_as_serde_json(&Value::String(text.to_owned()));
            let member = (text.to_owned(), Value::String(text.to_owned()));
            assert_as_serde_json(&Value::Object(serde_json::Map::from_iter([member])));
        }
    }

    #[test]
    fn values_of_every_kind_are_written_as_serde_json_writes_them() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-17),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.0),
            json!(0.1),
            json!(1e300),
            json!(-2.5e-8),
            json!([]),
            json!({}),
            json!([1, "two", [3, [4, {}]], {"five": null}]),
            json!({"b": {"z": 1, "a": [true, false]}, "a": "x", "": "empty", "\"q\"": "\n"}),
        ];
        for value in &values {
            assert_as_serde_json(value);
        }
    }

    #[test]
    fn a_word_of_eight_bytes_is_found_to_hold_an_escape_exactly_when_one_of_them_is_escaped() {
        for byte in 0..=255u8 {
            for place in 0..8 {
                for filler in [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff] {
                    let mut bytes = [filler; 8];
                    bytes[place] = byte;
                    let expected = bytes.iter().any(|&b| ESCAPE[usize::from(b)] != 0);
                    assert_eq!(
                        escapes_any(u64::from_ne_bytes(bytes)),
                        expected,
                        "{bytes:?}"
                    );
                }
            }
        }
    }
}
