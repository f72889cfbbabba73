//! Which partition a lead belongs to. The daemon applies each partition's
//! events in order, one worker at a time, and partitions in parallel
//! (docs/daemon.md, Partitions). The number of partitions is stored with
//! the database, and the hash is fixed here, byte for byte, so a lead stays
//! in its partition across versions and machines: it must never change.

/// The partition of `lead` among `count` (at least 1): 64-bit FNV-1a of the
/// id's UTF-8 bytes, modulo `count`. FNV-1a is fully specified by its two
/// constants, which is why it is written out rather than taken from a
/// hasher whose output may change between releases.
pub fn partition_of(lead: &str, count: u32) -> u32 {
    (fnv1a(FNV_OFFSET, lead.as_bytes()) % u64::from(count.max(1))) as u32
}

/// FNV-1a's starting value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `bytes`, continuing from `h` (start at [`FNV_OFFSET`]):
/// a hash that stays the same across releases and machines, for what is
/// stored.
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv_1a_and_never_changes() {
        // Published FNV-1a 64 test vectors: "" and "a".
        assert_eq!(
            partition_of("", u32::MAX),
            (0xcbf2_9ce4_8422_2325u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            partition_of("a", u32::MAX),
            (0xaf63_dc4c_8601_ec8cu64 % u64::from(u32::MAX)) as u32
        );
        // Leads stay where they are: values from an independent
        // implementation of FNV-1a (Python), modulo 16.
        let parts: Vec<u32> = ["u1", "u2", "lead-42", "ana@example.com"]
            .iter()
            .map(|id| partition_of(id, 16))
            .collect();
        assert_eq!(parts, [3, 6, 12, 8]);
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
    }
}
