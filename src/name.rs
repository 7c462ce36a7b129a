//! Workflow and lock names. A name becomes a file name inside the store, so
//! the rule is strict enough that no name can escape its directory (`/`, `..`
//! at the start, NUL), hide (leading `.`), or overflow a file-name limit.

use crate::error::{Error, Result};

/// Longest accepted name: 1 leading character + 127 more.
pub const MAX_NAME_LEN: usize = 128;

/// Checks `name` against `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
///
/// ```
/// assert!(wfstate::validate_name("release-2.1_build").is_ok());
/// assert!(wfstate::validate_name("../x").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return invalid("it is empty");
    };
    if bytes.len() > MAX_NAME_LEN {
        return invalid("it is longer than 128 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return invalid("it must start with a letter or digit");
    }
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !bytes.iter().all(allowed) {
        return invalid("it may contain only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_within_the_rule() {
        for ok in ["a", "A9", "wf.1_x-y", &"a".repeat(128)] {
            validate_name(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn refuses_traversal_separators_nul_empty_and_overlong_names() {
        let long = "a".repeat(129);
        let thousand = "b".repeat(1000);
        for bad in [
            "", "../x", "..", ".hidden", "a/b", "a\\b", "a\0b", "-x", "_x", "a b", "é", &long,
            &thousand,
        ] {
            let err = validate_name(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
            assert!(
                err.to_string().contains("^[A-Za-z0-9]"),
                "rule named: {err}"
            );
        }
    }
}
