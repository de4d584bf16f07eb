//! The descriptor budget: the connection caps sized to the process's descriptor limit, so that
//! no listener can take the descriptors the alarm path needs.
//!
//! Every connection holds a descriptor, and when the process has none left every `accept`
//! fails, the DC-09 listener's too: 20,000 idle operator connections once kept panels without
//! an ACK for minutes. So, from the soft `RLIMIT_NOFILE` (which `serve` first raises to the
//! hard limit):
//!
//! - [`OVERHEAD`] descriptors stay free for what is not a connection;
//! - the other listeners (operator API, metrics, event stream, Sur-Gard output) together get
//!   at most a quarter of the limit, each of their connections counted as
//!   [`PER_SIDE_CONNECTION`] descriptors;
//! - DC-09 and Contact ID get the rest.
//!
//! Where the configured caps ask for more, they are lowered max-min fair: a cap that fits an
//! equal share is kept whole, the larger ones share what is left equally (so a small, deliberate
//! cap such as the metrics endpoint's survives an operator cap of thousands).
//!
//! So `overhead + 3 × side connections + alarm connections ≤ limit` always holds, and no
//! operator, metrics or stream connection can take a descriptor of the alarm path's reserve.

use std::fmt;
use std::sync::Arc;

use tracing::warn;

use super::{Admission, Caps, Listener};
use crate::metrics::Metrics;

/// Descriptors kept for everything that is not a connection: standard streams, the writer's
/// database, WAL and shared-memory files, the runtime (epoll, wakers, signals), the listening
/// sockets, the read connections of the supervisor, the account reload and phone-code
/// verification, and one spare to accept and close a refused connection.
pub const OVERHEAD: usize = 64;
/// Descriptors one connection of a non-alarm listener may hold at once: its socket, and the
/// database and WAL files of the read connection that answers its current request (each of
/// these connections reads the database for one request at a time).
pub const PER_SIDE_CONNECTION: usize = 3;
/// The non-alarm listeners together hold at most `limit / SIDE_SHARE` descriptors.
pub const SIDE_SHARE: usize = 4;
/// The daemon refuses to start with a lower limit.
pub const MIN_LIMIT: usize = 256;

/// One enabled listener and its configured caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Which.
    pub listener: Listener,
    /// As configured.
    pub caps: Caps,
}

/// One listener's caps in the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Which.
    pub listener: Listener,
    /// As configured.
    pub configured: Caps,
    /// What the daemon uses: at most the configured caps.
    pub effective: Caps,
}

impl Planned {
    /// True if the budget lowered the configured total.
    pub fn lowered(&self) -> bool {
        self.effective.total < self.configured.total
    }
}

/// The budget for one descriptor limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The soft descriptor limit it was made for.
    pub limit: usize,
    /// Descriptors the non-alarm listeners' connections may hold (their caps × 3).
    pub side: usize,
    /// Descriptors left for the alarm listeners' connections.
    pub alarm_reserve: usize,
    /// Every enabled listener.
    pub listeners: Vec<Planned>,
}

impl Budget {
    /// The caps `listener` runs with, if it was planned.
    pub fn caps(&self, listener: Listener) -> Option<Caps> {
        self.listeners
            .iter()
            .find(|p| p.listener == listener)
            .map(|p| p.effective)
    }

    /// The admission of `listener` with its caps from the budget. A listener that was not
    /// planned (a bug: the budget is made from the same configuration) gets one connection.
    pub fn admission(&self, listener: Listener, metrics: Arc<Metrics>) -> Admission {
        let caps = self.caps(listener).unwrap_or_else(|| {
            warn!(%listener, "listener missing from the descriptor budget: one connection at a time");
            Caps { total: 1, per_peer: 1 }
        });
        Admission::new(listener, caps, metrics)
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "limit {}: overhead {OVERHEAD}, other listeners {}",
            self.limit, self.side
        )?;
        write!(f, ", alarm reserve {}; caps", self.alarm_reserve)?;
        for p in &self.listeners {
            write!(f, " {}={}", p.listener, p.effective.total)?;
        }
        Ok(())
    }
}

/// The descriptor limit is too low to run at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the descriptor limit (RLIMIT_NOFILE) is {limit}; meldkamer needs at least {MIN_LIMIT}")]
pub struct TooFew {
    /// The limit found.
    pub limit: usize,
}

/// Share `avail` among `caps`, max-min fair: caps that fit an equal share are kept whole, the
/// larger ones share what is left equally. Never more than asked, at least 1 each, and not
/// more than `avail` in all (given `avail` ≥ `caps.len()`).
fn share(caps: &[usize], avail: usize) -> Vec<usize> {
    if caps.iter().map(|&c| c as u128).sum::<u128>() <= avail as u128 {
        return caps.to_vec();
    }
    let mut order: Vec<usize> = (0..caps.len()).collect();
    order.sort_by_key(|&i| caps[i]);
    let mut out = vec![0; caps.len()];
    let mut left = avail;
    for (k, &i) in order.iter().enumerate() {
        // left ≥ the number still to serve, so the equal share is at least 1.
        let give = caps[i].min(left / (caps.len() - k)).max(1);
        out[i] = give;
        left = left.saturating_sub(give);
    }
    out
}

/// The budget for `limit` descriptors and the enabled listeners `wanted`.
pub fn plan(limit: usize, wanted: &[Wanted]) -> Result<Budget, TooFew> {
    if limit < MIN_LIMIT {
        return Err(TooFew { limit });
    }
    let (side, alarm): (Vec<Wanted>, Vec<Wanted>) = wanted.iter().partition(|w| !w.listener.alarm_path());
    let side_max = limit / SIDE_SHARE / PER_SIDE_CONNECTION;
    let side_caps = share(&side.iter().map(|w| w.caps.total).collect::<Vec<_>>(), side_max);
    let side_fds = side_caps.iter().sum::<usize>() * PER_SIDE_CONNECTION;
    let alarm_reserve = limit - OVERHEAD - side_fds;
    let alarm_caps = share(&alarm.iter().map(|w| w.caps.total).collect::<Vec<_>>(), alarm_reserve);
    let listeners = alarm
        .iter()
        .zip(alarm_caps)
        .chain(side.iter().zip(side_caps))
        .map(|(w, total)| Planned {
            listener: w.listener,
            configured: w.caps,
            effective: Caps {
                total,
                per_peer: w.caps.per_peer.min(total),
            },
        })
        .collect();
    Ok(Budget {
        limit,
        side: side_fds,
        alarm_reserve,
        listeners,
    })
}

/// The soft descriptor limit now (`usize::MAX` when unlimited or unknown).
pub fn nofile_limit() -> usize {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    {
        usize::MAX
    }
}

/// The descriptor limits before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit found.
    pub soft_before: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
}

/// Raise the soft descriptor limit to the hard one (`None`: unlimited). The soft limit often
/// defaults to 1,024 for compatibility with `select`, which the daemon does not use.
#[cfg(unix)]
pub fn raise_nofile_limit() -> std::io::Result<Raised> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            },
        )?;
    }
    let after = getrlimit(Resource::Nofile);
    Ok(Raised {
        soft_before: before.current,
        hard: after.maximum,
        soft: after.current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(listener: Listener, total: usize, per_peer: usize) -> Wanted {
        Wanted {
            listener,
            caps: Caps { total, per_peer },
        }
    }

    /// The default configuration: DC-09 16,384 (2,048 per address), the operator socket 64
    /// (16 per peer), metrics 8.
    fn defaults() -> Vec<Wanted> {
        vec![
            wanted(Listener::Dc09, 16384, 2048),
            wanted(Listener::OperatorUnix, 64, 16),
            wanted(Listener::Metrics, 8, 8),
        ]
    }

    fn used(b: &Budget) -> usize {
        OVERHEAD
            + b.listeners
                .iter()
                .map(|p| {
                    let per = if p.listener.alarm_path() {
                        1
                    } else {
                        PER_SIDE_CONNECTION
                    };
                    p.effective.total * per
                })
                .sum::<usize>()
    }

    #[test]
    fn at_1024_descriptors_the_side_fits_and_dc09_gets_the_rest() {
        let b = plan(1024, &defaults()).expect("plan");
        // 72 side connections × 3 = 216 ≤ 1024 / 4; DC-09: 1024 − 64 − 216 = 744.
        assert_eq!(b.side, 216);
        assert_eq!(b.alarm_reserve, 744);
        assert_eq!(
            b.caps(Listener::Dc09),
            Some(Caps {
                total: 744,
                per_peer: 744
            })
        );
        assert_eq!(
            b.caps(Listener::OperatorUnix),
            Some(Caps {
                total: 64,
                per_peer: 16
            })
        );
        assert_eq!(b.caps(Listener::Metrics), Some(Caps { total: 8, per_peer: 8 }));
        assert!(
            b.listeners
                .iter()
                .find(|p| p.listener == Listener::Dc09)
                .is_some_and(Planned::lowered)
        );
        assert_eq!(
            b.to_string(),
            "limit 1024: overhead 64, other listeners 216, alarm reserve 744; caps dc09=744 operator_unix=64 metrics=8"
        );
    }

    #[test]
    fn with_enough_descriptors_nothing_is_lowered() {
        let b = plan(20000, &defaults()).expect("plan");
        assert!(
            b.listeners.iter().all(|p| !p.lowered() && p.effective == p.configured),
            "{b:?}"
        );
        assert_eq!(b.alarm_reserve, 20000 - 64 - 216);
    }

    #[test]
    fn the_side_listeners_share_a_quarter_fairly() {
        let mut w = defaults();
        w.push(wanted(Listener::OperatorTls, 64, 16));
        w.push(wanted(Listener::EventStream, 64, 16));
        w.push(wanted(Listener::Automation, 4, 4));
        w.push(wanted(Listener::ContactId, 1024, 256));
        let b = plan(1024, &w).expect("plan");
        // A quarter of 1,024 is 85 connections of 3; asked: 204. Automation and metrics fit an
        // equal share and are kept; the three caps of 64 share the other 73.
        let total = |l| b.caps(l).expect("planned").total;
        assert_eq!((total(Listener::Automation), total(Listener::Metrics)), (4, 8));
        let big = [Listener::OperatorUnix, Listener::OperatorTls, Listener::EventStream].map(total);
        assert_eq!(big.iter().sum::<usize>(), 73, "{big:?}");
        assert!(big.iter().all(|&t| t == 24 || t == 25), "{big:?}");
        assert_eq!(b.caps(Listener::OperatorUnix).map(|c| c.per_peer), Some(16));
        // DC-09 and Contact ID share the rest, 1,024 − 64 − 3 × 85 = 705, equally.
        assert_eq!(b.alarm_reserve, 705);
        assert_eq!((total(Listener::ContactId), total(Listener::Dc09)), (352, 353));
        assert_eq!(b.caps(Listener::ContactId).map(|c| c.per_peer), Some(256));
        assert_eq!(used(&b), 1024, "{b:?}");
    }

    /// An operator cap of thousands cannot take the side's quarter from a small cap.
    #[test]
    fn a_huge_operator_cap_is_cut_and_the_metrics_cap_kept() {
        let w = [
            wanted(Listener::Dc09, 16384, 2048),
            wanted(Listener::OperatorUnix, 10000, 10000),
            wanted(Listener::OperatorTls, 10000, 10000),
            wanted(Listener::Metrics, 8, 8),
        ];
        let b = plan(1024, &w).expect("plan");
        let total = |l| b.caps(l).expect("planned").total;
        assert_eq!(total(Listener::Metrics), 8);
        assert_eq!(total(Listener::OperatorUnix) + total(Listener::OperatorTls), 77);
        assert_eq!(b.caps(Listener::OperatorUnix).map(|c| c.per_peer), Some(38));
        assert_eq!(total(Listener::Dc09), 1024 - 64 - 3 * 85);
    }

    /// The invariant, for many limits and configurations: overhead + 3 × side + alarm ≤ limit,
    /// every cap at least 1 and at most as configured, the side within its quarter (one
    /// connection each counted) and per-peer caps within the totals.
    #[test]
    fn the_budget_never_exceeds_the_limit() {
        let limits = [256, 257, 300, 511, 1024, 1025, 4096, 65536, 1 << 20, usize::MAX];
        let sizes = [1, 2, 7, 64, 1000, 16384, 1 << 40];
        for &limit in &limits {
            for &a in &sizes {
                for &s in &sizes {
                    let w = [
                        wanted(Listener::Dc09, a, a),
                        wanted(Listener::ContactId, s, 3),
                        wanted(Listener::OperatorUnix, s, 16),
                        wanted(Listener::OperatorTls, a, 16),
                        wanted(Listener::Metrics, 8, 8),
                        wanted(Listener::EventStream, s, s),
                        wanted(Listener::Automation, 4, 4),
                    ];
                    let b = plan(limit, &w).expect("plan");
                    assert!(used(&b) <= limit, "{limit} {a} {s}: {b:?}");
                    for p in &b.listeners {
                        assert!(
                            p.effective.total >= 1 && p.effective.total <= p.configured.total,
                            "{p:?}"
                        );
                        assert!(p.effective.per_peer <= p.effective.total, "{p:?}");
                        assert!(p.effective.per_peer <= p.configured.per_peer, "{p:?}");
                    }
                    assert!(
                        b.side / PER_SIDE_CONNECTION <= limit / SIDE_SHARE / PER_SIDE_CONNECTION,
                        "{b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn too_few_descriptors_is_an_error() {
        assert_eq!(plan(255, &defaults()), Err(TooFew { limit: 255 }));
        assert!(plan(MIN_LIMIT, &defaults()).is_ok());
    }
}
