//! Edits addressed by JSON Pointer (RFC 6901), as `state update` applies them.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// One edit of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Put `value` at `pointer`, creating missing parent objects.
    Set { pointer: String, value: Value },
    /// Add `by` to the integer at `pointer` (a missing member counts as 0).
    Increment { pointer: String, by: i64 },
}

impl Edit {
    pub fn apply(&self, doc: &mut Value) -> Result<()> {
        match self {
            Edit::Set { pointer, value } => {
                *slot(doc, pointer)? = value.clone();
                Ok(())
            }
            Edit::Increment { pointer, by } => {
                let target = slot(doc, pointer)?;
                // JSON integers here are whatever fits 64 bits, signed or
                // not: i128 holds every such value and every sum with `by`.
                let current: i128 = match target {
                    Value::Null => 0,
                    Value::Number(n) => match n.as_i64().map(i128::from) {
                        Some(i) => i,
                        None => n.as_u64().map(i128::from).ok_or_else(|| {
                            Error::InvalidInput(format!(
                                "cannot increment {pointer}: it holds {n}, not an integer \
                                 (or one beyond 64 bits)"
                            ))
                        })?,
                    },
                    other => {
                        return Err(Error::InvalidInput(format!(
                            "cannot increment {pointer}: it holds {}, not an integer",
                            kind_of(other)
                        )));
                    }
                };
                let next = current + i128::from(*by);
                *target = match (i64::try_from(next), u64::try_from(next)) {
                    (Ok(signed), _) => signed.into(),
                    (_, Ok(unsigned)) => unsigned.into(),
                    _ => {
                        return Err(Error::InvalidInput(format!(
                            "incrementing {pointer} by {by} overflows (the result {next} \
                             does not fit 64 bits)"
                        )));
                    }
                };
                Ok(())
            }
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Splits a pointer into unescaped reference tokens.
pub fn parse(pointer: &str) -> Result<Vec<String>> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(Error::InvalidInput(format!(
            "JSON pointer {pointer:?} must be empty or start with '/'"
        )));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(Error::InvalidInput(format!(
                            "JSON pointer {pointer:?}: '~' must be followed by 0 or 1"
                        )));
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// Reads the value at `pointer`, if present.
pub fn get<'a>(doc: &'a Value, pointer: &str) -> Result<Option<&'a Value>> {
    let mut current = doc;
    for token in parse(pointer)? {
        let next = match current {
            Value::Object(map) => map.get(&token),
            Value::Array(items) => array_index(&token).and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

fn array_index(token: &str) -> Option<usize> {
    let leading_zero = token.len() > 1 && token.starts_with('0');
    if leading_zero || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// The place `pointer` names, created (as null) if missing. Missing parents
/// become objects; `-` or the length of an array appends to it.
fn slot<'a>(doc: &'a mut Value, pointer: &str) -> Result<&'a mut Value> {
    let mut current = doc;
    let mut walked = String::new();
    for token in parse(pointer)? {
        if current.is_null() {
            *current = Value::Object(Map::new());
        }
        walked.push('/');
        walked.push_str(&token.replace('~', "~0").replace('/', "~1"));
        current = match current {
            Value::Object(map) => map.entry(token).or_insert(Value::Null),
            Value::Array(items) => {
                let len = items.len();
                let index = if token == "-" {
                    len
                } else {
                    array_index(&token).ok_or_else(|| {
                        Error::InvalidInput(format!("{walked}: {token:?} is not an array index"))
                    })?
                };
                if index > len {
                    return Err(Error::InvalidInput(format!(
                        "{walked}: index {index} is past the end of an array of {len}"
                    )));
                }
                if index == len {
                    items.push(Value::Null);
                }
                &mut items[index]
            }
            other => {
                return Err(Error::InvalidInput(format!(
                    "{walked}: cannot descend into {}",
                    kind_of(other)
                )));
            }
        };
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_creates_missing_parents_and_appends_to_arrays() {
        let mut doc = json!({});
        Edit::Set {
            pointer: "/a/b".into(),
            value: json!(1),
        }
        .apply(&mut doc)
        .unwrap();
        Edit::Set {
            pointer: "/list".into(),
            value: json!([]),
        }
        .apply(&mut doc)
        .unwrap();
        Edit::Set {
            pointer: "/list/-".into(),
            value: json!("x"),
        }
        .apply(&mut doc)
        .unwrap();
        Edit::Set {
            pointer: "/list/1".into(),
            value: json!("y"),
        }
        .apply(&mut doc)
        .unwrap();
        Edit::Set {
            pointer: "/t~1s~0".into(),
            value: json!(true),
        }
        .apply(&mut doc)
        .unwrap();
        assert_eq!(
            doc,
            json!({"a": {"b": 1}, "list": ["x", "y"], "t/s~": true})
        );
    }

    #[test]
    fn increment_treats_missing_as_zero_and_refuses_non_integers() {
        let mut doc = json!({"s": "text"});
        let incr = |p: &str, by| Edit::Increment {
            pointer: p.into(),
            by,
        };
        incr("/n", 1).apply(&mut doc).unwrap();
        incr("/n", 41).apply(&mut doc).unwrap();
        assert_eq!(doc["n"], json!(42));
        assert!(incr("/s", 1).apply(&mut doc).is_err());
        doc["f"] = json!(1.5);
        let err = incr("/f", 1).apply(&mut doc).unwrap_err().to_string();
        assert!(err.contains("it holds 1.5, not an integer"), "{err}");
    }

    #[test]
    fn increment_covers_every_64_bit_integer_and_refuses_to_leave_them() {
        let incr = |p: &str, by| Edit::Increment {
            pointer: p.into(),
            by,
        };
        let mut doc = json!({"big": i64::MAX, "top": u64::MAX, "low": i64::MIN});
        // Past i64::MAX the value continues as an unsigned integer...
        incr("/big", 1).apply(&mut doc).unwrap();
        assert_eq!(doc["big"], json!(i64::MAX as u64 + 1));
        // ...and comes back down across the boundary.
        incr("/big", -2).apply(&mut doc).unwrap();
        assert_eq!(doc["big"], json!(i64::MAX - 1));
        incr("/top", -1).apply(&mut doc).unwrap();
        assert_eq!(doc["top"], json!(u64::MAX - 1));
        incr("/top", 1).apply(&mut doc).unwrap();
        for (pointer, by) in [("/top", 1), ("/low", -1)] {
            let before = doc.clone();
            let err = incr(pointer, by).apply(&mut doc).unwrap_err().to_string();
            assert!(err.contains("overflows"), "{err}");
            assert_eq!(doc, before, "a refused increment changes nothing");
        }
    }

    #[test]
    fn bad_pointers_are_refused() {
        let mut doc = json!({"a": 1, "l": [1]});
        for p in ["a", "/x~2", "/a/b", "/l/5", "/l/01"] {
            let e = Edit::Set {
                pointer: p.into(),
                value: json!(0),
            };
            assert!(e.apply(&mut doc).is_err(), "{p}");
        }
    }

    #[test]
    fn get_follows_objects_and_arrays() {
        let doc = json!({"a": [{"b": 2}]});
        assert_eq!(get(&doc, "/a/0/b").unwrap(), Some(&json!(2)));
        assert_eq!(get(&doc, "/a/1").unwrap(), None);
        assert_eq!(get(&doc, "").unwrap(), Some(&doc));
    }
}
