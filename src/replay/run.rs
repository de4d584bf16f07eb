//! The in-process runner: a fresh temporary database, the trace's records, a manual clock and
//! seeded pads, the real receiver on loopback sockets, supervision ticked on each `@advance`.
//! The same trace gives byte-identical responses and outcome on every run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::diff::differing_fields;
use crate::clock::{Clock, ManualClock, unix_ms};
use crate::config::Config;
use crate::correlate::{CorrelateConfig, Correlator};
use crate::daemon::{self, Running};
use crate::protocol::crypto::SeededPad;
use crate::protocol::frame::{DecodeOptions, MAX_FRAME_LEN, Quirks, decode_frame};
use crate::protocol::framer::{Chunk, Framer};
use crate::trace::{Step, Trace, TraceTransport};

/// The default virtual start time.
pub const DEFAULT_CLOCK: time::OffsetDateTime = time::macros::datetime!(2026-01-15 12:00:00 UTC);

/// One response that did not match.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// Line of the expectation in the trace.
    pub line: usize,
    /// Expected bytes (escaped), or `(none)`.
    pub expected: String,
    /// Actual bytes (escaped), or `(none)`.
    pub actual: String,
    /// The fields that differ.
    pub fields: Vec<&'static str>,
}

/// The result of running one trace.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Trace file.
    pub trace: String,
    /// Title.
    pub title: String,
    /// Responses that differ from the expectations.
    pub mismatches: Vec<Mismatch>,
    /// Every expectation line with the actual response (for `--bless`).
    #[serde(skip)]
    pub actual: Vec<(usize, Option<Vec<u8>>)>,
    /// The outcome document.
    pub outcome: serde_json::Value,
}

/// A run that could not be carried out (as opposed to one that found mismatches).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The trace's records do not import.
    #[error("{trace}: records")]
    Records {
        /// Trace.
        trace: String,
        /// Why.
        #[source]
        source: crate::records::ImportError,
    },
    /// The daemon would not start.
    #[error("{trace}: starting the receiver")]
    Daemon {
        /// Trace.
        trace: String,
        /// Why.
        #[source]
        source: daemon::DaemonError,
    },
    /// Socket trouble.
    #[error("{trace}, line {line}: {what}")]
    Io {
        /// Trace.
        trace: String,
        /// Line.
        line: usize,
        /// What failed.
        what: String,
    },
    /// The database could not be read afterwards.
    #[error("{trace}: reading the outcome")]
    Outcome {
        /// Trace.
        trace: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}

/// A peer that reads responses frame by frame (keeping bytes of a following response).
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

fn framer() -> Framer {
    Framer::new(MAX_FRAME_LEN, true)
}

/// Read one response frame from a TCP connection, or `None` after `wait`.
pub async fn read_tcp_response(stream: &mut TcpStream, buf: &mut BytesMut, wait: Duration) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        while let Some(chunk) = framer().next_chunk(buf) {
            let bytes = buf.split_to(chunk.len());
            if let Chunk::Frame { .. } = chunk {
                return Some(bytes.to_vec());
            }
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

struct Session<'a> {
    trace: &'a Trace,
    cfg: Config,
    clock: Arc<ManualClock>,
    running: Option<Running>,
    transport: TraceTransport,
    tcp: Option<Conn>,
    udp: Option<UdpSocket>,
    /// Contact ID input and automation output connections (`side.rs`).
    side: super::side::Side,
    pad_seed: u64,
}

impl Session<'_> {
    fn name(&self) -> String {
        self.trace.path.display().to_string()
    }

    fn io(&self, line: usize, what: impl Into<String>) -> RunError {
        RunError::Io {
            trace: self.name(),
            line,
            what: what.into(),
        }
    }

    async fn start(&mut self) -> Result<(), RunError> {
        let hook = Box::new(Correlator::new(CorrelateConfig {
            supervisor_priority: self.cfg.alarms.supervisor_priority,
        }));
        let running = daemon::start_with_hook(self.cfg.clone(), self.clock.clone(), hook, false)
            .await
            .map_err(|source| RunError::Daemon {
                trace: self.name(),
                source,
            })?;
        *running.shared.seeded_pad.lock().unwrap_or_else(|p| p.into_inner()) = Some(SeededPad::new(self.pad_seed));
        self.running = Some(running);
        Ok(())
    }

    async fn stop(&mut self) {
        self.tcp = None;
        self.udp = None;
        self.side = super::side::Side::default();
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.wait().await;
        }
    }

    fn addr(&self, udp: bool) -> Option<SocketAddr> {
        let r = self.running.as_ref()?;
        if udp { r.udp_addr } else { r.tcp_addr }
    }

    async fn tick(&mut self) {
        let now = unix_ms(self.clock.now());
        if let Some(r) = self.running.as_mut() {
            let generation = r.shared.accounts().generation;
            if let Some(s) = r.supervisor.as_mut() {
                s.tick(now, generation).await;
            }
        }
    }

    /// Move the clock by `d` as a daemon on a real clock would live through it: supervision
    /// looks at every site whose schedule has an edge on the way, at that edge's time (it wakes
    /// at the next due time), then at the end.
    async fn advance(&mut self, d: time::Duration) {
        let target = unix_ms(self.clock.now() + d);
        loop {
            let now = unix_ms(self.clock.now());
            let next = self
                .running
                .as_ref()
                .and_then(|r| r.supervisor.as_ref())
                .and_then(|s| s.schedules().next_due());
            match next {
                Some(t) if t > now && t < target => {
                    self.clock.set(crate::clock::from_unix_ms(t));
                    self.tick().await;
                }
                _ => break,
            }
        }
        self.clock.set(crate::clock::from_unix_ms(target));
        self.tick().await;
    }

    /// An operator's action, through the writer as the API does it; supervision reads the
    /// change at once (the daemon does within a second).
    async fn operator(&mut self, line: usize, op: &crate::trace::OperatorStep) -> Result<(), RunError> {
        use crate::trace::OperatorStep;
        let now = unix_ms(self.clock.now());
        let writer = match self.running.as_ref() {
            Some(r) => r.shared.writer.clone(),
            None => return Err(self.io(line, "the daemon is stopped")),
        };
        let op = op.clone();
        let r = writer
            .run(move |tx| {
                use crate::correlate::service;
                Ok(match op {
                    OperatorStep::Extend { site, until, reason } => {
                        let id: Option<i64> = rusqlite::OptionalExtension::optional(tx.query_row(
                            "SELECT id FROM sites WHERE ref = ?1",
                            [&site],
                            |r| r.get(0),
                        ))?;
                        match id {
                            Some(id) => crate::correlate::schedule::store::extend(
                                tx,
                                id,
                                unix_ms(until),
                                "replay",
                                &reason,
                                now,
                            )
                            .map(|_| ())
                            .map_err(|e| format!("@extend: {e}")),
                            None => Err(format!("@extend: no site {site}")),
                        }
                    }
                    OperatorStep::Service {
                        mode,
                        target,
                        until,
                        reason,
                    } => {
                        let (site, account) = match target.strip_prefix("account:") {
                            Some(a) => (None, Some(a)),
                            None => (Some(target.as_str()), None),
                        };
                        match service::resolve(tx, site, account)? {
                            None => Err(format!("@service: no {target}")),
                            Some((t, site_id, _)) => match (service::Mode::parse(&mode), until) {
                                (Some(m), Some(until)) => {
                                    service::start(tx, &t, site_id, m, unix_ms(until), "replay", &reason, now)
                                        .map(|_| ())
                                        .map_err(|e| format!("@service: {e}"))
                                }
                                _ => service::end_target(tx, &t, "replay", now)
                                    .map(|_| ())
                                    .map_err(|e| format!("@service: {e}")),
                            },
                        }
                    }
                })
            })
            .await
            .map_err(|e| self.io(line, format!("writer: {e}")))?;
        r.map_err(|e| self.io(line, e))?;
        if let Some(s) = self.running.as_mut().and_then(|r| r.supervisor.as_mut()) {
            s.schedules_mut().check_now();
        }
        self.tick().await;
        Ok(())
    }

    async fn send(&mut self, line: usize, bytes: &[u8]) -> Result<(), RunError> {
        match self.transport {
            TraceTransport::Tcp => {
                if self.tcp.is_none() {
                    let addr = self.addr(false).ok_or_else(|| self.io(line, "no TCP listener"))?;
                    let stream = TcpStream::connect(addr)
                        .await
                        .map_err(|e| self.io(line, format!("connect: {e}")))?;
                    self.tcp = Some(Conn {
                        stream,
                        buf: BytesMut::new(),
                    });
                }
                let name = self.name();
                let Some(c) = self.tcp.as_mut() else {
                    return Err(RunError::Io {
                        trace: name,
                        line,
                        what: "no connection".into(),
                    });
                };
                if let Err(e) = c.stream.write_all(bytes).await {
                    return Err(RunError::Io {
                        trace: name,
                        line,
                        what: format!("write: {e}"),
                    });
                }
            }
            TraceTransport::Udp => {
                if self.udp.is_none() {
                    let s = UdpSocket::bind("127.0.0.1:0")
                        .await
                        .map_err(|e| self.io(line, format!("bind: {e}")))?;
                    self.udp = Some(s);
                }
                let addr = self.addr(true).ok_or_else(|| self.io(line, "no UDP listener"))?;
                let s = self.udp.as_ref().ok_or_else(|| self.io(line, "no socket"))?;
                s.send_to(bytes, addr)
                    .await
                    .map_err(|e| self.io(line, format!("send: {e}")))?;
            }
            t => {
                let sent = self.side.send(t, self.running.as_ref(), bytes).await;
                sent.map_err(|w| self.io(line, w))?;
            }
        }
        Ok(())
    }

    async fn receive(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self.transport {
            TraceTransport::Tcp => {
                let c = self.tcp.as_mut()?;
                read_tcp_response(&mut c.stream, &mut c.buf, wait).await
            }
            TraceTransport::Udp => {
                let s = self.udp.as_ref()?;
                let mut b = vec![0u8; MAX_FRAME_LEN + 1];
                match tokio::time::timeout(wait, s.recv_from(&mut b)).await {
                    Ok(Ok((n, _))) => Some(b[..n].to_vec()),
                    _ => None,
                }
            }
            t => self.side.receive(t, self.running.as_ref(), wait).await,
        }
    }

    fn key_for(&self, response: &[u8]) -> Option<crate::protocol::crypto::Key> {
        let opts = DecodeOptions {
            quirks: Quirks::ALL,
            max_len: MAX_FRAME_LEN,
        };
        let f = decode_frame(response, &opts).ok()?;
        let table = self.running.as_ref()?.shared.accounts();
        let e = table.lookup(f.account.number()?, f.receiver.as_deref(), &f.line)?;
        e.policy.key.clone()
    }
}

/// How long to wait for a response that should come, and for one that should not.
const RESPONSE_WAIT: Duration = Duration::from_secs(10);
const SILENCE_WAIT: Duration = Duration::from_millis(250);

/// Run one trace in-process. `work_dir` holds the temporary database.
pub async fn run_in_process(trace: &Trace, work_dir: &std::path::Path) -> Result<RunResult, RunError> {
    let mut cfg = Config::default();
    cfg.receiver.tcp_listen = "127.0.0.1:0".into();
    cfg.receiver.udp_listen = "127.0.0.1:0".into();
    cfg.metrics.listen = String::new();
    cfg.operator.socket = String::new();
    cfg.store.path = work_dir.join("replay.db");
    cfg.store.load_demo_data = false;
    super::side::configure(trace, &mut cfg);
    let _ = std::fs::remove_file(&cfg.store.path);

    let start_clock = trace
        .steps
        .iter()
        .find_map(|(_, s)| match s {
            Step::Clock(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(DEFAULT_CLOCK);
    let clock = Arc::new(ManualClock::new(start_clock));
    // Customer data first, stamped with the virtual start time.
    let mut records = crate::records::Records::default();
    for (_, s) in &trace.steps {
        if let Step::Records(p) = s {
            records.extend(crate::records::parse_file(p).map_err(|source| RunError::Records {
                trace: trace.path.display().to_string(),
                source,
            })?);
        }
    }
    {
        let mut conn =
            crate::store::open_write(&cfg.store.path, Duration::from_secs(5)).map_err(|e| RunError::Records {
                trace: trace.path.display().to_string(),
                source: crate::records::ImportError::Store(e),
            })?;
        let records_err = |source| RunError::Records {
            trace: trace.path.display().to_string(),
            source,
        };
        let seal = crate::store::sealed::key_from_config(&cfg, &conn, false)
            .map_err(|e| records_err(crate::records::ImportError::Keys(e)))?;
        crate::records::apply_at(&mut conn, &records, unix_ms(start_clock), &seal).map_err(records_err)?;
    }
    let mut s = Session {
        trace,
        cfg,
        clock,
        running: None,
        transport: TraceTransport::Tcp,
        tcp: None,
        udp: None,
        side: super::side::Side::default(),
        pad_seed: 0,
    };
    for (_, step) in &trace.steps {
        if let Step::PadSeed(n) = step {
            s.pad_seed = *n;
        }
    }
    s.start().await?;
    s.tick().await;
    let mut mismatches = Vec::new();
    let mut actual = Vec::new();
    let result: Result<(), RunError> = async {
        for (line, step) in &trace.steps {
            match step {
                Step::Title(_) | Step::Records(_) | Step::PadSeed(_) | Step::InProcessOnly | Step::NoOutcome => {}
                Step::Clock(t) => s.clock.set(*t),
                Step::Transport(t) => s.transport = *t,
                Step::Connect => {
                    s.tcp = None;
                    s.side.reset(s.transport);
                }
                Step::Advance(d) => s.advance(*d).await,
                Step::Operator(op) => s.operator(*line, op).await?,
                Step::Restart => {
                    s.stop().await;
                    s.start().await?;
                    s.tick().await;
                }
                Step::Stop => s.stop().await,
                Step::Start => {
                    if s.running.is_none() {
                        s.start().await?;
                        s.tick().await;
                    }
                }
                Step::Send(bytes) => s.send(*line, bytes).await?,
                Step::Expect(expected) => {
                    let got = s
                        .receive(if expected.is_some() {
                            RESPONSE_WAIT
                        } else {
                            SILENCE_WAIT
                        })
                        .await;
                    let fields = match (expected, &got) {
                        (Some(e), Some(a)) => differing_fields(e, a, s.key_for(a).as_ref()),
                        (None, None) => Vec::new(),
                        (Some(_), None) => vec!["response (none received)"],
                        (None, Some(_)) => vec!["response (none expected)"],
                    };
                    if !fields.is_empty() {
                        mismatches.push(Mismatch {
                            line: *line,
                            expected: expected
                                .as_deref()
                                .map_or("(none)".into(), crate::protocol::escape::escape),
                            actual: got.as_deref().map_or("(none)".into(), crate::protocol::escape::escape),
                            fields,
                        });
                    }
                    actual.push((*line, got));
                }
            }
        }
        Ok(())
    }
    .await;
    s.stop().await;
    result?;
    let conn = rusqlite::Connection::open(&s.cfg.store.path).map_err(|source| RunError::Outcome {
        trace: s.name(),
        source,
    })?;
    let outcome = super::outcome::outcome(&conn).map_err(|source| RunError::Outcome {
        trace: s.name(),
        source,
    })?;
    Ok(RunResult {
        trace: s.name(),
        title: trace.title(),
        mismatches,
        actual,
        outcome,
    })
}
