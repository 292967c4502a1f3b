//! Parsing what clients send as JSON, bounded in depth and size.
//!
//! serde_json refuses nesting past 128 levels by itself. The fallback for
//! JavaScript object literals (the seed protocols' examples are written that
//! way) is `json5`, a recursive-descent parser with no depth limit: a few
//! thousand `[` would overflow the stack of the tokio worker parsing them and
//! abort the whole process. So the fallback only sees text that a flat scan
//! (`nesting_depth`, no recursion) has found shallow enough, and only up to
//! `MAX_LENIENT_BYTES`; larger messages must be strict JSON.

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// Deepest nesting of arrays and objects accepted in object-literal syntax.
pub(crate) const MAX_LENIENT_DEPTH: usize = 64;
/// Largest message accepted in object-literal syntax; strict JSON may be larger.
pub(crate) const MAX_LENIENT_BYTES: usize = 1 << 20;
/// Messages larger than this are parsed on a blocking thread, not an I/O worker.
const PARSE_INLINE_BYTES: usize = 64 << 10;

/// Parses a client's JSON, also accepting JavaScript object literals
/// (unquoted keys, single quotes), as the seed protocols' examples are written.
pub(crate) fn parse_lenient(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).or_else(|json_error| {
        if text.len() > MAX_LENIENT_BYTES {
            return Err(format!(
                "the message is not valid JSON: {json_error} (object-literal syntax is accepted up to {} KiB only)",
                MAX_LENIENT_BYTES >> 10
            ));
        }
        if nesting_depth(text) > MAX_LENIENT_DEPTH {
            return Err(format!("the message is nested more than {MAX_LENIENT_DEPTH} levels deep"));
        }
        json5::from_str::<Value>(text).map_err(|_| format!("the message is not valid JSON: {json_error}"))
    })
}

/// Strict JSON into a typed message, on a blocking thread when it is large.
/// Typed messages keep what they do not interpret as `RawValue` text: a
/// tree of a client's 8 MiB of `[1,1,...]` would cost 20 times that. The
/// error reads after the message's name: "is not valid JSON: ..." or
/// "does not have the expected fields: ...".
pub(crate) async fn parse_typed_off_thread<T: DeserializeOwned + Send + 'static>(text: String) -> Result<T, String> {
    off_thread(text, |text| {
        serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => format!("does not have the expected fields: {e}"),
            _ => format!("is not valid JSON: {e}"),
        })
    })
    .await
}

async fn off_thread<T: Send + 'static>(text: String, parse: fn(&str) -> Result<T, String>) -> Result<T, String> {
    if text.len() <= PARSE_INLINE_BYTES {
        return parse(&text);
    }
    tokio::task::spawn_blocking(move || parse(&text))
        .await
        .unwrap_or_else(|_| Err("the message could not be parsed".into()))
}

/// A JSON object whose fields are kept as text, to be read one by one.
pub(crate) type Fields = std::collections::BTreeMap<String, Box<RawValue>>;

/// A client's JSON object as `Fields`: strict JSON, else an object literal
/// (`parse_lenient`, within its bounds).
pub(crate) fn parse_fields(text: &str) -> Result<Fields, String> {
    match serde_json::from_str::<Fields>(text) {
        Ok(fields) => Ok(fields),
        Err(strict) => match parse_lenient(text)? {
            Value::Object(map) => map
                .into_iter()
                .map(|(key, value)| Ok((key, RawValue::from_string(value.to_string()).map_err(|e| e.to_string())?)))
                .collect(),
            _ if strict.classify() == serde_json::error::Category::Data => {
                Err("the message must be a JSON object".to_string())
            }
            _ => Err(format!("the message is not valid JSON: {strict}")),
        },
    }
}

/// `parse_fields`, on a blocking thread when the message is large.
pub(crate) async fn parse_fields_off_thread(text: String) -> Result<Fields, String> {
    off_thread(text, parse_fields).await
}

/// Reads one field as `T`; `what` names it in the error.
pub(crate) fn field<T: DeserializeOwned>(fields: &Fields, key: &str, what: &str) -> Result<Option<T>, String> {
    match fields.get(key) {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|e| format!("{what}: {e}")),
    }
}

/// An id a client gives as a number or a string (seed clients do both);
/// anything else is refused without being read further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IdText(pub(crate) String);

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Id;
        impl Visitor<'_> for Id {
            type Value = IdText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id: a number or a string")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IdText, E> {
                match v.trim() {
                    "" => Err(E::custom("an id may not be empty")),
                    id if id.len() > 256 => Err(E::custom("an id is 256 bytes at most")),
                    id => Ok(IdText(id.to_string())),
                }
            }
        }
        deserializer.deserialize_any(Id)
    }
}

/// The deepest nesting of `[` and `{` in JSON5 text, outside strings and
/// comments. One pass, no recursion; an unterminated string or comment just
/// ends the scan. It may over-count on text json5 would refuse anyway, never
/// under-count on text it accepts.
pub(crate) fn nesting_depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_parsing_takes_object_literals() {
        let v = parse_lenient("{action: 'get_placeholder', placeholder: {sessionId: 123123123123, name: \"message\"}}")
            .unwrap();
        assert_eq!(v["placeholder"]["sessionId"], json!(123123123123u64));
        assert!(parse_lenient("{action: ").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing() {
        // Deep enough to overflow any thread's stack in a recursive parser.
        let deep = "[".repeat(2 << 20);
        assert!(parse_lenient(&deep).unwrap_err().contains("object-literal syntax"));
        let deep = "[".repeat(100_000);
        assert!(parse_lenient(&deep).unwrap_err().contains("nested more than"));
        let deep = format!("{{a: {}1{}}}", "[".repeat(65), "]".repeat(65));
        assert!(parse_lenient(&deep).unwrap_err().contains("nested more than"));
        let fine = format!("{{a: {}1{}}}", "[".repeat(60), "]".repeat(60));
        assert!(parse_lenient(&fine).is_ok());
    }

    #[test]
    fn fields_stay_text_and_ids_are_numbers_or_strings() {
        let fields = parse_fields(r#"{"action": "status", "sessionId": 12, "big": [[1, 2], {"a": 3}]}"#).unwrap();
        assert_eq!(fields["big"].get(), r#"[[1, 2], {"a": 3}]"#);
        assert_eq!(field::<IdText>(&fields, "sessionId", "sessionId").unwrap(), Some(IdText("12".into())));
        assert!(field::<IdText>(&fields, "big", "sessionId").unwrap_err().contains("a number or a string"));
        let literal = parse_fields("{action: 'status', sessionId: 'abc'}").unwrap();
        assert_eq!(field::<String>(&literal, "action", "action").unwrap().as_deref(), Some("status"));
        assert!(parse_fields("[1, 2]").unwrap_err().contains("object"));
        assert!(parse_fields("{nope").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        assert_eq!(nesting_depth("{a: '[[[[', b: \"{{\\\"{{\", /* [[[ */ c: [1] // [[[\n}"), 2);
        assert_eq!(nesting_depth("'unterminated [[["), 0);
    }
}
