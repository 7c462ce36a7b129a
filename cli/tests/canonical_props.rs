//! Properties of canonical JSON (RFC 8785) and of sealed documents, and
//! interoperability of our canonical form with a JavaScript implementation.

mod common;

use common::{Rng, random_value};
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::path::Path;
use wfstate::canonical;
use wfstate::{SavedVersion, StateDoc};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_form_is_valid_json_and_a_fixed_point(v in json_value()) {
        let once = canonical::to_string(&v);
        let reparsed: Value = serde_json::from_str(&once).expect("canonical output parses");
        prop_assert_eq!(canonical::to_string(&reparsed), once);
    }

    #[test]
    fn canonicalizing_text_gives_the_bytes_of_canonicalizing_its_tree(v in json_value(), pretty: bool) {
        let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
        let mut streamed = Vec::new();
        canonical::write_json_text(&text, &mut streamed).unwrap();
        prop_assert_eq!(String::from_utf8(streamed).unwrap(), canonical::to_string(&v));
    }

    /// Damaged text: accepted exactly when parsing it into a tree is, and
    /// then with the same bytes.
    #[test]
    fn text_is_accepted_exactly_when_its_tree_is(
        v in json_value(),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(vec![b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'e', b'-', b' ', b'u']),
    ) {
        let mut text = serde_json::to_string(&v).unwrap().into_bytes();
        let i = at.index(text.len());
        text[i] = byte;
        let Ok(text) = String::from_utf8(text) else { return Ok(()) };
        if let Err(why) = text_agrees_with_tree(&text) {
            prop_assert!(false, "{}", why);
        }
    }

    /// Reading only a state's version (the save path of large documents)
    /// accepts exactly what the full decode accepts, with the same version,
    /// and a document sealed from text reads back as one sealed from its tree.
    #[test]
    fn reading_the_version_alone_agrees_with_the_full_decode(
        data in json_value(),
        generation in 1u64..u64::MAX,
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        from_text: bool,
    ) {
        let at = "2026-01-01T00:00:00Z".to_string();
        let mut bytes = Vec::new();
        if from_text {
            let text = serde_json::to_string_pretty(&data).unwrap();
            StateDoc::seal_text("wf", generation, at.clone(), &text).unwrap().write_to(&mut bytes).unwrap();
        } else {
            StateDoc::seal("wf", generation, at.clone(), None, data.clone()).write_to(&mut bytes).unwrap();
        }
        let path = Path::new("wf.json");
        let full = StateDoc::decode(&bytes, path, "wf").unwrap();
        prop_assert_eq!(&full, &StateDoc::seal("wf", generation, at, None, data));
        prop_assert_eq!(StateDoc::decode_version(&bytes, path, "wf").unwrap(), SavedVersion::of(&full));
        let i = flip.index(bytes.len());
        bytes[i] ^= 1 << bit;
        match (StateDoc::decode(&bytes, path, "wf"), StateDoc::decode_version(&bytes, path, "wf")) {
            (Ok(full), Ok(version)) => prop_assert_eq!(version, SavedVersion::of(&full)),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (full, version) => prop_assert!(false, "decode {:?} but version {:?}", full, version),
        }
    }

    #[test]
    fn canonical_numbers_round_trip_exactly(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let text = canonical::format_double(f);
        let back: f64 = text.parse().expect("a number");
        prop_assert!(back == f, "{} -> {} -> {}", f, text, back);
    }

    #[test]
    fn sealed_states_round_trip_and_any_flipped_byte_is_caught(
        data in json_value(),
        generation in 1u64..u64::MAX,
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let doc = StateDoc::seal("wf", generation, "2026-01-01T00:00:00Z".into(), None, data);
        let mut bytes = Vec::new();
        doc.write_to(&mut bytes).unwrap();
        prop_assert_eq!(&StateDoc::decode(&bytes, Path::new("wf.json"), "wf").unwrap(), &doc);
        let at = flip.index(bytes.len());
        bytes[at] ^= 1 << bit;
        // Either refused, or the flip hit insignificant whitespace and the
        // content is identical: never different content accepted.
        if let Ok(back) = StateDoc::decode(&bytes, Path::new("wf.json"), "wf") {
            prop_assert_eq!(canonical::to_string(&back.data), canonical::to_string(&doc.data));
            prop_assert_eq!(back.generation, doc.generation);
        }
    }
}

#[test]
fn canonicalizing_text_agrees_with_the_tree_on_the_awkward_cases() {
    let cases = [
        r#"{"b": 1, "a": 2, "b": 3}"#,
        r#"{"\u00e9": "\u00e9", "e\u0301": "\ud83d\ude00", "\u0000": "\b\f\n\r\t\/"}"#,
        r#"[1.0, 1e2, -0, -0.0, 1E-7, 123456789012345678901234567890, 18446744073709551615, -9223372036854775808]"#,
        r#"  {"nested": {"deeper": [[], {}, [{"z": null, "y": true, "x": false}]]}}  "#,
        r#""\ud800""#,
        r#"1e400"#,
        r#"{"a": 1,}"#,
        r#"[1, 2"#,
        r#"{"a": 1} trailing"#,
        "",
    ];
    for text in cases {
        text_agrees_with_tree(text).unwrap();
    }
}

/// Canonicalizing `text` directly accepts it exactly when parsing it into
/// a tree does, and then gives the bytes of canonicalizing the tree.
fn text_agrees_with_tree(text: &str) -> Result<(), String> {
    let mut streamed = Vec::new();
    match (
        serde_json::from_str::<Value>(text),
        canonical::write_json_text(text, &mut streamed),
    ) {
        (Ok(tree), Ok(())) => {
            let streamed = String::from_utf8(streamed).unwrap();
            let expected = canonical::to_string(&tree);
            if streamed == expected {
                Ok(())
            } else {
                Err(format!("{text:?}: text gives {streamed}, tree {expected}"))
            }
        }
        (Err(_), Err(_)) => Ok(()),
        (tree, streamed) => Err(format!("{text:?}: tree {tree:?}, text {streamed:?}")),
    }
}

/// The JavaScript reference: JSON.stringify for primitives (which is what
/// RFC 8785 prescribes) and keys sorted by UTF-16 code units (JS's default
/// sort order).
const JS_CANONICALIZE: &str = r#"
const fs = require('fs');
function canon(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(canon).join(',') + ']';
  return '{' + Object.keys(v).sort().map(k => JSON.stringify(k) + ':' + canon(v[k])).join(',') + '}';
}
for (const line of fs.readFileSync(process.argv[1], 'utf8').split('\n')) {
  if (line) process.stdout.write(canon(JSON.parse(line)) + '\n');
}
"#;

#[test]
fn canonical_form_matches_a_javascript_rfc8785_implementation() {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: node is not installed, so the JavaScript comparison did not run");
        return;
    }
    let mut rng = Rng::from_env_or_clock("WFSTATE_TEST_SEED");
    // JavaScript numbers are doubles: integers only up to 2^53 are exact.
    let values: Vec<Value> = (0..3000)
        .map(|_| random_value(&mut rng, 0, 1 << 53))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("values.jsonl");
    let lines: Vec<String> = values.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new("node")
        .args(["-e", JS_CANONICALIZE])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js = String::from_utf8(out.stdout).unwrap();
    let mut compared = 0;
    for (value, expected) in values.iter().zip(js.lines()) {
        assert_eq!(canonical::to_string(value), expected, "value {value}");
        compared += 1;
    }
    assert_eq!(compared, values.len());
    eprintln!(
        "{compared} generated values canonicalized exactly as the JavaScript RFC 8785 reference"
    );
}
