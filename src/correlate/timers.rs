//! The timer structure of supervision and schedules: one due time per key, ordered by due
//! time, so the next thing to do is the first entry and everything due by `now` comes off the
//! front. Setting a key again moves it; a key is in the order at most once.
//!
//! [`super::supervision::Deadlines`] keys it by account (reporting deadlines) and
//! [`super::schedule::timer::ScheduleTimers`] by site and service period (the next edge of a
//! site's schedule, the end of a test or out-of-service period). Both are driven by the same
//! supervision task on the injected clock ([`super::supervision::run`]), which wakes at the
//! earliest due time of either.
//!
//! Cost: setting, moving and popping are O(log n) in the number of keys (a `BTreeSet` and a
//! `HashMap`); finding the next due time is O(log n).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Due times (Unix ms) by key.
#[derive(Debug, Clone)]
pub struct Timers<K> {
    order: BTreeSet<(i64, K)>,
    due: HashMap<K, i64>,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            order: BTreeSet::new(),
            due: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Copy> Timers<K> {
    /// Make `key` due at `at_ms` (moving it if it was due at another time).
    pub fn set(&mut self, key: K, at_ms: i64) {
        if let Some(old) = self.due.insert(key, at_ms) {
            self.order.remove(&(old, key));
        }
        self.order.insert((at_ms, key));
    }

    /// Forget `key`. Returns when it was due.
    pub fn remove(&mut self, key: K) -> Option<i64> {
        let at = self.due.remove(&key)?;
        self.order.remove(&(at, key));
        Some(at)
    }

    /// When `key` is due.
    pub fn due(&self, key: K) -> Option<i64> {
        self.due.get(&key).copied()
    }

    /// The earliest due time.
    pub fn next(&self) -> Option<i64> {
        self.order.first().map(|(at, _)| *at)
    }

    /// Take the earliest key if it is due by `now_ms`, with its due time.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<(i64, K)> {
        let &(at, key) = self.order.first()?;
        if at > now_ms {
            return None;
        }
        self.order.pop_first();
        self.due.remove(&key);
        Some((at, key))
    }

    /// Take every key due by `now_ms`, earliest first.
    pub fn drain_due(&mut self, now_ms: i64) -> Vec<(i64, K)> {
        let mut out = Vec::new();
        while let Some(x) = self.pop_due(now_ms) {
            out.push(x);
        }
        out
    }

    /// Keys with a due time.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// True if nothing is due ever.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.order.clear();
        self.due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_off_in_due_order_and_setting_again_moves_them() {
        let mut t = Timers::default();
        t.set(1, 300);
        t.set(2, 100);
        t.set(3, 200);
        assert_eq!(t.next(), Some(100));
        t.set(2, 400);
        assert_eq!(t.len(), 3, "a key is in the order once");
        assert_eq!(t.next(), Some(200));
        assert_eq!(t.pop_due(199), None);
        assert_eq!(t.drain_due(300), vec![(200, 3), (300, 1)]);
        assert_eq!(t.remove(2), Some(400));
        assert!(t.is_empty());
        assert_eq!(t.next(), None);
    }
}
