//! Logins under attack. A password check is an Argon2id computation (about 19 MiB of memory and
//! tens of milliseconds): 300 parallel logins with made-up names once grew the daemon to
//! 9.7 GB. And a lock on the account after a few wrong passwords let anyone who reached the
//! port keep every operator out. So:
//!
//! - at most [`LoginLimits::hashing`] password checks run at once; at most
//!   [`LoginLimits::waiting`] more wait for one, and a login beyond that is answered "busy" at
//!   once, without hashing and without memory;
//! - failures are counted per peer and name, and per peer across names; past a few, that peer
//!   must wait before its next try (doubling, up to [`LoginLimits::max_delay_ms`]), and is
//!   answered at once, without hashing, while it waits. Nothing locks the operator's account:
//!   an attacker on the TLS port slows down only its own address, so an operator at the local
//!   console (another peer) logs in as always;
//! - a name that keeps failing (from anywhere) raises one supervisor alert
//!   ([`Verdict::alert`]).
//!
//! State is in memory (bounded: the oldest entries go first) and read on the injected clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Password checks at once.
    pub hashing: usize,
    /// Logins waiting for a check; beyond, "busy".
    pub waiting: usize,
    /// Failures of one peer and name before the delays start.
    pub free_failures: u32,
    /// Failures of one peer across names before the delays start.
    pub free_failures_per_peer: u32,
    /// The first delay.
    pub first_delay_ms: i64,
    /// The longest delay.
    pub max_delay_ms: i64,
    /// Failures of one name within an hour, from anywhere, that alert a supervisor.
    pub alert_after: u32,
    /// Entries kept.
    pub max_entries: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            hashing: 2,
            waiting: 16,
            free_failures: 3,
            free_failures_per_peer: 10,
            first_delay_ms: 1_000,
            max_delay_ms: 5 * 60 * 1000,
            alert_after: 10,
            max_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    not_before_ms: i64,
    touched_ms: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct NameEntry {
    failures: u32,
    window_start_ms: i64,
    alerted: bool,
    touched_ms: i64,
}

#[derive(Default)]
struct Tables {
    /// (peer, name) → failures.
    pair: HashMap<(String, String), Entry>,
    /// peer → failures across names.
    peer: HashMap<String, Entry>,
    /// name → failures within the hour, from anywhere.
    name: HashMap<String, NameEntry>,
}

/// Why a login is answered at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This peer must wait this long.
    Wait {
        /// Milliseconds.
        ms: i64,
    },
    /// Too many logins at once.
    Busy,
}

impl Refusal {
    /// For the client.
    pub fn message(&self) -> String {
        match self {
            Refusal::Wait { ms } => format!("too many failed logins from here: try again in {} s", (ms + 999) / 1000),
            Refusal::Busy => "too many logins at once: try again in a moment".into(),
        }
    }
}

/// What a failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Raise the supervisor alert for this name now (once per hour).
    pub alert: bool,
    /// Failures of this name within the hour.
    pub name_failures: u32,
    /// Raise the supervisor alert for this peer now: it has failed this often in a row, across
    /// names (unknown names rotate, so the name's alert would never come).
    pub peer_alert: bool,
}

/// The login gate of one daemon.
pub struct LoginGate {
    limits: LoginLimits,
    hashing: Semaphore,
    waiting: AtomicUsize,
    tables: Mutex<Tables>,
    peak_hashing: AtomicUsize,
    running: AtomicUsize,
}

/// A permit to check one password; counts the checks running.
pub struct HashPermit<'a> {
    gate: &'a LoginGate,
    _permit: SemaphorePermit<'a>,
}

impl Drop for HashPermit<'_> {
    fn drop(&mut self) {
        self.gate.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn delay(failures: u32, free: u32, limits: &LoginLimits) -> i64 {
    if failures <= free {
        return 0;
    }
    let doublings = (failures - free - 1).min(20);
    (limits.first_delay_ms << doublings).min(limits.max_delay_ms)
}

impl LoginGate {
    /// A gate with these limits.
    pub fn new(limits: LoginLimits) -> LoginGate {
        LoginGate {
            limits,
            hashing: Semaphore::new(limits.hashing.max(1)),
            waiting: AtomicUsize::new(0),
            tables: Mutex::new(Tables::default()),
            peak_hashing: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        }
    }

    /// The most password checks that ever ran at once (for tests and metrics).
    pub fn peak_hashing(&self) -> usize {
        self.peak_hashing.load(Ordering::SeqCst)
    }

    /// May this peer try this name now?
    pub fn check(&self, peer: &str, name: &str, now_ms: i64) -> Result<(), Refusal> {
        let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let pair = t
            .pair
            .get(&(peer.to_string(), name.to_string()))
            .map_or(0, |e| e.not_before_ms);
        let any = t.peer.get(peer).map_or(0, |e| e.not_before_ms);
        let until = pair.max(any);
        if until > now_ms {
            return Err(Refusal::Wait { ms: until - now_ms });
        }
        Ok(())
    }

    /// Wait for a password check slot, or refuse when too many already wait.
    pub async fn permit(&self) -> Result<HashPermit<'_>, Refusal> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.limits.waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::Busy);
        }
        let permit = self.hashing.acquire().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|_| Refusal::Busy)?;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_hashing.fetch_max(now, Ordering::SeqCst);
        Ok(HashPermit {
            gate: self,
            _permit: permit,
        })
    }

    /// A failed login of `name` from `peer`.
    pub fn failed(&self, peer: &str, name: &str, now_ms: i64) -> Verdict {
        let l = self.limits;
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let e = t.pair.entry((peer.to_string(), name.to_string())).or_default();
        e.failures += 1;
        e.not_before_ms = now_ms + delay(e.failures, l.free_failures, &l);
        e.touched_ms = now_ms;
        let e = t.peer.entry(peer.to_string()).or_default();
        e.failures += 1;
        e.not_before_ms = now_ms + delay(e.failures, l.free_failures_per_peer, &l);
        e.touched_ms = now_ms;
        let peer_alert = e.failures == l.alert_after;
        let n = t.name.entry(name.to_string()).or_default();
        if now_ms - n.window_start_ms > 3_600_000 {
            *n = NameEntry {
                window_start_ms: now_ms,
                ..NameEntry::default()
            };
        }
        n.failures += 1;
        n.touched_ms = now_ms;
        let alert = n.failures >= l.alert_after && !n.alerted;
        if alert {
            n.alerted = true;
        }
        let verdict = Verdict {
            alert,
            name_failures: n.failures,
            peer_alert,
        };
        Self::bound(&mut t, l.max_entries);
        verdict
    }

    /// A successful login: this peer and name start afresh.
    pub fn succeeded(&self, peer: &str, name: &str) {
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        t.pair.remove(&(peer.to_string(), name.to_string()));
        t.peer.remove(peer);
    }

    /// Keep each table under `max` entries by dropping the least recently touched half.
    fn bound(t: &mut Tables, max: usize) {
        fn trim<K: Clone + Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>, max: usize, touched: impl Fn(&V) -> i64) {
            if m.len() <= max {
                return;
            }
            let mut ages: Vec<i64> = m.values().map(&touched).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            m.retain(|_, v| touched(v) > cut);
        }
        trim(&mut t.pair, max, |e| e.touched_ms);
        trim(&mut t.peer, max, |e| e.touched_ms);
        trim(&mut t.name, max, |e| e.touched_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_double_up_to_the_cap() {
        let l = LoginLimits::default();
        assert_eq!(delay(3, 3, &l), 0);
        assert_eq!(delay(4, 3, &l), 1_000);
        assert_eq!(delay(5, 3, &l), 2_000);
        assert_eq!(delay(40, 3, &l), l.max_delay_ms);
    }

    #[test]
    fn a_peer_that_keeps_failing_waits_and_another_peer_does_not() {
        let g = LoginGate::new(LoginLimits::default());
        for i in 0..4 {
            assert_eq!(g.check("tls:203.0.113.9", "olga", i), Ok(()));
            g.failed("tls:203.0.113.9", "olga", i);
        }
        assert!(matches!(
            g.check("tls:203.0.113.9", "olga", 4),
            Err(Refusal::Wait { .. })
        ));
        assert_eq!(
            g.check("local", "olga", 4),
            Ok(()),
            "the local console is not locked out"
        );
        assert_eq!(g.check("tls:203.0.113.9", "olga", 4 + 1_000), Ok(()), "the wait ends");
        g.succeeded("tls:203.0.113.9", "olga");
        assert_eq!(g.check("tls:203.0.113.9", "olga", 5), Ok(()));
    }

    #[test]
    fn a_peer_that_tries_many_names_waits_too() {
        let g = LoginGate::new(LoginLimits::default());
        for i in 0..11 {
            g.failed("tls:203.0.113.9", &format!("name{i}"), 0);
        }
        assert!(matches!(
            g.check("tls:203.0.113.9", "fresh", 0),
            Err(Refusal::Wait { .. })
        ));
    }

    #[test]
    fn a_name_failing_everywhere_alerts_once() {
        let g = LoginGate::new(LoginLimits::default());
        let alerts = (0..25)
            .filter(|i| g.failed(&format!("tls:198.51.100.{i}"), "olga", 0).alert)
            .count();
        assert_eq!(alerts, 1);
    }

    #[test]
    fn the_tables_stay_bounded() {
        let g = LoginGate::new(LoginLimits {
            max_entries: 100,
            ..LoginLimits::default()
        });
        for i in 0..1_000 {
            g.failed(&format!("tls:{i}"), &format!("n{i}"), i);
        }
        let t = g.tables.lock().expect("lock");
        assert!(t.pair.len() <= 100 && t.peer.len() <= 100 && t.name.len() <= 100);
    }

    #[tokio::test]
    async fn checks_beyond_the_bound_wait_and_beyond_the_queue_are_busy() {
        let g = LoginGate::new(LoginLimits {
            hashing: 1,
            waiting: 1,
            ..LoginLimits::default()
        });
        let first = g.permit().await.expect("first");
        // One more may wait (it would block): take the waiting slot by hand.
        g.waiting.fetch_add(1, Ordering::SeqCst);
        assert!(matches!(g.permit().await, Err(Refusal::Busy)));
        g.waiting.fetch_sub(1, Ordering::SeqCst);
        drop(first);
        let _second = g.permit().await.expect("free again");
        assert_eq!(g.peak_hashing(), 1);
    }
}
