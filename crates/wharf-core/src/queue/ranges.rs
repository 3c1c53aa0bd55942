//! [`RangeSet`]: a set of `u64` kept as disjoint, non-adjacent half-open ranges.

use std::collections::BTreeMap;

/// A set of `u64` stored as disjoint, non-adjacent, non-empty half-open ranges
/// (start → end), so runs of consecutive offsets cost one entry. `u64::MAX` is outside
/// every half-open range, so it can never be a member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: BTreeMap<u64, u64>,
    /// Number of values in the set.
    len: u64,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// Adds `x` (`u64::MAX` is ignored: it cannot be stored).
    pub fn insert(&mut self, x: u64) {
        if let Some(end) = x.checked_add(1) {
            self.insert_range(x, end);
        }
    }

    /// Adds every value of `start..end` (nothing if `start >= end`).
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // A range before `start` that overlaps or touches it absorbs the new one.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        // Every range starting inside `start..=end` overlaps or touches: merge it.
        let inside: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            self.ranges.remove(&s);
            self.len -= e - s;
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.len += end - start;
    }

    /// Removes `x`, splitting its range. Returns whether it was there.
    pub fn remove(&mut self, x: u64) -> bool {
        let Some((&s, &e)) = self.ranges.range(..=x).next_back() else {
            return false;
        };
        if x >= e {
            return false;
        }
        self.ranges.remove(&s);
        if s < x {
            self.ranges.insert(s, x);
        }
        if x + 1 < e {
            self.ranges.insert(x + 1, e);
        }
        self.len -= 1;
        true
    }

    pub fn contains(&self, x: u64) -> bool {
        self.ranges
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &e)| x < e)
    }

    /// The lowest range.
    pub fn first(&self) -> Option<(u64, u64)> {
        self.ranges.first_key_value().map(|(&s, &e)| (s, e))
    }

    /// Removes the lowest range if it starts at `start`, returning its end.
    pub fn pop_first_if_starts_at(&mut self, start: u64) -> Option<u64> {
        let (&s, &e) = self.ranges.first_key_value()?;
        if s != start {
            return None;
        }
        self.ranges.remove(&s);
        self.len -= e - s;
        Some(e)
    }

    /// Removes every value below `x`.
    pub fn remove_below(&mut self, x: u64) {
        let below: Vec<(u64, u64)> = self.ranges.range(..x).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in below {
            self.ranges.remove(&s);
            self.len -= e - s;
            if e > x {
                self.ranges.insert(x, e);
                self.len += e - x;
            }
        }
    }

    /// The ranges, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// The number of ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The number of values.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn ranges(set: &RangeSet) -> Vec<(u64, u64)> {
        set.iter().collect()
    }

    #[test]
    fn inserts_merge_touching_and_overlapping_ranges() {
        let mut s = RangeSet::new();
        s.insert(5);
        s.insert(7);
        assert_eq!(ranges(&s), [(5, 6), (7, 8)]);
        s.insert(6);
        assert_eq!(ranges(&s), [(5, 8)]);
        s.insert_range(10, 12);
        s.insert_range(1, 3);
        assert_eq!(ranges(&s), [(1, 3), (5, 8), (10, 12)]);
        s.insert_range(2, 11);
        assert_eq!(ranges(&s), [(1, 12)]);
        s.insert_range(4, 4);
        assert_eq!((ranges(&s), s.len()), (vec![(1, 12)], 11));
        s.insert(u64::MAX);
        assert!(!s.contains(u64::MAX));
    }

    #[test]
    fn remove_splits_a_range() {
        let mut s = RangeSet::new();
        s.insert_range(0, 10);
        assert!(s.remove(4));
        assert!(!s.remove(4));
        assert_eq!(ranges(&s), [(0, 4), (5, 10)]);
        assert!(s.remove(0) && s.remove(9));
        assert_eq!(ranges(&s), [(1, 4), (5, 9)]);
        assert_eq!(s.len(), 7);
        assert!(!s.contains(4) && s.contains(5) && !s.contains(9));
    }

    #[test]
    fn pop_first_and_remove_below() {
        let mut s = RangeSet::new();
        s.insert_range(3, 6);
        s.insert_range(8, 10);
        assert_eq!(s.pop_first_if_starts_at(2), None);
        assert_eq!(s.pop_first_if_starts_at(3), Some(6));
        assert_eq!(s.first(), Some((8, 10)));
        s.insert_range(0, 2);
        s.remove_below(9);
        assert_eq!((ranges(&s), s.len()), (vec![(9, 10)], 1));
        s.clear();
        assert_eq!((s.is_empty(), s.len(), s.first()), (true, 0, None));
    }

    #[derive(Debug, Clone)]
    enum Action {
        Insert(u64),
        InsertRange(u64, u64),
        Remove(u64),
        RemoveBelow(u64),
        PopFirstIfStartsAt(u64),
        Clear,
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            4 => (0..64u64).prop_map(Action::Insert),
            3 => (0..64u64, 0..12u64).prop_map(|(s, n)| Action::InsertRange(s, s + n)),
            3 => (0..64u64).prop_map(Action::Remove),
            1 => (0..64u64).prop_map(Action::RemoveBelow),
            1 => (0..64u64).prop_map(Action::PopFirstIfStartsAt),
            1 => Just(Action::Clear),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(actions in prop::collection::vec(action(), 0..80)) {
            let mut set = RangeSet::new();
            let mut model = BTreeSet::new();
            for a in actions {
                match a {
                    Action::Insert(x) => {
                        set.insert(x);
                        model.insert(x);
                    }
                    Action::InsertRange(s, e) => {
                        set.insert_range(s, e);
                        model.extend(s..e);
                    }
                    Action::Remove(x) => prop_assert_eq!(set.remove(x), model.remove(&x)),
                    Action::RemoveBelow(x) => {
                        set.remove_below(x);
                        model.retain(|&v| v >= x);
                    }
                    Action::PopFirstIfStartsAt(x) => {
                        let popped = set.pop_first_if_starts_at(x);
                        if model.first() == Some(&x) {
                            let mut end = x;
                            while model.remove(&end) {
                                end += 1;
                            }
                            prop_assert_eq!(popped, Some(end));
                        } else {
                            prop_assert_eq!(popped, None);
                        }
                    }
                    Action::Clear => {
                        set.clear();
                        model.clear();
                    }
                }
                // Disjoint, non-adjacent, non-empty, and counted right.
                let rs = ranges(&set);
                for w in rs.windows(2) {
                    prop_assert!(w[0].1 < w[1].0, "{:?}", rs);
                }
                prop_assert!(rs.iter().all(|(s, e)| s < e));
                prop_assert_eq!(set.len(), model.len() as u64);
                prop_assert_eq!(set.is_empty(), model.is_empty());
                let first = model.first().copied();
                prop_assert_eq!(set.first().map(|r| r.0), first);
                for x in 0..80 {
                    prop_assert_eq!(set.contains(x), model.contains(&x), "{}", x);
                }
            }
        }
    }
}
