//! The one piece of the "consumer" embedded protocol the coordinator must read: the topics
//! a member subscribes to, so that OffsetDelete can refuse `GROUP_SUBSCRIBED_TO_TOPIC`.
//!
//! A `ConsumerProtocolSubscription` (all versions 0..=3 share this prefix, big-endian, not
//! flexible):
//!
//! ```text
//! +---------+-----------+----------------+---------------+-----+----------------------+
//! | version | topics: n | len_1 | name_1 | len_2 | name_2 | ... | user data, owned     |
//! |   i16   |    i32    |  i16  | bytes  |  i16  | bytes  |     | partitions, ... (not |
//! |         |           |       | (UTF-8)|       |        |     | read here)           |
//! +---------+-----------+----------------+---------------+-----+----------------------+
//! ```
//!
//! Everything after the topics is ignored. Input is a client's bytes: every length is
//! checked against what remains before anything is allocated.

/// Protocol type of Kafka consumers.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The subscribed topics in a consumer protocol subscription, or `None` if the bytes are
/// not one.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut rest = metadata;
    let version = i16::from_be_bytes(take::<2>(&mut rest)?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take::<4>(&mut rest)?);
    if count < 0 {
        return None;
    }
    let count = usize::try_from(count).ok()?;
    // Each topic needs at least its 2-byte length: bound the count before reserving.
    if count > rest.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i16::from_be_bytes(take::<2>(&mut rest)?);
        let len = usize::try_from(len).ok()?;
        if len > rest.len() {
            return None;
        }
        let (name, tail) = rest.split_at(len);
        topics.push(String::from_utf8(name.to_vec()).ok()?);
        rest = tail;
    }
    Some(topics)
}

fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(version: i16, topics: &[&str]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for t in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
        }
        b.extend((-1i32).to_be_bytes()); // null user data
        b
    }

    #[test]
    fn decodes_the_topics_of_every_version() {
        for v in 0..=3 {
            assert_eq!(
                subscribed_topics(&subscription(v, &["a", "bb"])),
                Some(vec!["a".to_string(), "bb".to_string()])
            );
        }
    }

    #[test]
    fn refuses_truncated_or_absurd_input() {
        let full = subscription(1, &["topic"]);
        for cut in 0..full.len() - 4 {
            assert_eq!(subscribed_topics(&full[..cut]), None, "cut at {cut}");
        }
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        assert_eq!(subscribed_topics(&huge), None);
        assert_eq!(subscribed_topics(&subscription(-1, &[])), None);
    }
}
