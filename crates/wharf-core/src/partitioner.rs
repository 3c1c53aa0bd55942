//! Kafka's default partitioner for keyed records, so that a key published over HTTP
//! lands on the same partition as the same key sent by a Java Kafka producer
//! (`Utils.murmur2`, `BuiltInPartitioner.partitionForKey`) or librdkafka's
//! `murmur2_random` partitioner.

/// Kafka's 32-bit MurmurHash2 (seed `0x9747b28c`), as `org.apache.kafka.common.utils.
/// Utils.murmur2` computes it: little-endian 4-byte blocks, then the 1–3 trailing bytes.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's int arithmetic wraps; so does this, on the same bits.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a record with `key` on a topic of
/// `partitions` partitions: `(murmur2(key) & 0x7fffffff) % partitions`.
/// `partitions` must be at least 1 (0 is treated as 1).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for key in [&b""[..], b"a", b"order-17", b"\xff\xfe\xfd"] {
            let p = partition_for_key(key, 6);
            assert!(p < 6);
            assert_eq!(p, partition_for_key(key, 6));
            assert_eq!(partition_for_key(key, 1), 0);
        }
    }
}
