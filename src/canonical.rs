//! Canonical JSON per RFC 8785 (JCS): the byte string that checksums and
//! hash chains are computed over. It is written straight into any
//! `io::Write` (usually a hasher) so a 10 MiB document is never copied to
//! compute its checksum.
//!
//! One deliberate deviation: RFC 8785 treats every number as an IEEE-754
//! double. serde_json keeps integers that fit in i64/u64 exactly, and so do
//! we: such an integer is written with all its digits. For |n| <= 2^53 that is
//! exactly what JCS writes; beyond it JCS would round, which would let two
//! documents that differ in a large integer share a checksum.

use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::io::{self, Write};

/// Writes `value` in canonical form.
pub fn write_value(value: &Value, out: &mut impl Write) -> io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(true) => out.write_all(b"true"),
        Value::Bool(false) => out.write_all(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_value(item, out)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => write_object_except(map, None, out),
    }
}

/// Writes an object in canonical form, leaving out the member named `skip`
/// (the checksum field of a document is computed over everything else).
pub fn write_object_except(
    map: &Map<String, Value>,
    skip: Option<&str>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut entries: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .collect();
    entries.sort_by(|(a, _), (b, _)| utf16_order(a, b));
    out.write_all(b"{")?;
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_string(key, out)?;
        out.write_all(b":")?;
        write_value(item, out)?;
    }
    out.write_all(b"}")
}

/// RFC 8785 orders keys by UTF-16 code units. UTF-8 byte order is code point
/// order, which differs from it only between characters above U+FFFF and
/// those in U+E000..U+FFFF; for ASCII keys (nearly all keys) bytes decide.
fn utf16_order(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// The canonical form of the JSON text `text`, the same bytes as
/// `write_value(&serde_json::from_str(text)?)`, without building the
/// document: each object or array is split into its members' text and each
/// member canonicalized in turn, so memory stays proportional to the widest
/// object or array (its list of members), not to the document. As parsing
/// into a `Value` does, a repeated key keeps its last value. Invalid JSON
/// is an error before anything is written; errors of `out` come back as
/// serde_json I/O errors (`is_io`).
pub fn write_json_text(text: &str, out: &mut impl Write) -> serde_json::Result<()> {
    let whole: &RawValue = serde_json::from_str(text)?;
    write_raw(whole, out)
}

fn write_raw(raw: &RawValue, out: &mut impl Write) -> serde_json::Result<()> {
    let text = raw.get(); // valid JSON, without surrounding whitespace
    let io = serde_json::Error::io;
    match text.as_bytes().first() {
        Some(b'{') => {
            // A map, so a repeated key keeps its last value.
            let members: BTreeMap<String, &RawValue> = serde_json::from_str(text)?;
            let mut members: Vec<(String, &RawValue)> = members.into_iter().collect();
            members.sort_by(|(a, _), (b, _)| utf16_order(a, b));
            out.write_all(b"{").map_err(io)?;
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",").map_err(io)?;
                }
                write_string(&key, out).map_err(io)?;
                out.write_all(b":").map_err(io)?;
                write_raw(item, out)?;
            }
            out.write_all(b"}").map_err(io)
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.write_all(b"[").map_err(io)?;
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",").map_err(io)?;
                }
                write_raw(item, out)?;
            }
            out.write_all(b"]").map_err(io)
        }
        Some(b'"') => {
            let decoded: String = serde_json::from_str(text)?;
            write_string(&decoded, out).map_err(io)
        }
        // true, false and null are their own canonical form.
        Some(b't' | b'f' | b'n') => out.write_all(text.as_bytes()).map_err(io),
        _ => {
            let number: Number = serde_json::from_str(text)?;
            write_number(&number, out).map_err(io)
        }
    }
}

/// Canonical form as a `String` (for small values and tests).
pub fn to_string(value: &Value) -> String {
    let mut buf = Vec::new();
    write_value(value, &mut buf).expect("writing to a Vec cannot fail");
    String::from_utf8(buf).expect("canonical JSON is UTF-8")
}

fn write_string(s: &str, out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"\"")?;
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        // Most bytes need no escape: one comparison chain, no table.
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\x08' => Some(b"\\b"),
            b'\x0c' => Some(b"\\f"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            _ => None,
        };
        out.write_all(&bytes[start..i])?;
        match escape {
            Some(e) => out.write_all(e)?,
            None => write!(out, "\\u{:04x}", b)?,
        }
        start = i + 1;
    }
    out.write_all(&bytes[start..])?;
    out.write_all(b"\"")
}

fn write_number(n: &Number, out: &mut impl Write) -> io::Result<()> {
    if let Some(i) = n.as_i64() {
        return write!(out, "{i}");
    }
    if let Some(u) = n.as_u64() {
        return write!(out, "{u}");
    }
    let f = n.as_f64().expect("a serde_json number is i64, u64 or f64");
    out.write_all(format_double(f).as_bytes())
}

/// ECMAScript `Number.prototype.toString` for a finite double, which is
/// what RFC 8785 prescribes (section 3.2.2.3).
pub fn format_double(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string(); // also for -0
    }
    if f < 0.0 {
        return format!("-{}", format_double(-f));
    }
    let (digits, exp) = shortest_digits(f);
    let k = digits.len() as i32;
    let n = exp + 1;
    if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        format!("{int}.{frac}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign = if e < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        if rest.is_empty() {
            format!("{first}e{sign}{}", e.abs())
        } else {
            format!("{first}.{rest}e{sign}{}", e.abs())
        }
    }
}

/// The shortest decimal digits that round-trip to the positive finite `f`,
/// and the exponent of the first digit (`f` = d.ddd × 10^exp).
///
/// When two shortest candidates are equally close to the exact binary value,
/// ECMAScript (hence RFC 8785) and Python both take the even one. Rust's
/// `{:e}` rounds such ties up (25200386.333007812 comes out as ...813), so
/// the digits come from serde_json's formatter, which breaks ties to even;
/// only its layout is discarded here.
pub fn shortest_digits(f: f64) -> (String, i32) {
    let text = serde_json::to_string(&f).expect("finite floats serialize");
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().expect("exponent is an integer")),
        None => (text.as_str(), 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = format!("{int}{frac}");
    // Position of the decimal point relative to the start of `all`.
    let point = int.len() as i32 + exp;
    let leading_zeros = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    (digits.to_string(), point - leading_zeros as i32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shortest_digits_break_ties_to_even() {
        assert_eq!(
            shortest_digits(25200386.333007812),
            ("25200386333007812".into(), 7)
        );
        assert_eq!(shortest_digits(1e16), ("1".into(), 16));
        assert_eq!(shortest_digits(0.00012), ("12".into(), -4));
        assert_eq!(shortest_digits(123.0), ("123".into(), 2));
        assert_eq!(shortest_digits(5e-324), ("5".into(), -324));
    }

    #[test]
    fn numbers_follow_ecmascript_layout() {
        // Examples from RFC 8785 appendix B and ECMA-262.
        let cases: [(f64, &str); 15] = [
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (4.5, "4.5"),
            (0.002, "0.002"),
            (-1.5e300, "-1.5e+300"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (333333333.3333333, "333333333.3333333"),
            (-0.0, "0"),
            (9007199254740994.0, "9007199254740994"),
            (295147905179352830000.0, "295147905179352830000"),
            (25200386.333007812, "25200386.333007812"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_double(value), expected, "{value:e}");
        }
    }

    #[test]
    fn keys_sort_by_utf16_code_units_not_bytes() {
        // U+1F600 is D83D DE00 in UTF-16, which sorts before U+FB01 (FB01);
        // in UTF-8 bytes it would sort after.
        let v = json!({"\u{fb01}": 1, "\u{1f600}": 2, "b": 3, "a": {"z": 1, "y": [true, null]}});
        assert_eq!(
            to_string(&v),
            "{\"a\":{\"y\":[true,null],\"z\":1},\"b\":3,\"\u{1f600}\":2,\"\u{fb01}\":1}"
        );
    }

    #[test]
    fn strings_escape_only_what_jcs_escapes() {
        let v = json!("q\"b\\s/\u{8}\u{c}\n\r\t\u{1}\u{1f}é\u{2028}");
        assert_eq!(
            to_string(&v),
            "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001fé\u{2028}\""
        );
    }

    #[test]
    fn integers_keep_every_digit() {
        let v: Value =
            serde_json::from_str("[18446744073709551615, -9223372036854775808, 1.0]").unwrap();
        assert_eq!(
            to_string(&v),
            "[18446744073709551615,-9223372036854775808,1]"
        );
    }

    #[test]
    fn skipped_member_is_left_out() {
        let v = json!({"checksum": "x", "b": 1});
        let mut out = Vec::new();
        write_object_except(v.as_object().unwrap(), Some("checksum"), &mut out).unwrap();
        assert_eq!(out, b"{\"b\":1}");
    }
}
