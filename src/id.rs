//! Time-ordered unique ids (UUID version 7, RFC 9562).
//!
//! 48 bits of Unix milliseconds, then random bits. The textual form sorts
//! like the bytes, so ids sort by creation time. Within one workflow the
//! checkpoint code also forces each new id above the previous one (see
//! [`next_after`]), which keeps the index sorted even when the clock steps
//! back or two ids fall in one millisecond.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of the textual form, `xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx`.
pub const ID_LEN: usize = 36;

/// A new UUIDv7 for the current time.
pub fn new_v7() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes[6..]);
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    set_version_and_variant(&mut bytes);
    format_uuid(&bytes)
}

/// A new id greater than `previous` (the newest id so far): a fresh UUIDv7
/// if the clock gives a greater one, else `previous` plus one in its random
/// bits (the monotonic method of RFC 9562 §6.2).
pub fn next_after(previous: Option<&str>) -> String {
    let fresh = new_v7();
    let Some(prev) = previous.and_then(parse_uuid) else {
        return fresh;
    };
    if fresh.as_str() > format_uuid(&prev).as_str() {
        return fresh;
    }
    let mut bytes = prev;
    // Increment the 62 random bits of the last 8 bytes (the variant bits
    // stay as they are: with 62 bits this does not overflow in practice).
    let mut tail = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    tail = (tail & 0x3FFF_FFFF_FFFF_FFFF).wrapping_add(1) & 0x3FFF_FFFF_FFFF_FFFF;
    bytes[8..].copy_from_slice(&(tail | 0x8000_0000_0000_0000).to_be_bytes());
    format_uuid(&bytes)
}

/// Whether `s` is a canonical lowercase UUID string.
pub fn is_valid(s: &str) -> bool {
    parse_uuid(s).is_some_and(|b| format_uuid(&b) == s)
}

/// Unix milliseconds encoded in a UUIDv7.
pub fn timestamp_millis(id: &str) -> Option<u64> {
    let b = parse_uuid(id)?;
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    Some(u64::from_be_bytes(ms))
}

fn set_version_and_variant(bytes: &mut [u8; 16]) {
    bytes[6] = (bytes[6] & 0x0F) | 0x70;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
}

fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            // getrandom(2) only fails before the kernel's pool is seeded at
            // boot; ids must still be unique, so mix time and pid instead.
            Err(_) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
                for (i, b) in buf[filled..].iter_mut().enumerate() {
                    *b = (mix >> ((i % 8) * 8)) as u8 ^ i as u8;
                }
                return;
            }
        }
    }
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex = crate::integrity::hex(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    if s.len() != ID_LEN {
        return None;
    }
    let hex: String = s
        .char_indices()
        .filter_map(|(i, c)| match (i, c) {
            (8 | 13 | 18 | 23, '-') => None,
            (8 | 13 | 18 | 23, _) => Some('!'),
            _ => Some(c),
        })
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_v7_and_sort_by_creation() {
        let mut previous: Option<String> = None;
        for _ in 0..10_000 {
            let id = next_after(previous.as_deref());
            assert!(is_valid(&id), "{id}");
            assert_eq!(&id[14..15], "7", "version nibble: {id}");
            assert!(
                matches!(&id[19..20], "8" | "9" | "a" | "b"),
                "variant: {id}"
            );
            if let Some(p) = &previous {
                assert!(id > *p, "{id} after {p}");
            }
            previous = Some(id);
        }
    }

    #[test]
    fn next_after_a_future_id_still_increases() {
        let future = "ffffffff-ffff-7fff-bfff-fffffffffff0";
        let next = next_after(Some(future));
        assert!(next.as_str() > future && is_valid(&next), "{next}");
    }

    #[test]
    fn timestamps_round_trip_and_bad_ids_are_rejected() {
        let id = new_v7();
        let ms = timestamp_millis(&id).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now - ms < 10_000);
        for bad in [
            "",
            "x",
            "0190b1c2-3d4e-7f00-8000-00000000000G",
            &id.to_uppercase(),
            "../etc/passwd",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
