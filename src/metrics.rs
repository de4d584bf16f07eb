//! Counters and gauges for the Prometheus text endpoint. Fixed label sets, atomics only: a
//! metric update never takes a lock on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A counter with a fixed set of label values.
pub struct LabeledCounter {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: &'static [&'static str],
    counts: Vec<AtomicU64>,
}

impl LabeledCounter {
    fn new(name: &'static str, help: &'static str, label: &'static str, values: &'static [&'static str]) -> Self {
        LabeledCounter {
            name,
            help,
            label,
            values,
            counts: values.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Add one to the counter for `value` (the last label value, "other", if unknown).
    pub fn inc(&self, value: &str) {
        let i = self
            .values
            .iter()
            .position(|v| *v == value)
            .unwrap_or(self.values.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Current count for `value`.
    pub fn get(&self, value: &str) -> u64 {
        self.values
            .iter()
            .position(|v| *v == value)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        for (v, c) in self.values.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{}{{{}=\"{}\"}} {}",
                self.name,
                self.label,
                v,
                c.load(Ordering::Relaxed)
            );
        }
    }
}

/// A counter with two labels, each with a fixed set of values.
pub struct LabeledCounter2 {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; 2],
    first: &'static [&'static str],
    second: &'static [&'static str],
    counts: Vec<AtomicU64>,
}

impl LabeledCounter2 {
    fn new(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; 2],
        first: &'static [&'static str],
        second: &'static [&'static str],
    ) -> Self {
        LabeledCounter2 {
            name,
            help,
            labels,
            first,
            second,
            counts: (0..first.len() * second.len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The slot of (`a`, `b`); an unknown value counts as the last of its list ("other").
    fn slot(&self, a: &str, b: &str) -> usize {
        let i = self.first.iter().position(|v| *v == a).unwrap_or(self.first.len() - 1);
        let j = self
            .second
            .iter()
            .position(|v| *v == b)
            .unwrap_or(self.second.len() - 1);
        i * self.second.len() + j
    }

    /// Add one to the counter for (`a`, `b`).
    pub fn inc(&self, a: &str, b: &str) {
        self.counts[self.slot(a, b)].fetch_add(1, Ordering::Relaxed);
    }

    /// Current count for (`a`, `b`).
    pub fn get(&self, a: &str, b: &str) -> u64 {
        self.counts[self.slot(a, b)].load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        for (i, a) in self.first.iter().enumerate() {
            for (j, b) in self.second.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{}{{{}=\"{}\",{}=\"{}\"}} {}",
                    self.name,
                    self.labels[0],
                    a,
                    self.labels[1],
                    b,
                    self.counts[i * self.second.len() + j].load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// A histogram with fixed bucket bounds in seconds.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Histogram {
            name,
            help,
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one duration.
    pub fn observe(&self, d: std::time::Duration) {
        self.observe_value(d.as_secs_f64());
    }

    /// Record one value in the histogram's unit.
    pub fn observe_value(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Observations at or below `bound`, one of the histogram's bounds (`None` for another).
    pub fn at_most(&self, bound: f64) -> Option<u64> {
        let i = self.bounds.iter().position(|b| *b == bound)?;
        Some(self.buckets[i].load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{}_bucket{{le=\"{}\"}} {}",
                self.name,
                b,
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{}_bucket{{le=\"+Inf\"}} {}", self.name, n);
        let _ = writeln!(
            out,
            "{}_sum {}",
            self.name,
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{}_count {}", self.name, n);
    }
}

/// A gauge.
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicI64,
}

impl Gauge {
    fn new(name: &'static str, help: &'static str) -> Self {
        Gauge {
            name,
            help,
            value: AtomicI64::new(0),
        }
    }

    /// Add (or subtract) `d`.
    pub fn add(&self, d: i64) {
        self.value.fetch_add(d, Ordering::Relaxed);
    }

    /// Set the value.
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        let _ = writeln!(out, "{} {}", self.name, self.value.load(Ordering::Relaxed));
    }
}

/// Token label values for frames.
pub const TOKENS: &[&str] = &["SIA-DCS", "ADM-CID", "NULL", "XNM", "other"];
/// Response label values.
pub const RESPONSES: &[&str] = &["ACK", "NAK", "DUH", "none"];
/// Refusal and silence reasons.
pub const REASONS: &[&str] = &[
    "unreadable",
    "unsupported_token",
    "unknown_account",
    "no_key",
    "plain_refused",
    "decrypt",
    "timestamp",
    "crc",
    "length",
    "syntax",
    "too_long",
    "incomplete",
    "quirk_not_enabled",
    "garbage",
    "oversize",
    "frame_timeout",
    "commit_failed",
    "checksum",
    "unsupported_format",
    "other",
];

/// Listener label values (`admission::Listener`).
pub const LISTENERS: &[&str] = &[
    "dc09",
    "contact_id",
    "operator_unix",
    "operator_tls",
    "metrics",
    "event_stream",
    "automation",
    "other",
];

/// Every metric the daemon exports.
pub struct Metrics {
    /// Frames received, by ID token.
    pub frames: LabeledCounter,
    /// Responses sent, by kind.
    pub responses: LabeledCounter,
    /// Refused or dropped input, by reason.
    pub refusals: LabeledCounter,
    /// Events stored.
    pub events: LabeledCounter,
    /// Retransmissions recognised.
    pub retransmissions: Gauge,
    /// Commit groups run a second time, frame by frame in savepoints, because one frame failed.
    pub group_retries: Gauge,
    /// Commit latency.
    pub commit_latency: Histogram,
    /// Frames per commit.
    pub batch_size: Histogram,
    /// Open TCP connections.
    pub open_connections: Gauge,
    /// Submissions waiting for the writer.
    pub queue_depth: Gauge,
    /// Connections refused by the caps, by listener and cap.
    pub connections_refused: LabeledCounter2,
    /// Contact ID input messages (`[cid_input]`), by framing.
    pub cid_messages: LabeledCounter,
    /// Sur-Gard output: answers from the automation software, skips and heartbeats.
    pub automation: LabeledCounter,
    /// Sur-Gard output: 1 while an automation connection is up.
    pub automation_connected: Gauge,
    /// Sur-Gard output: outbox rows not yet acknowledged.
    pub automation_backlog: Gauge,
    /// JSON Lines event stream: lines written, by sink.
    pub stream_lines: LabeledCounter,
    /// JSON Lines event stream: connected TCP subscribers.
    pub stream_subscribers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            frames: LabeledCounter::new(
                "meldkamer_frames_total",
                "DC-09 frames received, by ID token",
                "token",
                TOKENS,
            ),
            responses: LabeledCounter::new(
                "meldkamer_responses_total",
                "Responses sent to panels, by kind",
                "kind",
                RESPONSES,
            ),
            refusals: LabeledCounter::new(
                "meldkamer_refusals_total",
                "Input refused or dropped, by reason",
                "reason",
                REASONS,
            ),
            events: LabeledCounter::new(
                "meldkamer_events_total",
                "Events stored, by outcome",
                "outcome",
                &["stored", "other"],
            ),
            retransmissions: Gauge::new(
                "meldkamer_retransmissions_total",
                "Retransmissions recognised and ACKed again without a new event",
            ),
            group_retries: Gauge::new(
                "meldkamer_commit_group_retries_total",
                "Commit groups repeated frame by frame because one of their frames could not be stored",
            ),
            commit_latency: Histogram::new(
                "meldkamer_commit_seconds",
                "Time to commit one group of frames (one fsync)",
                &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0],
            ),
            batch_size: Histogram::new(
                "meldkamer_commit_batch_frames",
                "Frames per committed group (one fsync each)",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
            ),
            open_connections: Gauge::new("meldkamer_open_connections", "Open TCP connections"),
            queue_depth: Gauge::new("meldkamer_store_queue_depth", "Submissions waiting for the writer"),
            connections_refused: LabeledCounter2::new(
                "meldkamer_connections_refused_total",
                "Connections refused (accepted and closed at once) by a connection cap, by listener and cap",
                ["listener", "cap"],
                LISTENERS,
                &["total", "per_peer", "other"],
            ),
            cid_messages: LabeledCounter::new(
                "meldkamer_cid_input_messages_total",
                "Contact ID input messages received, by framing",
                "framing",
                &["surgard", "lupusec", "dc05", "heartbeat", "other"],
            ),
            automation: LabeledCounter::new(
                "meldkamer_automation_messages_total",
                "Sur-Gard output: answers from the automation software, skipped messages and heartbeats",
                "result",
                &[
                    "ack",
                    "nak",
                    "timeout",
                    "skipped",
                    "heartbeat",
                    "heartbeat_timeout",
                    "other",
                ],
            ),
            automation_connected: Gauge::new(
                "meldkamer_automation_connected",
                "Sur-Gard output: 1 while an automation connection is up",
            ),
            automation_backlog: Gauge::new(
                "meldkamer_automation_backlog",
                "Sur-Gard output: stored events not yet acknowledged by the automation software",
            ),
            stream_lines: LabeledCounter::new(
                "meldkamer_event_stream_lines_total",
                "JSON Lines event stream: lines written, by sink",
                "sink",
                &["file", "tcp", "other"],
            ),
            stream_subscribers: Gauge::new(
                "meldkamer_event_stream_subscribers",
                "JSON Lines event stream: connected TCP subscribers",
            ),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        self.frames.render(&mut s);
        self.responses.render(&mut s);
        self.refusals.render(&mut s);
        self.events.render(&mut s);
        for c in [&self.retransmissions, &self.group_retries] {
            let _ = writeln!(s, "# HELP {} {}", c.name, c.help);
            let _ = writeln!(s, "# TYPE {} counter", c.name);
            let _ = writeln!(s, "{} {}", c.name, c.get());
        }
        self.commit_latency.render(&mut s);
        self.batch_size.render(&mut s);
        self.open_connections.render(&mut s);
        self.queue_depth.render(&mut s);
        self.connections_refused.render(&mut s);
        self.cid_messages.render(&mut s);
        self.automation.render(&mut s);
        self.automation_connected.render(&mut s);
        self.automation_backlog.render(&mut s);
        self.stream_lines.render(&mut s);
        self.stream_subscribers.render(&mut s);
        s
    }

    /// Record the size of a committed group.
    pub fn observe_batch(&self, n: usize) {
        self.batch_size.observe_value(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.frames.inc("SIA-DCS");
        m.refusals.inc("crc");
        m.refusals.inc("no-such-reason");
        m.commit_latency.observe(std::time::Duration::from_millis(3));
        let t = m.render();
        assert!(t.contains("meldkamer_frames_total{token=\"SIA-DCS\"} 1"));
        assert!(t.contains("meldkamer_refusals_total{reason=\"crc\"} 1"));
        assert!(t.contains("meldkamer_refusals_total{reason=\"other\"} 1"));
        assert!(t.contains("meldkamer_commit_seconds_bucket{le=\"0.005\"} 1"));
        assert!(t.contains("meldkamer_commit_seconds_bucket{le=\"0.002\"} 0"));
        assert!(t.contains("meldkamer_commit_seconds_count 1"));
        m.connections_refused.inc("operator_tls", "per_peer");
        m.connections_refused.inc("nonesuch", "total");
        let t = m.render();
        assert!(t.contains("meldkamer_connections_refused_total{listener=\"operator_tls\",cap=\"per_peer\"} 1"));
        assert!(t.contains("meldkamer_connections_refused_total{listener=\"operator_tls\",cap=\"total\"} 0"));
        assert!(t.contains("meldkamer_connections_refused_total{listener=\"other\",cap=\"total\"} 1"));
    }
}
