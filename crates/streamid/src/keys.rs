//! Advisory-lock keys, derived identically by every release so processes of different
//! versions still exclude each other.
//!
//! Keys are FNV-1a (64-bit) hashes of a fixed project prefix and length-prefixed names, so
//! `("ab", "c")` and `("a", "bc")` differ. Collisions with other applications' advisory locks
//! are possible in principle; they only make waits longer, never unsafe.

/// The writer lock of `(stream, instance)` (spec §4.2 step 2a, §7.1): stream transactions
/// hold it shared; a restarting writer takes it exclusively.
pub(crate) fn writer_lock(stream: &str, instance: &str) -> i64 {
    hash(&[
        b"streamid/writer-lock/v1",
        stream.as_bytes(),
        instance.as_bytes(),
    ])
}

/// The lease of `(stream, instance)` (spec §12.6.1): a live writer holds it, session-level,
/// on a dedicated connection for as long as it runs.
pub(crate) fn lease(stream: &str, instance: &str) -> i64 {
    hash(&[b"streamid/lease/v1", stream.as_bytes(), instance.as_bytes()])
}

/// The `application_name` prefix of a writer's connections: short enough for PostgreSQL's
/// 63 bytes whatever the names, and matched with `LIKE '<prefix>:%'` by the proof of
/// spec §12.6.3. The full tag appends `:<epoch>`.
pub(crate) fn app_prefix(writer_lock: i64) -> String {
    format!("streamid:{:016x}", writer_lock as u64)
}

/// Serialises the creation of `stream_positions` (spec §4.2 step 1).
pub(crate) fn ddl_lock() -> i64 {
    hash(&[b"streamid/ddl/v1"])
}

/// The first half of the two-key lock serialising startups of one sequence (spec §4.2
/// step 3); the second half is the sequence's OID. Two-key locks live in a different key
/// space from one-key (`bigint`) locks, so this cannot collide with the keys above.
pub(crate) const SEQUENCE_LOCK_CLASS: i32 = 0x5354_4944; // "STID"

/// The two 32-bit halves PostgreSQL shows in `pg_locks.classid`/`objid` for a `bigint` key.
pub(crate) fn halves(key: i64) -> (i64, i64) {
    let bits = key as u64;
    ((bits >> 32) as i64, (bits & 0xFFFF_FFFF) as i64)
}

fn hash(parts: &[&[u8]]) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for part in parts {
        feed(&(part.len() as u64).to_le_bytes());
        feed(part);
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_unambiguous() {
        // Pinned: changing the derivation would let old and new releases run concurrently
        // without excluding each other.
        assert_eq!(
            writer_lock("events", "writer-1"),
            writer_lock("events", "writer-1")
        );
        assert_ne!(writer_lock("ab", "c"), writer_lock("a", "bc"));
        assert_ne!(writer_lock("s", "w"), ddl_lock());
        assert_eq!(writer_lock("events", "writer-1"), 2_625_894_678_374_620_981);
    }

    #[test]
    fn halves_match_pg_locks() {
        assert_eq!(halves(-1), (0xFFFF_FFFF, 0xFFFF_FFFF));
        assert_eq!(halves(0x1_0000_0002), (1, 2));
    }
}
