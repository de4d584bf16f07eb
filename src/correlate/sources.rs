//! Supervisor items about a source address rather than an account: frames whose CRC and length
//! are right but whose header cannot be read (answered DUH), and a source that keeps sending
//! frames that fail their CRC or length (never answered). Neither names an account the ARC
//! knows, so the item names the address; the operator API shows the stored frame behind it.
//!
//! Both are rate-limited per source: a panel that retries every few seconds, or a scanner,
//! raises at most one item (or one "repeated" line on the open item) per [`RAISE_EVERY_MS`],
//! not one per frame. Times are the frames' receive times (the injected clock), so replays
//! decide the same way. What is remembered is bounded ([`MAX_SOURCES`]) and lost on a restart,
//! which can cost one extra item, never a missed one for a source that keeps going.

use std::collections::HashMap;

/// At most one supervisor item (or "repeated" line) per source and issue in this time.
pub const RAISE_EVERY_MS: i64 = 10 * 60 * 1000;
/// Frames failing CRC or length from one source within [`INTEGRITY_WINDOW_MS`] that raise an
/// item: more than a line glitch and its retry, fewer than a panel's retries of one event.
pub const INTEGRITY_THRESHOLD: usize = 3;
/// The window the integrity failures are counted in.
pub const INTEGRITY_WINDOW_MS: i64 = 10 * 60 * 1000;
/// Sources remembered; past it the quietest are forgotten.
pub const MAX_SOURCES: usize = 4096;

/// What a source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issue {
    /// CRC and length right, header unreadable (answered DUH).
    Unreadable,
    /// CRC or length wrong (no answer).
    Integrity,
}

#[derive(Debug, Default)]
struct Source {
    /// Receive times of the latest integrity failures, oldest first (at most the threshold).
    failures: Vec<i64>,
    /// When an item was last raised, per issue.
    raised: [Option<i64>; 2],
    /// The newest frame seen from the source.
    last_ms: i64,
}

/// Per-source memory for [`Issue`]s.
#[derive(Debug, Default)]
pub struct SourceWatch {
    sources: HashMap<String, Source>,
}

/// The address of a peer (`ip:port`, `[v6]:port`) without the port: a panel reconnects from a
/// new port, and over UDP may send from several.
pub fn source_of(peer: &str) -> String {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => peer.to_string(),
    }
}

impl SourceWatch {
    /// A frame showing `issue` from `source` at `now_ms`. `Some(n)`: raise (or repeat on) the
    /// source's item now, `n` being the frames counted for it (1 for an unreadable frame, the
    /// failures within the window for integrity).
    pub fn observe(&mut self, source: &str, issue: Issue, now_ms: i64) -> Option<usize> {
        if !self.sources.contains_key(source) && self.sources.len() >= MAX_SOURCES {
            self.forget_quietest();
        }
        let s = self.sources.entry(source.to_string()).or_default();
        s.last_ms = s.last_ms.max(now_ms);
        let count = match issue {
            Issue::Unreadable => 1,
            Issue::Integrity => {
                s.failures.retain(|t| now_ms - *t < INTEGRITY_WINDOW_MS);
                s.failures.push(now_ms);
                if s.failures.len() > INTEGRITY_THRESHOLD {
                    s.failures.remove(0);
                }
                if s.failures.len() < INTEGRITY_THRESHOLD {
                    return None;
                }
                s.failures.len()
            }
        };
        let slot = &mut s.raised[issue as usize];
        if slot.is_some_and(|t| now_ms - t < RAISE_EVERY_MS) {
            return None;
        }
        *slot = Some(now_ms);
        Some(count)
    }

    /// Drop the half of the sources heard from least recently.
    fn forget_quietest(&mut self) {
        let mut times: Vec<i64> = self.sources.values().map(|s| s.last_ms).collect();
        times.sort_unstable();
        let cut = times[times.len() / 2];
        self.sources.retain(|_, s| s.last_ms > cut);
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True if no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn unreadable_frames_raise_once_per_interval_per_source() {
        let mut w = SourceWatch::default();
        assert_eq!(w.observe("10.0.0.1", Issue::Unreadable, 0), Some(1));
        assert_eq!(w.observe("10.0.0.1", Issue::Unreadable, 30_000), None);
        assert_eq!(
            w.observe("10.0.0.2", Issue::Unreadable, 30_000),
            Some(1),
            "another source"
        );
        assert_eq!(w.observe("10.0.0.1", Issue::Unreadable, 10 * MIN - 1), None);
        assert_eq!(w.observe("10.0.0.1", Issue::Unreadable, 10 * MIN), Some(1));
    }

    #[test]
    fn integrity_failures_raise_at_the_threshold_within_the_window() {
        let mut w = SourceWatch::default();
        // Two failures, then a third after the window: no item.
        assert_eq!(w.observe("p", Issue::Integrity, 0), None);
        assert_eq!(w.observe("p", Issue::Integrity, MIN), None);
        assert_eq!(w.observe("p", Issue::Integrity, 11 * MIN), None);
        // Two more within the window of the last: the threshold.
        assert_eq!(w.observe("p", Issue::Integrity, 12 * MIN), None);
        assert_eq!(w.observe("p", Issue::Integrity, 13 * MIN), Some(3));
        // The source keeps going: rate-limited, then raised again 10 minutes on.
        assert_eq!(w.observe("p", Issue::Integrity, 14 * MIN), None);
        assert_eq!(w.observe("p", Issue::Integrity, 22 * MIN), None);
        assert_eq!(w.observe("p", Issue::Integrity, 23 * MIN), Some(3));
        // The issues are limited apart.
        assert_eq!(w.observe("p", Issue::Unreadable, 23 * MIN), Some(1));
    }

    #[test]
    fn memory_is_bounded() {
        let mut w = SourceWatch::default();
        for i in 0..(3 * MAX_SOURCES) {
            w.observe(&format!("s{i}"), Issue::Unreadable, i as i64);
        }
        assert!(w.len() <= MAX_SOURCES);
        assert!(!w.is_empty());
    }

    #[test]
    fn the_port_is_not_part_of_the_source() {
        assert_eq!(source_of("192.0.2.7:40123"), "192.0.2.7");
        assert_eq!(source_of("[2001:db8::1]:7000"), "2001:db8::1");
        assert_eq!(source_of("not an address"), "not an address");
    }
}
