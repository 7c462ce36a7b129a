//! Differences between two checkpoints: the state as an RFC 6902 JSON Patch
//! (applying it to the first state yields the second) and the metadata
//! fields that changed.

use super::Checkpoint;
use crate::error::{Error, Result};
use crate::pointer;
use serde::Serialize;
use serde_json::Value;

/// One RFC 6902 operation (only `add`, `remove` and `replace` are produced).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp {
    pub op: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A JSON Patch turning `from` into `to`.
pub fn diff_values(from: &Value, to: &Value) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    diff_at(String::new(), from, to, &mut ops);
    ops
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn diff_at(path: String, from: &Value, to: &Value, ops: &mut Vec<PatchOp>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, av) in a {
                let child = format!("{path}/{}", escape(key));
                match b.get(key) {
                    Some(bv) => diff_at(child, av, bv, ops),
                    None => ops.push(PatchOp {
                        op: "remove",
                        path: child,
                        value: None,
                    }),
                }
            }
            for (key, bv) in b {
                if !a.contains_key(key) {
                    ops.push(PatchOp {
                        op: "add",
                        path: format!("{path}/{}", escape(key)),
                        value: Some(bv.clone()),
                    });
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            let common = a.len().min(b.len());
            for i in 0..common {
                diff_at(format!("{path}/{i}"), &a[i], &b[i], ops);
            }
            for (i, bv) in b.iter().enumerate().skip(common) {
                ops.push(PatchOp {
                    op: "add",
                    path: format!("{path}/{i}"),
                    value: Some(bv.clone()),
                });
            }
            // Remove from the end so earlier indices stay valid.
            for i in (common..a.len()).rev() {
                ops.push(PatchOp {
                    op: "remove",
                    path: format!("{path}/{i}"),
                    value: None,
                });
            }
        }
        _ if from == to => {}
        _ => ops.push(PatchOp {
            op: "replace",
            path,
            value: Some(to.clone()),
        }),
    }
}

/// Applies `ops` to `doc` (the operations `diff_values` produces).
pub fn apply(mut doc: Value, ops: &[PatchOp]) -> Result<Value> {
    for op in ops {
        let tokens = pointer::parse(&op.path)?;
        let Some((last, parents)) = tokens.split_last() else {
            doc = op.value.clone().unwrap_or(Value::Null);
            continue;
        };
        let mut target = &mut doc;
        for t in parents {
            target = match target {
                Value::Object(m) => m.get_mut(t),
                Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| Error::InvalidInput(format!("patch path {} does not exist", op.path)))?;
        }
        let missing = || Error::InvalidInput(format!("patch path {} does not exist", op.path));
        match (target, op.op) {
            (Value::Object(m), "add" | "replace") => {
                m.insert(last.clone(), op.value.clone().unwrap_or(Value::Null));
            }
            (Value::Object(m), "remove") => {
                m.remove(last).ok_or_else(missing)?;
            }
            (Value::Array(a), kind) => {
                let i: usize = last.parse().map_err(|_| missing())?;
                let value = op.value.clone().unwrap_or(Value::Null);
                match kind {
                    "add" if i <= a.len() => a.insert(i, value),
                    "replace" if i < a.len() => a[i] = value,
                    "remove" if i < a.len() => {
                        a.remove(i);
                    }
                    _ => return Err(missing()),
                }
            }
            _ => return Err(missing()),
        }
    }
    Ok(doc)
}

/// A metadata field that differs between two checkpoints.
#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub from: Value,
    pub to: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointDiff {
    pub from: String,
    pub to: String,
    pub metadata: Vec<FieldChange>,
    pub state_patch: Vec<PatchOp>,
}

/// Compares checkpoint `a` with checkpoint `b`.
pub fn diff_checkpoints(a: &Checkpoint, b: &Checkpoint) -> CheckpointDiff {
    let fields = |c: &Checkpoint| -> Vec<(&'static str, Value)> {
        vec![
            ("workflow", c.workflow.clone().into()),
            (
                "parent",
                serde_json::to_value(&c.parent).expect("serializes"),
            ),
            ("created_at", c.created_at.clone().into()),
            ("phase", serde_json::to_value(&c.phase).expect("serializes")),
            ("item", serde_json::to_value(&c.item).expect("serializes")),
            (
                "message",
                serde_json::to_value(&c.message).expect("serializes"),
            ),
            (
                "context_summary",
                serde_json::to_value(&c.context_summary).expect("serializes"),
            ),
            (
                "key_decisions",
                serde_json::to_value(&c.key_decisions).expect("serializes"),
            ),
            ("files", serde_json::to_value(&c.files).expect("serializes")),
            (
                "state_generation",
                serde_json::to_value(c.state.as_ref().map(|s| s.generation)).expect("serializes"),
            ),
        ]
    };
    let metadata = fields(a)
        .into_iter()
        .zip(fields(b))
        .filter(|((_, x), (_, y))| x != y)
        .map(|((field, from), (_, to))| FieldChange { field, from, to })
        .collect();
    let null = Value::Null;
    let state = |c: &'_ Checkpoint| {
        c.state
            .as_ref()
            .map(|s| s.data.clone())
            .unwrap_or(null.clone())
    };
    CheckpointDiff {
        from: a.id.clone(),
        to: b.id.clone(),
        metadata,
        state_patch: diff_values(&state(a), &state(b)),
    }
}

impl CheckpointDiff {
    /// A readable summary: changed metadata, then one line per state change.
    pub fn describe(&self) -> String {
        let mut out = format!("diff {} -> {}\n", self.from, self.to);
        if self.metadata.is_empty() {
            out.push_str("metadata: unchanged\n");
        }
        for change in &self.metadata {
            out.push_str(&format!(
                "{}: {} -> {}\n",
                change.field, change.from, change.to
            ));
        }
        if self.state_patch.is_empty() {
            out.push_str("state: unchanged\n");
        } else {
            out.push_str(&format!("state: {} change(s)\n", self.state_patch.len()));
        }
        for op in &self.state_patch {
            let path = if op.path.is_empty() {
                "(whole state)"
            } else {
                &op.path
            };
            match &op.value {
                Some(v) => out.push_str(&format!("  {} {path} = {v}\n", op.op)),
                None => out.push_str(&format!("  {} {path}\n", op.op)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applying_the_patch_to_the_first_value_gives_the_second() {
        let cases = [
            (
                json!({"a": 1, "b": [1, 2, 3], "c": {"x": "y"}}),
                json!({"a": 2, "b": [1], "d": null, "c": {}}),
            ),
            (
                json!([1, {"k": [true]}]),
                json!([1, {"k": [false, 1]}, "new"]),
            ),
            (json!({"a/b": {"~t": 1}}), json!({"a/b": {"~t": 2}})),
            (json!(1), json!({"whole": "replaced"})),
            (json!({"same": [1, 2]}), json!({"same": [1, 2]})),
        ];
        for (from, to) in cases {
            let patch = diff_values(&from, &to);
            assert_eq!(
                apply(from.clone(), &patch).unwrap(),
                to,
                "{from} -> {to}: {patch:?}"
            );
        }
        assert!(diff_values(&json!({"same": 1}), &json!({"same": 1})).is_empty());
    }
}
