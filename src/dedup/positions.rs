//! Which deliveries of a partition a shard's state holds: positions (Kafka offsets, JetStream
//! stream sequence numbers) kept as sorted, disjoint ranges. A partition's deliveries come in
//! order, so a checkpoint's positions are a few ranges however many events it covers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Positions(Vec<(u64, u64)>);

impl Positions {
    pub fn insert(&mut self, p: u64) {
        match self.0.last_mut() {
            None => self.0.push((p, p)),
            Some(last) if p == last.1.saturating_add(1) => last.1 = p,
            Some(last) if p > last.1 => self.0.push((p, p)),
            Some(_) => self.insert_inside(p),
        }
    }

    /// An out-of-order position (a redelivery after newer ones): placed, and merged with its
    /// neighbours.
    fn insert_inside(&mut self, p: u64) {
        if self.contains(p) {
            return;
        }
        let i = self.0.partition_point(|r| r.1 < p);
        self.0.insert(i, (p, p));
        if i + 1 < self.0.len() && self.0[i + 1].0 == p + 1 {
            self.0[i].1 = self.0[i + 1].1;
            self.0.remove(i + 1);
        }
        if i > 0 && self.0[i - 1].1 + 1 == p {
            self.0[i - 1].1 = self.0[i].1;
            self.0.remove(i);
        }
    }

    pub fn contains(&self, p: u64) -> bool {
        let i = self.0.partition_point(|r| r.1 < p);
        self.0.get(i).is_some_and(|r| r.0 <= p)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ranges held.
    pub fn ranges(&self) -> usize {
        self.0.len()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Both sets as one.
    pub fn union(&self, other: &Positions) -> Positions {
        let mut all: Vec<(u64, u64)> = self.0.iter().chain(&other.0).copied().collect();
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Positions(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_in_order_are_one_range_and_out_of_order_ones_merge() {
        let mut p = Positions::default();
        for i in 10..20 {
            p.insert(i);
        }
        assert_eq!(p.ranges(), 1);
        p.insert(30);
        p.insert(25);
        p.insert(5);
        assert_eq!(p.0, vec![(5, 5), (10, 19), (25, 25), (30, 30)]);
        p.insert(20);
        p.insert(24);
        p.insert(21);
        assert_eq!(p.0, vec![(5, 5), (10, 21), (24, 25), (30, 30)]);
        for (i, want) in [
            (4, false),
            (5, true),
            (9, false),
            (15, true),
            (22, false),
            (24, true),
            (31, false),
        ] {
            assert_eq!(p.contains(i), want, "{i}");
        }
        p.insert(22);
        p.insert(23);
        assert_eq!(p.0, vec![(5, 5), (10, 25), (30, 30)]);
        let other = Positions(vec![(1, 6), (26, 29), (40, 41)]);
        assert_eq!(p.union(&other).0, vec![(1, 6), (10, 30), (40, 41)]);
        assert_eq!(serde_json::to_string(&other).unwrap(), "[[1,6],[26,29],[40,41]]");
    }
}
