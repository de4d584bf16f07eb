//! The single writer: owns the write connection, commits frames in groups (one fsync per
//! group), recognises retransmissions, and answers each submitter only after the transaction
//! holding its frame has committed. If a commit fails, every submitter in that group gets the
//! error and sends no acknowledgement; the next group tries again.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::bulk::{Bulk, set_watermark};
use super::heads::{AccountHeads, HeadsStep};
use crate::event::{Event, EventCode, Qualifier};
use crate::metrics::Metrics;
use crate::protocol::response::ResponseKind;

/// How a frame arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Transport {
    /// Stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// What the receiver decided before storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Valid: store events (or recognise a retransmission), then ACK.
    Accepted,
    /// Well-formed, answered DUH or NAK.
    Refused,
    /// Not answered (CRC, length, grammar, quirk not enabled).
    Silent,
    /// Bytes outside any frame.
    Garbage,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Silent => "silent",
            Outcome::Garbage => "garbage",
        }
    }
}

/// One frame (or garbage run) to store.
#[derive(Debug, Clone)]
pub struct FrameRecord {
    /// Receive time, Unix ms.
    pub received_ms: i64,
    /// TCP or UDP.
    pub transport: Transport,
    /// Peer address.
    pub peer: String,
    /// The bytes as received.
    pub raw: Vec<u8>,
    /// The receiver's decision.
    pub outcome: Outcome,
    /// Reason key for refusals and silence.
    pub reason: Option<&'static str>,
    /// Human detail (never secrets).
    pub detail: Option<String>,
    /// ID token.
    pub token: Option<String>,
    /// Encrypted frame.
    pub encrypted: bool,
    /// Account from the header.
    pub account: Option<String>,
    /// Receiver from the header.
    pub receiver: Option<String>,
    /// Line from the header.
    pub line: Option<String>,
    /// Sequence number.
    pub seq: Option<u16>,
    /// Matched account row.
    pub account_id: Option<i64>,
    /// Message time minus receiver time.
    pub skew_s: Option<i64>,
    /// The response bytes that will be sent (after commit).
    pub response: Option<Vec<u8>>,
    /// The response kind.
    pub response_kind: Option<ResponseKind>,
    /// Events of an accepted frame.
    pub events: Vec<Event>,
    /// Retransmission identity of an accepted frame with events.
    pub dedupe_key: Option<[u8; 16]>,
    /// An accepted link test: only the account's last-seen time is updated.
    pub link_test_only: bool,
    /// Accepted, and its only events are periodic test reports (Contact ID 602, SIA RP): a
    /// poll in another form, compacted like one when the writer is told to
    /// ([`PollPolicy::compact_periodic_tests`]).
    pub periodic_test: bool,
    /// The account's supervision interval, if supervised: a poll after a longer silence is
    /// the first after a loss, and kept.
    pub supervision_ms: Option<i64>,
}

impl FrameRecord {
    /// A record with the fields every frame has.
    pub fn new(received_ms: i64, transport: Transport, peer: String, raw: Vec<u8>, outcome: Outcome) -> Self {
        FrameRecord {
            received_ms,
            transport,
            peer,
            raw,
            outcome,
            reason: None,
            detail: None,
            token: None,
            encrypted: false,
            account: None,
            receiver: None,
            line: None,
            seq: None,
            account_id: None,
            skew_s: None,
            response: None,
            response_kind: None,
            events: Vec::new(),
            dedupe_key: None,
            link_test_only: false,
            periodic_test: false,
            supervision_ms: None,
        }
    }

    /// A clean poll: accepted, of a known account, nothing unusual about it (no reason noted:
    /// no key offered, no data not understood), and a link test without data, or (`tests`)
    /// nothing but periodic test reports from a supervised account (where the test is what
    /// supervision waits for; elsewhere it is an event like any other).
    fn clean_poll(&self, tests: bool) -> bool {
        self.outcome == Outcome::Accepted
            && self.reason.is_none()
            && self.account_id.is_some()
            && (self.link_test_only || (tests && self.periodic_test && self.supervision_ms.is_some()))
    }
}

/// Which clean supervision polls are stored. A poll that is not stored still updates the
/// account's last-seen time and poll counter (`account_status.polls`, `last_poll_ms`) through
/// its `poll_log` row, committed before its ACK like every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// Keep the first poll of each account in every period of this many ms (UTC); 0: no
    /// sample.
    pub sample_ms: i64,
    /// Frames of nothing but periodic test reports count as polls.
    pub compact_periodic_tests: bool,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            sample_ms: 86_400_000,
            compact_periodic_tests: true,
        }
    }
}

/// What the writer did with a clean poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollFate {
    /// Not a clean poll (an event frame, a refusal, an anomaly): stored as always.
    #[default]
    NotPoll,
    /// Counted, no row.
    Compacted,
    /// Counted and stored as a frame row, for this reason (`frames.reason`).
    Kept(&'static str),
    /// A retransmission of a poll already counted: ACKed again, neither counted nor stored.
    Retransmission,
}

/// `frames.reason` of a poll kept as the first after a loss (silent longer than its
/// supervision interval).
pub const KEPT_AFTER_LOSS: &str = "poll_after_loss";
/// `frames.reason` of a poll kept as the audit sample of its period.
pub const KEPT_SAMPLE: &str = "poll_sample";

/// The daemon's outage a writer resumes from, for [`keep_poll`]: the last moment the previous
/// run was receiving (`meta.receiving_ms`; `None` if none is recorded) and the moment this
/// writer started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The previous run's last moment of receiving.
    pub down_since_ms: Option<i64>,
    /// This writer's start.
    pub started_ms: i64,
}

/// `meta` key: the last moment the daemon was receiving, Unix ms (written by supervision about
/// once a second; read by the writer at its start for [`Resumed`]).
pub const RECEIVING_KEY: &str = "receiving_ms";

/// Where account `aid`'s sample periods begin within every `sample_ms` (from a hash of its
/// id): one account keeps its sample at its own moment of the day, so that a million accounts
/// do not all keep one in the first round after midnight.
pub fn sample_phase(aid: i64, sample_ms: i64) -> i64 {
    if sample_ms <= 0 {
        return 0;
    }
    ((aid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as i64 % sample_ms
}

/// Whether a clean poll of account `aid` received at `now` is stored, given the account's
/// previous traffic (`prev`; none if it was never heard: nothing was lost and no sample period
/// has begun) and its supervision interval.
///
/// A silence is a loss when it is longer than the interval, not counting time the daemon was
/// not receiving (`resumed`, as supervision's restart rule): when the account's deadline fell
/// after the previous run's last moment of receiving, the silence counts from this writer's
/// start. A silence that was already overdue before the outage is a loss as always.
pub fn keep_poll(
    policy: &PollPolicy,
    aid: i64,
    now: i64,
    prev: Option<i64>,
    interval_ms: Option<i64>,
    resumed: Option<Resumed>,
) -> Option<&'static str> {
    let prev = prev?;
    if let Some(i) = interval_ms {
        let from = match resumed {
            Some(r) if r.down_since_ms.is_none_or(|d| prev + i > d) => prev.max(r.started_ms),
            _ => prev,
        };
        if now - from > i {
            return Some(KEPT_AFTER_LOSS);
        }
    }
    if policy.sample_ms > 0 {
        let phase = sample_phase(aid, policy.sample_ms);
        let period = |ms: i64| (ms - phase).div_euclid(policy.sample_ms);
        if period(now) > period(prev) {
            return Some(KEPT_SAMPLE);
        }
    }
    None
}

/// A queue longer than this many groups ([`WriterConfig::max_batch`]) is a backlog.
pub const BACKLOG_AFTER: usize = 4;
/// With a backlog, one flush takes up to this many groups.
pub const BACKLOG_FACTOR: usize = 16;

/// The retransmission identity: account, receiver, line, sequence number and the clear payload
/// (data and extended data, without pad and timestamp, which a panel renews when it resends).
pub fn dedupe_key(account: &str, receiver: Option<&str>, line: &str, seq: u16, payload: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in [account.as_bytes(), receiver.unwrap_or("").as_bytes(), line.as_bytes()] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.update(seq.to_be_bytes());
    h.update(payload);
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// What the store did with a frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Committed {
    /// The stored frame row (none for a poll not kept).
    pub frame_id: Option<i64>,
    /// Set when the frame is a retransmission of this earlier frame.
    pub duplicate_of: Option<i64>,
    /// The stored event rows.
    pub event_ids: Vec<i64>,
    /// What became of a clean poll.
    pub poll: PollFate,
}

/// The writer's answer to a queued frame.
pub struct Answer {
    /// What the store did with the frame.
    pub result: Result<Committed, Arc<StoreError>>,
    /// The record itself, handed back so that the receiver task that built it also frees it.
    /// A record's dozen buffers allocated on a tokio worker and freed on the writer thread
    /// missed glibc's per-thread caches on both sides (its slow `malloc`/`free` paths were 5–7 %
    /// of the daemon's CPU at 64 connections).
    pub record: Box<FrameRecord>,
}

/// Resolves when the frame's transaction committed or failed; closed if the writer stopped.
pub type AnswerRx = oneshot::Receiver<Answer>;

type Reply = oneshot::Sender<Answer>;

enum Msg {
    Frame(Box<FrameRecord>, Reply),
    Job(Box<dyn Job>),
    /// Answered once the commit group this lands in is done (at once when there is none).
    Ping(oneshot::Sender<()>),
    /// Everything queued before this is committed; then the writer stops.
    Stop,
}

/// Work run inside the writer's transaction, in its own savepoint: a failing job is rolled back
/// alone and does not take the frames committed with it down.
trait Job: Send {
    /// Run; false if the job failed (its savepoint is rolled back).
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool;
    /// Deliver the result: called after the commit (or with the commit's error).
    fn finish(self: Box<Self>, commit: Result<(), Arc<StoreError>>);
}

struct TypedJob<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, Arc<StoreError>>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let r = f(tx);
        let ok = r.is_ok();
        self.out = Some(r);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), Arc<StoreError>>) {
        let result = match (commit, self.out) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(Ok(v))) => Ok(v),
            (Ok(()), Some(Err(e))) => Err(Arc::new(e)),
            (Ok(()), None) => Err(Arc::new(StoreError::WriterGone)),
        };
        let _ = self.reply.send(result);
    }
}

enum Item {
    Frame(Box<FrameRecord>, Reply),
    Job(Box<dyn Job>),
}

/// Something the writer must do inside its transaction, after a frame's rows are written
/// (correlation plugs in here, so an event and its effects commit together).
pub trait AfterInsert: Send + 'static {
    /// Called once per commit group, first thing in its transaction (before any frame): a hook
    /// that caches what only imports change checks here whether an import happened.
    fn begin(&mut self, _tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Something the hook did not see may have changed the database, or what it saw was
    /// undone: a job ran, or a frame or the whole group was rolled back. A hook that remembers
    /// what it derived from the database drops what could now be wrong.
    fn forget(&mut self) {}

    /// A job is about to run in this transaction.
    fn before_job(&mut self, _tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    /// A job ran and its changes stand: a hook that can tell the job left what it remembers
    /// alone keeps it; by default it forgets.
    fn after_job(&mut self, _tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        self.forget();
        Ok(())
    }

    /// Before the only event of an accepted frame is inserted: the alarm it joins and that
    /// alarm's previous newest event, if the hook knows them without a look, so the link is
    /// written with the event row instead of by a second statement. A hook that answers sees
    /// the same frame in [`Self::after_insert`] and must not link it again.
    fn link_before_insert(
        &mut self,
        _tx: &rusqlite::Transaction<'_>,
        _record: &FrameRecord,
    ) -> Result<Option<AlarmLink>, StoreError> {
        Ok(None)
    }

    /// Called for every stored accepted frame with its event ids.
    fn after_insert(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        record: &FrameRecord,
        committed: &Committed,
    ) -> Result<(), StoreError>;
}

/// An event's place in an alarm: the alarm, and the alarm's newest event before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmLink {
    /// `events.alarm_id`.
    pub alarm_id: i64,
    /// `events.alarm_prev`.
    pub prev: Option<i64>,
}

/// No extra work.
pub struct NoHook;

impl AfterInsert for NoHook {
    fn after_insert(
        &mut self,
        _: &rusqlite::Transaction<'_>,
        _: &FrameRecord,
        _: &Committed,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Database file.
    pub path: PathBuf,
    /// Queue depth.
    pub queue_depth: usize,
    /// Most frames (and jobs) per transaction.
    pub max_batch: usize,
    /// Busy timeout.
    pub busy_timeout: Duration,
    /// Retransmission window.
    pub retransmission_window: Duration,
    /// Most remembered retransmission identities (memory bound); the oldest go first.
    pub max_dedupe_entries: usize,
    /// Updated after each commit with the newest valid traffic per account (supervision).
    pub last_seen: Option<Arc<LastSeen>>,
    /// Bumped after each commit, so subscribers (the operator API) re-read what changed.
    pub changes: Option<tokio::sync::watch::Sender<u64>>,
    /// When WAL checkpoints run (in the background, and past a bound in the writer).
    pub wal: super::checkpoint::WalLimits,
    /// How often the last-seen times of event frames go to `account_status` in bulk, and each
    /// account's newest event to `account_heads`.
    pub status_flush: Duration,
    /// Which clean polls are stored.
    pub polls: PollPolicy,
}

/// Last valid traffic per account id, Unix ms, as committed; and the route each account's
/// valid traffic last came over ([`Routes`]).
#[derive(Debug, Default)]
pub struct LastSeen(pub std::sync::Mutex<HashMap<i64, i64>>, pub Routes);

/// The route of an account's valid traffic: transport, receiver and line from the frame's
/// header, and the source network (IPv4 /24, IPv6 /48). What a mass loss names as its scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// TCP or UDP.
    pub transport: &'static str,
    /// Receiver number from the header (`R…`), empty if none.
    pub receiver: String,
    /// Line number from the header (`L…`).
    pub line: String,
    /// The sender's network, empty if its address does not parse.
    pub network: String,
}

impl Route {
    fn of(r: &FrameRecord) -> Route {
        let network = match r.peer.parse::<std::net::SocketAddr>().map(|a| a.ip()) {
            Ok(std::net::IpAddr::V4(v4)) => {
                let o = v4.octets();
                format!("{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            Ok(std::net::IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
            Err(_) => String::new(),
        };
        Route {
            transport: r.transport.as_str(),
            receiver: r.receiver.clone().unwrap_or_default(),
            line: r.line.clone().unwrap_or_default(),
            network,
        }
    }

    /// The receiver line: receiver and line as a panel's header names them (`R1 L2`).
    pub fn line_name(&self) -> String {
        self.receiver_line().to_string()
    }

    /// The receiver line of the route (whatever the transport and network).
    pub fn receiver_line(&self) -> ReceiverLine {
        ReceiverLine {
            receiver: self.receiver.clone(),
            line: self.line.clone(),
        }
    }
}

/// A receiver line: the receiver and line numbers of a panel's header (`R1 L2`), over TCP or
/// UDP, from any network. What a mass loss of one line names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReceiverLine {
    /// Receiver number, empty if none.
    pub receiver: String,
    /// Line number, empty if none.
    pub line: String,
}

impl std::fmt::Display for ReceiverLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.receiver.is_empty(), self.line.is_empty()) {
            (true, true) => f.write_str("no receiver or line"),
            (true, false) => write!(f, "L{}", self.line),
            (false, true) => write!(f, "R{}", self.receiver),
            (false, false) => write!(f, "R{} L{}", self.receiver, self.line),
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.transport.to_uppercase(), self.line_name())?;
        if !self.network.is_empty() {
            write!(f, " from {}", self.network)?;
        }
        Ok(())
    }
}

/// Most distinct routes remembered; traffic over a route past it is remembered as unknown.
pub const MAX_ROUTES: usize = 1 << 16;

/// The route each account last reported over, in memory (lost on a restart until the account
/// reports again). Routes are shared between accounts: one small number per account.
#[derive(Debug, Default)]
pub struct Routes(std::sync::Mutex<RoutesInner>);

#[derive(Debug, Default)]
struct RoutesInner {
    ids: HashMap<Route, u32>,
    list: Vec<Route>,
    by_account: HashMap<i64, u32>,
    /// Accounts last heard over each route (by its index in `list`).
    heard: Vec<usize>,
}

impl RoutesInner {
    /// One more (or one fewer) account last heard over route `id`.
    fn count(&mut self, id: u32, more: bool) {
        if let Some(n) = self.heard.get_mut(id as usize) {
            *n = if more { n.saturating_add(1) } else { n.saturating_sub(1) };
        }
    }
}

impl Routes {
    /// The route account `account_id` last reported over, if known.
    pub fn of(&self, account_id: i64) -> Option<Route> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let i = *g.by_account.get(&account_id)?;
        g.list.get(i as usize).cloned()
    }

    /// How many accounts were last heard over each receiver line: the whole of a line, of which
    /// a mass loss of that line is a share.
    pub fn line_totals(&self) -> HashMap<ReceiverLine, usize> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals: HashMap<ReceiverLine, usize> = HashMap::new();
        for (route, &n) in g.list.iter().zip(&g.heard) {
            if n > 0 {
                *totals.entry(route.receiver_line()).or_default() += n;
            }
        }
        totals
    }

    fn record<'a>(&self, items: impl Iterator<Item = (i64, &'a FrameRecord)>) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (account_id, r) in items {
            let route = Route::of(r);
            let id = match g.ids.get(&route) {
                Some(&id) => id,
                None if g.list.len() < MAX_ROUTES => {
                    let id = g.list.len() as u32;
                    g.list.push(route.clone());
                    g.heard.push(0);
                    g.ids.insert(route, id);
                    id
                }
                None => {
                    if let Some(old) = g.by_account.remove(&account_id) {
                        g.count(old, false);
                    }
                    continue;
                }
            };
            if let Some(old) = g.by_account.insert(account_id, id) {
                g.count(old, false);
            }
            g.count(id, true);
        }
    }
}

impl LastSeen {
    /// The last time an account was heard.
    pub fn get(&self, account_id: i64) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&account_id)
            .copied()
    }

    fn record(&self, items: impl Iterator<Item = (i64, i64)>) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (id, ms) in items {
            let e = g.entry(id).or_insert(ms);
            *e = (*e).max(ms);
        }
    }
}

/// The submit side, cloned into every receiver task.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

impl WriterHandle {
    /// Queue a frame and wait until it is committed (or the commit failed). Waits for room in
    /// the queue when the writer is behind: that is the back-pressure on receivers.
    pub async fn submit(&self, record: FrameRecord) -> Result<Committed, Arc<StoreError>> {
        match self.enqueue(record).await {
            Ok(rx) => rx
                .await
                .map_or_else(|_| Err(Arc::new(StoreError::WriterGone)), |a| a.result),
            Err(e) => Err(e),
        }
    }

    /// Run `f` inside the writer's transaction (in a savepoint) and return its result once the
    /// transaction committed. Operator actions, supervision timeouts and imports use this, so
    /// one connection writes everything.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Arc<StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = TypedJob {
            f: Some(f),
            out: None,
            reply,
        };
        self.metrics.queue_depth.add(1);
        if self.tx.send(Msg::Job(Box::new(job))).await.is_err() {
            self.metrics.queue_depth.add(-1);
            return Err(Arc::new(StoreError::WriterGone));
        }
        rx.await.unwrap_or_else(|_| Err(Arc::new(StoreError::WriterGone)))
    }

    /// Resolves when the writer has taken this from its queue and finished the commit group it
    /// was taken with (committed or failed), at once when there was nothing to commit: proof
    /// that the writer's loop still turns. It does not resolve while a group hangs (a lock
    /// never released, a disk that does not answer), which is what the service watchdog
    /// ([`crate::service::watchdog`]) needs to see. Waits its turn in a full queue like a frame.
    pub async fn alive(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Ping(reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }

    /// Ask the writer to stop once everything queued so far is committed.
    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Stop).await;
    }

    /// Queue a frame; the returned receiver resolves at commit. For pipelining on one connection.
    pub async fn enqueue(&self, record: FrameRecord) -> Result<AnswerRx, Arc<StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.metrics.queue_depth.add(1);
        if self.tx.send(Msg::Frame(Box::new(record), reply)).await.is_err() {
            self.metrics.queue_depth.add(-1);
            return Err(Arc::new(StoreError::WriterGone));
        }
        Ok(rx)
    }
}

struct Dedupe {
    map: HashMap<[u8; 16], (i64, i64)>,
    order: VecDeque<(i64, [u8; 16])>,
    window_ms: i64,
    cap: usize,
}

impl Dedupe {
    fn get(&self, k: &[u8; 16], now_ms: i64) -> Option<i64> {
        self.map
            .get(k)
            .filter(|(_, t)| now_ms - *t <= self.window_ms)
            .map(|(id, _)| *id)
    }

    fn insert(&mut self, k: [u8; 16], frame_id: i64, t: i64) {
        self.map.insert(k, (frame_id, t));
        self.order.push_back((t, k));
        while self.order.len() > self.cap {
            if let Some((_, old)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some((t, k)) = self.order.front().copied() {
            if now_ms - t <= self.window_ms {
                break;
            }
            self.order.pop_front();
            if self.map.get(&k).is_some_and(|(_, tt)| *tt == t) {
                self.map.remove(&k);
            }
        }
    }
}

/// Remember the identities of frames accepted within the window, newest first, so that a
/// restart does not forget them.
fn load_dedupe(conn: &Connection, now_ms: i64, window_ms: i64, cap: usize) -> Result<Dedupe, StoreError> {
    let mut d = Dedupe {
        map: HashMap::new(),
        order: VecDeque::new(),
        window_ms,
        cap,
    };
    let mut stmt = conn.prepare("SELECT id, received_ms, dedupe_key FROM frames ORDER BY id DESC")?;
    let mut rows = stmt.query([])?;
    let mut found = Vec::new();
    while let Some(r) = rows.next()? {
        let t: i64 = r.get(1)?;
        if now_ms - t > window_ms || found.len() >= cap {
            break;
        }
        let key: Option<Vec<u8>> = r.get(2)?;
        if let Some(k) = key.and_then(|k| <[u8; 16]>::try_from(k.as_slice()).ok()) {
            found.push((r.get::<_, i64>(0)?, t, k));
        }
    }
    for (id, t, k) in found.into_iter().rev() {
        d.insert(k, id, t);
    }
    Ok(d)
}

fn qualifier_str(q: Qualifier) -> Cow<'static, str> {
    match q {
        Qualifier::New => "new".into(),
        Qualifier::Restore => "restore".into(),
        Qualifier::Status => "status".into(),
        Qualifier::Unknown(d) => format!("unknown:{d}").into(),
    }
}

fn insert_frame(
    tx: &rusqlite::Transaction<'_>,
    r: &FrameRecord,
    outcome: &str,
    duplicate_of: Option<i64>,
) -> Result<i64, StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO frames (received_ms, transport, peer, raw, outcome, reason, detail, token, encrypted, account,
                             receiver, line, seq, account_id, skew_s, response, response_kind, duplicate_of, dedupe_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?;
    stmt.execute(params![
        r.received_ms,
        r.transport.as_str(),
        r.peer,
        r.raw,
        outcome,
        r.reason,
        r.detail,
        r.token,
        r.token.as_ref().map(|_| r.encrypted),
        r.account,
        r.receiver,
        r.line,
        r.seq,
        r.account_id,
        r.skew_s,
        r.response,
        r.response_kind.map(|k| k.as_str()),
        duplicate_of,
        if duplicate_of.is_none() {
            r.dedupe_key.map(|k| k.to_vec())
        } else {
            None
        },
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Extended data as stored: JSON, computed once per frame (all events of a frame share it).
struct XdataJson {
    of: Option<std::sync::Arc<Vec<crate::protocol::frame::XData>>>,
    json: Option<String>,
}

impl XdataJson {
    fn get(&mut self, e: &Event) -> Option<String> {
        if e.xdata.is_empty() {
            return None;
        }
        if !self.of.as_ref().is_some_and(|o| std::sync::Arc::ptr_eq(o, &e.xdata)) {
            self.of = Some(e.xdata.clone());
            self.json = serde_json::to_string(&*e.xdata).ok();
        }
        self.json.clone()
    }
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    frame_id: i64,
    r: &FrameRecord,
    e: &Event,
    account_prev: Option<i64>,
    alarm: Option<AlarmLink>,
    xdata_json: &mut XdataJson,
) -> Result<i64, StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (frame_id, received_ms, account, account_id, receiver, line, seq, code_format, code,
                             qualifier, category, kind, priority, description, zone, user_no, area, text,
                             occurred_ms, sent_ms, old, xdata, account_prev, alarm_id, alarm_prev)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23,
                 ?24, ?25)",
    )?;
    let (fmt, code): (_, Cow<'_, str>) = match &e.code {
        EventCode::Sia(c) => ("sia", c.as_str().into()),
        EventCode::Cid(c) => ("cid", c.to_string().into()),
        EventCode::LinkTest => ("sia", "NULL".into()),
    };
    let xdata = xdata_json.get(e);
    stmt.execute(params![
        frame_id,
        r.received_ms,
        e.account,
        r.account_id,
        e.receiver,
        e.line,
        e.seq,
        fmt,
        code,
        qualifier_str(e.qualifier),
        e.meaning.map(|m| m.category.as_str()),
        e.meaning.map(|m| m.kind.as_str()),
        e.meaning.map(|m| m.priority),
        e.describe(),
        e.zone,
        e.user,
        e.area,
        e.text,
        e.occurred.map(|t| crate::clock::unix_ms(t.to_datetime())),
        e.sent.map(|t| crate::clock::unix_ms(t.to_datetime())),
        e.old,
        xdata,
        account_prev,
        alarm.map(|a| a.alarm_id),
        alarm.and_then(|a| a.prev),
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Record traffic from an account (never moving its time back). An account deleted by an
/// import meanwhile is skipped.
fn touch_account(tx: &Connection, account_id: i64, ms: i64, polls: Option<(i64, i64)>) -> Result<(), StoreError> {
    let (n, last_poll) = match polls {
        Some((n, t)) => (n, Some(t)),
        None => (0, None),
    };
    let mut stmt = tx.prepare_cached(
        "INSERT INTO account_status (account_id, last_seen_ms, polls, last_poll_ms)
         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?1)
         ON CONFLICT (account_id) DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
             polls = polls + excluded.polls,
             last_poll_ms = nullif(max(ifnull(last_poll_ms, 0), ifnull(excluded.last_poll_ms, 0)), 0)",
    )?;
    stmt.execute(params![account_id, ms, n, last_poll])?;
    Ok(())
}

/// A poll's identity for recognising its retransmission (the first bytes of its dedupe key;
/// 0 without one, which matches nothing).
fn poll_ident(r: &FrameRecord) -> u64 {
    r.dedupe_key
        .map(|k| u64::from_be_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]))
        .unwrap_or(0)
}

/// What [`apply`] reads to decide about a clean poll: the policy, the committed last-seen
/// times and each account's last counted poll, and what this group did so far.
struct PollCtx<'a> {
    policy: PollPolicy,
    resumed: Resumed,
    last_seen: &'a LastSeen,
    idents: &'a HashMap<i64, (u64, i64)>,
    group: &'a PollGroup,
}

/// Per account, what the frames of one commit group attempt did (merged into the writer's
/// state only once the group committed).
#[derive(Debug, Default)]
struct PollGroup {
    /// Newest accepted traffic.
    seen: HashMap<i64, i64>,
    /// Last counted poll: identity and receive time.
    idents: HashMap<i64, (u64, i64)>,
}

impl PollGroup {
    /// A frame of the group was applied (and its savepoint released).
    fn note(&mut self, r: &FrameRecord, c: &Committed) {
        let Some(a) = r.account_id.filter(|_| r.outcome == Outcome::Accepted) else {
            return;
        };
        let e = self.seen.entry(a).or_insert(r.received_ms);
        *e = (*e).max(r.received_ms);
        if matches!(c.poll, PollFate::Compacted | PollFate::Kept(_)) {
            self.idents.insert(a, (poll_ident(r), r.received_ms));
        }
    }
}

fn apply(
    tx: &rusqlite::Transaction<'_>,
    r: &FrameRecord,
    dedupe: &Dedupe,
    pending: &mut HashMap<[u8; 16], (i64, i64)>,
    heads: &mut AccountHeads,
    hook: &mut dyn AfterInsert,
    polls: &PollCtx<'_>,
) -> Result<Committed, StoreError> {
    if r.outcome != Outcome::Accepted {
        let id = insert_frame(tx, r, r.outcome.as_str(), None)?;
        let c = Committed {
            frame_id: Some(id),
            ..Committed::default()
        };
        hook.after_insert(tx, r, &c)?;
        return Ok(c);
    }
    let mut kept = None;
    if let Some(aid) = r
        .account_id
        .filter(|_| r.clean_poll(polls.policy.compact_periodic_tests))
    {
        // A clean poll: its entry in the poll log is its durable trace (counted, and folded
        // into `account_status` in bulk like an event frame's time); a frame row only for the
        // polls that matter.
        let stored_before = r.dedupe_key.as_ref().and_then(|k| {
            pending
                .get(k)
                .filter(|(_, t)| r.received_ms - *t <= dedupe.window_ms)
                .map(|(id, _)| *id)
                .or_else(|| dedupe.get(k, r.received_ms))
        });
        let ident = poll_ident(r);
        let counted_before = polls
            .group
            .idents
            .get(&aid)
            .or_else(|| polls.idents.get(&aid))
            .is_some_and(|&(i, t)| ident != 0 && i == ident && r.received_ms - t <= dedupe.window_ms);
        if stored_before.is_some() || counted_before {
            let c = Committed {
                duplicate_of: stored_before,
                poll: PollFate::Retransmission,
                ..Committed::default()
            };
            hook.after_insert(tx, r, &c)?;
            return Ok(c);
        }
        tx.prepare_cached("INSERT INTO poll_log (account_id, at_ms) VALUES (?1, ?2)")?
            .execute(params![aid, r.received_ms])?;
        let prev = match (polls.last_seen.get(aid), polls.group.seen.get(&aid)) {
            (Some(a), Some(&b)) => Some(a.max(b)),
            (None, None) => {
                // Not heard since the start (and not supervised, or supervision has not loaded
                // it yet): its last time in the database, if it was ever heard.
                tx.prepare_cached("SELECT last_seen_ms FROM account_status WHERE account_id = ?1")?
                    .query_row([aid], |r| r.get(0))
                    .optional()?
            }
            (a, b) => a.or(b.copied()),
        };
        kept = keep_poll(
            &polls.policy,
            aid,
            r.received_ms,
            prev,
            r.supervision_ms,
            Some(polls.resumed),
        );
        if kept.is_none() {
            let c = Committed {
                poll: PollFate::Compacted,
                ..Committed::default()
            };
            hook.after_insert(tx, r, &c)?;
            return Ok(c);
        }
    }
    if let Some(k) = &r.dedupe_key {
        let earlier = pending
            .get(k)
            .filter(|(_, t)| r.received_ms - *t <= dedupe.window_ms)
            .map(|(id, _)| *id)
            .or_else(|| dedupe.get(k, r.received_ms));
        if let Some(orig) = earlier {
            let id = insert_frame(tx, r, "retransmission", Some(orig))?;
            return Ok(Committed {
                frame_id: Some(id),
                duplicate_of: Some(orig),
                ..Committed::default()
            });
        }
    }
    let id = match kept {
        Some(why) => insert_frame(
            tx,
            &FrameRecord {
                reason: Some(why),
                ..r.clone()
            },
            "accepted",
            None,
        )?,
        None => insert_frame(tx, r, "accepted", None)?,
    };
    let alarm = match r.events.len() {
        1 => hook.link_before_insert(tx, r)?,
        _ => None,
    };
    let mut event_ids: Vec<i64> = Vec::with_capacity(r.events.len());
    let mut xdata_json = XdataJson { of: None, json: None };
    for (i, e) in r.events.iter().enumerate() {
        // The account's previous event: an earlier one of this frame, else its head.
        let prev = r.events[..i]
            .iter()
            .zip(&event_ids)
            .rev()
            .find(|(p, _)| p.account == e.account)
            .map(|(_, &id)| id)
            .or_else(|| heads.newest(&e.account));
        event_ids.push(insert_event(tx, id, r, e, prev, alarm, &mut xdata_json)?);
    }
    let c = Committed {
        frame_id: Some(id),
        duplicate_of: None,
        event_ids,
        poll: kept.map_or(PollFate::NotPoll, PollFate::Kept),
    };
    hook.after_insert(tx, r, &c)?;
    // Remembered only once everything for this frame succeeded.
    if let Some(k) = r.dedupe_key {
        pending.insert(k, (id, r.received_ms));
    }
    heads.stage(
        r.events
            .iter()
            .map(|e| e.account.as_str())
            .zip(c.event_ids.iter().copied()),
    );
    Ok(c)
}

/// A common table expression `seen_pending(account_id, last_ms)`: the newest valid traffic per
/// account that is not in `account_status` yet (polls in `poll_log`, frames after the
/// watermark). An account's last-seen time is the later of the two; readers join this so the
/// bulk write never shows as a stale time. At most [`STATUS_FLUSH_EVERY`] of traffic.
pub const SEEN_PENDING: &str = "seen_pending(account_id, last_ms) AS MATERIALIZED (
    SELECT account_id, max(t) FROM (
        SELECT account_id, at_ms AS t FROM poll_log
        UNION ALL
        SELECT account_id, received_ms FROM frames
        WHERE id > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'status_frame_id')
          AND account_id IS NOT NULL AND outcome IN ('accepted', 'retransmission'))
    GROUP BY account_id)";

/// An account's last-seen time from `account_status st` and [`SEEN_PENDING`] `sp`.
pub const SEEN_COLUMN: &str = "nullif(max(ifnull(st.last_seen_ms, 0), ifnull(sp.last_ms, 0)), 0)";

/// How often the last-seen times of valid traffic are written to `account_status`
/// ([`WriterConfig::status_flush`]): a frame with events is itself the durable record of when
/// its account was heard, a poll (which stores no frame row) has its row in `poll_log`; so
/// the times wait and go out in bulk. With 100,000 accounts polling, a bulk write touches
/// most pages of `account_status` however few polls it carries, so it is rare: every ten
/// seconds cost about a tenth of the writes of every second (readers add what waits,
/// [`SEEN_PENDING`]; a start after a crash rebuilds it, [`recover_status`]).
pub const STATUS_FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Most accounts waiting in the backlog; past it the next group writes them.
const STATUS_MAX_PENDING: usize = 1 << 16;
/// `meta` key: every committed frame up to this id has its last-seen in `account_status`.
const STATUS_WATERMARK: &str = "status_frame_id";
/// `meta` key while a bulk write is under way: `ROWID:ACCOUNT`, the polls in `poll_log` up to
/// `ROWID` of the accounts up to `ACCOUNT` are counted in `account_status` already (the parts
/// go in account order), so a recovery does not count them twice.
const STATUS_POLLS_DONE: &str = "status_polls_done";

/// Last-seen times of committed frames and polls not yet in `account_status`. Their frame rows
/// and `poll_log` rows (account id, receive time) are committed, so after a crash
/// [`recover_status`] rebuilds the times from the frames after the watermark and from the poll
/// log: nothing a panel was ACKed for is forgotten. Writing them per frame or poll touched a
/// random `account_status` page per frame in every commit.
#[derive(Debug)]
struct StatusBacklog {
    /// Per account id its newest time; the source rows are frames.
    bulk: Bulk<i64>,
    /// The newest `poll_log` row the bulk write under way covers, read in its first part's
    /// transaction (every row there was committed and noted before it started; none was
    /// committed since).
    polls_upto: Option<i64>,
    /// Per account: polls counted (each a `poll_log` row) and the newest, since the last bulk
    /// write started.
    counts: HashMap<i64, (i64, i64)>,
    /// The counts of the bulk write under way.
    flushing_counts: HashMap<i64, (i64, i64)>,
}

impl Default for StatusBacklog {
    fn default() -> Self {
        StatusBacklog {
            bulk: Bulk::new(STATUS_FLUSH_EVERY, STATUS_MAX_PENDING),
            polls_upto: None,
            counts: HashMap::new(),
            flushing_counts: HashMap::new(),
        }
    }
}

/// What one part of a bulk write did, applied once its transaction committed.
#[derive(Debug, Clone, Copy)]
struct StatusStep {
    end: usize,
    polls_upto: i64,
}

impl StatusBacklog {
    /// A committed frame (`frame_id`) or poll (`None`, its row is in `poll_log`).
    fn note(&mut self, account_id: i64, ms: i64, frame_id: Option<i64>) {
        self.bulk.note(account_id, ms, frame_id);
    }

    /// A committed poll counted (its `poll_log` row); the account is noted too.
    fn count_poll(&mut self, account_id: i64, ms: i64) {
        let e = self.counts.entry(account_id).or_insert((0, ms));
        e.0 += 1;
        e.1 = e.1.max(ms);
    }

    /// Start a bulk write of the backlog so far, if one is due (or `now`) and none is under
    /// way; later traffic waits for the next.
    fn start(&mut self, now: bool) {
        let idle = self.bulk.flushing.is_none();
        if idle {
            self.polls_upto = None;
        }
        self.bulk.start(now);
        if idle && self.bulk.flushing.is_some() {
            self.flushing_counts = std::mem::take(&mut self.counts);
        }
    }

    /// Write the next part of the bulk write under way (`all`: the rest), in the caller's
    /// transaction before any frame of it; the last part moves the watermark and empties the
    /// poll log up to the rows it covers.
    fn write(&self, tx: &rusqlite::Transaction<'_>, all: bool) -> Result<Option<StatusStep>, StoreError> {
        let Some(part) = self.bulk.part(all) else {
            return Ok(None);
        };
        let polls_upto = match self.polls_upto {
            Some(p) => p,
            None => tx
                .prepare_cached("SELECT ifnull(max(rowid), 0) FROM poll_log")?
                .query_row([], |r| r.get(0))?,
        };
        for &(account_id, ms) in part.rows {
            touch_account(tx, account_id, ms, self.flushing_counts.get(&account_id).copied())?;
        }
        if part.last {
            tx.prepare_cached("DELETE FROM poll_log WHERE rowid <= ?1")?
                .execute([polls_upto])?;
            tx.prepare_cached("DELETE FROM meta WHERE key = ?1")?
                .execute([STATUS_POLLS_DONE])?;
            set_watermark(tx, STATUS_WATERMARK, part.upto)?;
        } else if let Some(&(last_account, _)) = part.rows.last() {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![STATUS_POLLS_DONE, format!("{polls_upto}:{last_account}")])?;
        }
        Ok(Some(StatusStep {
            end: part.end,
            polls_upto,
        }))
    }

    /// The transaction holding `step` committed.
    fn written(&mut self, step: StatusStep) {
        self.bulk.written(step.end);
        self.polls_upto = self.bulk.flushing.is_some().then_some(step.polls_upto);
        if self.bulk.flushing.is_none() {
            self.flushing_counts = HashMap::new();
        }
    }
}

/// Bring `account_status` up to date with the frames committed after the watermark and the
/// polls in the poll log (the backlog a crash or kill left unwritten). A database without a
/// watermark was written frame by frame, so its frames are up to date. Returns how many
/// accounts' last-seen times were written.
pub fn recover_status(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let newest: i64 = tx.query_row("SELECT ifnull(max(id), 0) FROM frames", [], |r| r.get(0))?;
    // What readers add to `account_status` is exactly what is missing from it (no watermark:
    // no frame is missing).
    let rows: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare(&format!(
            "WITH {SEEN_PENDING} SELECT account_id, last_ms FROM seen_pending"
        ))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    // The polls to count: all in the log but those a bulk write under way counted already.
    let done: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [STATUS_POLLS_DONE], |r| {
            r.get(0)
        })
        .optional()?;
    let (done_upto, done_account) = done
        .as_deref()
        .and_then(|v| v.split_once(':'))
        .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)))
        .unwrap_or((0, 0));
    let counts: HashMap<i64, (i64, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT account_id, count(*), max(at_ms) FROM poll_log
             WHERE NOT (rowid <= ?1 AND account_id <= ?2) GROUP BY account_id",
        )?;
        stmt.query_map([done_upto, done_account], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
            .collect::<Result<_, _>>()?
    };
    for &(account_id, ms) in &rows {
        touch_account(&tx, account_id, ms, counts.get(&account_id).copied())?;
    }
    tx.execute("DELETE FROM poll_log", [])?;
    tx.execute("DELETE FROM meta WHERE key = ?1", [STATUS_POLLS_DONE])?;
    set_watermark(&tx, STATUS_WATERMARK, newest)?;
    tx.commit()?;
    Ok(rows.len())
}

type Outcomes = Vec<Option<Result<Committed, Arc<StoreError>>>>;

/// Why a group attempt did not commit.
enum GroupFailure {
    /// A frame failed in an attempt without savepoints: run the group again with them.
    Retry,
    /// The transaction failed as a whole.
    Store(StoreError),
}

impl<E: Into<StoreError>> From<E> for GroupFailure {
    fn from(e: E) -> Self {
        GroupFailure::Store(e.into())
    }
}

/// One attempt at a commit group. With `careful`, every frame and job runs in its own
/// savepoint, so one that cannot be stored is refused alone. Without, the frames run straight
/// (no savepoint statements, no sub-journal copy of every page a frame first touches) and the
/// first failure abandons the attempt, which the caller repeats carefully. Jobs always need
/// `careful` (a job runs once). Returns what each item got and which parts of the bulk writes
/// it wrote.
#[allow(clippy::too_many_arguments)]
fn run_group(
    conn: &mut Connection,
    batch: &mut [Item],
    dedupe: &Dedupe,
    pending: &mut HashMap<[u8; 16], (i64, i64)>,
    heads: &mut AccountHeads,
    hook: &mut dyn AfterInsert,
    status: &StatusBacklog,
    polls: &PollState,
    careful: bool,
) -> Result<(Outcomes, BulkSteps, PollGroup), GroupFailure> {
    let mut group = PollGroup::default();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    hook.begin(&tx)?;
    let steps = BulkSteps {
        status: status.write(&tx, false)?,
        heads: heads.write(&tx, false)?,
    };
    let mut out = Vec::with_capacity(batch.len());
    for item in batch.iter_mut() {
        match item {
            Item::Frame(rec, _) if !careful => {
                match apply(&tx, rec, dedupe, pending, heads, hook, &polls.ctx(&group)) {
                    Ok(c) => {
                        group.note(rec, &c);
                        out.push(Some(Ok(c)));
                    }
                    Err(_) => return Err(GroupFailure::Retry),
                }
            }
            Item::Frame(rec, _) => {
                // Each frame in its own savepoint: one frame that cannot be stored is refused
                // alone (no ACK; the panel retries) instead of taking the whole group down with
                // it, again at every resend.
                tx.prepare_cached("SAVEPOINT frame")?.execute([])?;
                match apply(&tx, rec, dedupe, pending, heads, hook, &polls.ctx(&group)) {
                    Ok(c) => {
                        tx.prepare_cached("RELEASE frame")?.execute([])?;
                        group.note(rec, &c);
                        out.push(Some(Ok(c)));
                    }
                    Err(e) => {
                        // If even the rollback fails (disk full, I/O error: the transaction is
                        // gone), the whole group fails.
                        hook.forget();
                        tx.execute_batch("ROLLBACK TO frame; RELEASE frame")?;
                        tracing::warn!(error = %e, "a frame could not be stored; not acknowledged");
                        out.push(Some(Err(Arc::new(e))));
                    }
                }
            }
            Item::Job(job) => {
                tx.execute_batch("SAVEPOINT job")?;
                hook.before_job(&tx)?;
                if job.run(&tx) {
                    hook.after_job(&tx)?;
                    tx.execute_batch("RELEASE job")?;
                } else {
                    hook.forget();
                    tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                }
                out.push(None);
            }
        }
    }
    tx.commit()?;
    Ok((out, steps, group))
}

/// The writer's view of the polls: the policy, the committed last-seen times (shared with
/// supervision) and each account's last counted poll (one entry per account that polled since
/// the start: bounded by the accounts).
struct PollState {
    policy: PollPolicy,
    resumed: Resumed,
    last_seen: Arc<LastSeen>,
    idents: HashMap<i64, (u64, i64)>,
}

impl PollState {
    fn ctx<'a>(&'a self, group: &'a PollGroup) -> PollCtx<'a> {
        PollCtx {
            policy: self.policy,
            resumed: self.resumed,
            last_seen: &self.last_seen,
            idents: &self.idents,
            group,
        }
    }
}

/// The parts of the bulk writes a commit group carried.
struct BulkSteps {
    status: Option<StatusStep>,
    heads: Option<HeadsStep>,
}

/// Start the writer thread. Returns the handle receivers submit through and the thread's join
/// handle; the thread ends when every handle is dropped and the queue is drained.
pub fn start(
    cfg: WriterConfig,
    now_ms: i64,
    metrics: Arc<Metrics>,
    mut hook: Box<dyn AfterInsert>,
) -> Result<(WriterHandle, std::thread::JoinHandle<()>), StoreError> {
    let mut conn = super::open_write(&cfg.path, cfg.busy_timeout)?;
    let recovered = recover_status(&mut conn)?;
    if recovered > 0 {
        tracing::info!(
            accounts = recovered,
            "last-seen times recovered from frames after an unclean stop"
        );
    }
    let checkpointer = super::checkpoint::install(&mut conn, &cfg.path, cfg.busy_timeout, cfg.wal)?;
    let window_ms = cfg.retransmission_window.as_millis() as i64;
    let mut dedupe = load_dedupe(&conn, now_ms, window_ms, cfg.max_dedupe_entries)?;
    let mut heads = AccountHeads::load(&conn, cfg.status_flush)?;
    let (tx, mut rx) = mpsc::channel::<Msg>(cfg.queue_depth.max(1));
    let m = metrics.clone();
    let max_batch = cfg.max_batch.max(1);
    let last_seen = cfg.last_seen.clone().unwrap_or_default();
    let down_since_ms = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
            [RECEIVING_KEY],
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    let mut polls = PollState {
        policy: cfg.polls,
        resumed: Resumed {
            down_since_ms,
            started_ms: now_ms,
        },
        last_seen: last_seen.clone(),
        idents: HashMap::new(),
    };
    let changes = cfg.changes.clone();
    let status_flush = cfg.status_flush;
    let join = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let mut batch: Vec<Item> = Vec::with_capacity(max_batch);
            let mut status = StatusBacklog::default();
            status.bulk.every = status_flush;
            let mut stopping = false;
            // Liveness pings taken with this group, answered when it is done.
            let mut pings: Vec<oneshot::Sender<()>> = Vec::new();
            let take = |m: Msg, batch: &mut Vec<Item>, pings: &mut Vec<oneshot::Sender<()>>| -> bool {
                match m {
                    Msg::Frame(r, reply) => batch.push(Item::Frame(r, reply)),
                    Msg::Job(j) => batch.push(Item::Job(j)),
                    Msg::Ping(p) => pings.push(p),
                    Msg::Stop => return false,
                }
                true
            };
            while !stopping {
                match rx.blocking_recv() {
                    Some(m) => {
                        if !take(m, &mut batch, &mut pings) {
                            break;
                        }
                    }
                    None => break,
                }
                // Behind (more than BACKLOG_AFTER groups queued, as under a poll storm of a
                // million accounts): take up to BACKLOG_FACTOR groups at once, one flush for
                // all, so that the queue drains at the disk's pace rather than max_batch
                // frames per flush. A closed-loop load (every connection waiting for its
                // answer) never queues that much and keeps max_batch.
                let limit = if rx.len() >= BACKLOG_AFTER * max_batch {
                    max_batch * BACKLOG_FACTOR
                } else {
                    max_batch
                };
                while batch.len() < limit {
                    match rx.try_recv() {
                        Ok(m) => {
                            if !take(m, &mut batch, &mut pings) {
                                stopping = true;
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    // Only pings: nothing to commit.
                    for p in pings.drain(..) {
                        let _ = p.send(());
                    }
                    continue;
                }
                m.queue_depth.add(-(batch.len() as i64));
                let started = Instant::now();
                let mut pending = HashMap::new();
                // Jobs run once, so a group with one starts careful; otherwise optimistic, and
                // careful only if a frame failed (nothing of the first attempt was kept).
                let mut careful = batch.iter().any(|i| matches!(i, Item::Job(_)));
                status.start(false);
                heads.start(false);
                let attempt = loop {
                    match run_group(
                        &mut conn,
                        &mut batch,
                        &dedupe,
                        &mut pending,
                        &mut heads,
                        hook.as_mut(),
                        &status,
                        &polls,
                        careful,
                    ) {
                        Err(GroupFailure::Retry) if !careful => {
                            hook.forget();
                            heads.discard();
                            pending.clear();
                            m.group_retries.add(1);
                            careful = true;
                        }
                        r => break r,
                    }
                };
                let result = attempt.map_err(|f| match f {
                    GroupFailure::Store(e) => e,
                    // A careful attempt refuses a failing frame alone and never asks for this.
                    GroupFailure::Retry => StoreError::WriterGone,
                });
                m.commit_latency.observe(started.elapsed());
                match result {
                    Ok((done, steps, group)) => {
                        m.observe_batch(batch.len());
                        polls.idents.extend(group.idents);
                        if let Some(step) = steps.status {
                            status.written(step);
                        }
                        if let Some(step) = steps.heads {
                            heads.written(step);
                        }
                        heads.committed();
                        let newest = batch
                            .iter()
                            .filter_map(|i| match i {
                                Item::Frame(r, _) => Some(r.received_ms),
                                Item::Job(_) => None,
                            })
                            .max()
                            .unwrap_or(0);
                        for (k, (id, t)) in pending.drain() {
                            dedupe.insert(k, id, t);
                        }
                        if newest > 0 {
                            dedupe.expire(newest);
                        }
                        if let Some(c) = &changes {
                            c.send_modify(|v| *v = v.wrapping_add(1));
                        }
                        // Valid traffic per account: (account, received, frame row; none for a poll).
                        let heard = batch.iter().zip(&done).filter_map(|(i, d)| match (i, d) {
                            (Item::Frame(r, _), Some(Ok(c))) if r.outcome == Outcome::Accepted => {
                                r.account_id.map(|a| (a, r.received_ms, c.frame_id))
                            }
                            _ => None,
                        });
                        for (a, ms, frame) in heard.clone() {
                            status.note(a, ms, frame);
                        }
                        last_seen.record(heard.map(|(a, ms, _)| (a, ms)));
                        last_seen
                            .1
                            .record(batch.iter().zip(&done).filter_map(|(i, d)| match (i, d) {
                                (Item::Frame(r, _), Some(Ok(_))) if r.outcome == Outcome::Accepted => {
                                    r.account_id.map(|a| (a, &**r))
                                }
                                _ => None,
                            }));
                        // Every poll counted wrote a `poll_log` row in this group.
                        for (i, d) in batch.iter().zip(&done) {
                            if let (Item::Frame(r, _), Some(Ok(c))) = (i, d) {
                                let fate = match c.poll {
                                    PollFate::NotPoll => continue,
                                    PollFate::Compacted => "compacted",
                                    PollFate::Kept(_) => "kept",
                                    PollFate::Retransmission => "retransmission",
                                };
                                m.polls.inc(fate);
                                if let (Some(a), PollFate::Compacted | PollFate::Kept(_)) = (r.account_id, c.poll) {
                                    status.count_poll(a, r.received_ms);
                                }
                            }
                        }
                        for (item, c) in batch.drain(..).zip(done) {
                            match (item, c) {
                                (Item::Frame(record, reply), Some(Err(e))) => {
                                    m.refusals.inc("commit_failed");
                                    let _ = reply.send(Answer { result: Err(e), record });
                                }
                                (Item::Frame(record, reply), Some(Ok(c))) => {
                                    if c.duplicate_of.is_some() || c.poll == PollFate::Retransmission {
                                        m.retransmissions.add(1);
                                    }
                                    for _ in &c.event_ids {
                                        m.events.inc("stored");
                                    }
                                    let _ = reply.send(Answer { result: Ok(c), record });
                                }
                                (Item::Job(job), _) => job.finish(Ok(())),
                                (Item::Frame(record, reply), None) => {
                                    let _ = reply.send(Answer {
                                        result: Err(Arc::new(StoreError::WriterGone)),
                                        record,
                                    });
                                }
                            }
                        }
                    }
                    Err(e) => {
                        hook.forget();
                        heads.discard();
                        let e = Arc::new(e);
                        m.refusals.inc("commit_failed");
                        for item in batch.drain(..) {
                            match item {
                                Item::Frame(record, reply) => {
                                    let _ = reply.send(Answer {
                                        result: Err(e.clone()),
                                        record,
                                    });
                                }
                                Item::Job(job) => job.finish(Err(e.clone())),
                            }
                        }
                        // A failed commit (disk full, I/O error) leaves nothing half-done: the
                        // transaction rolled back when it was dropped. Pause briefly so a
                        // persistent fault does not spin.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                for p in pings.drain(..) {
                    let _ = p.send(());
                }
            }
            // A clean stop leaves no backlog (a crash leaves one that the next start recovers).
            // (At most two bulk writes: the one under way, then the backlog noted since.)
            for _ in 0..2 {
                status.start(true);
                heads.start(true);
                let r = conn.transaction().map_err(StoreError::from).and_then(|tx| {
                    let steps = BulkSteps {
                        status: status.write(&tx, true)?,
                        heads: heads.write(&tx, true)?,
                    };
                    tx.commit()?;
                    Ok(steps)
                });
                match r {
                    Ok(BulkSteps {
                        status: None,
                        heads: None,
                    }) => break,
                    Ok(steps) => {
                        if let Some(step) = steps.status {
                            status.written(step);
                        }
                        if let Some(step) = steps.heads {
                            heads.written(step);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "last-seen times not written at stop; the next start recovers them");
                        break;
                    }
                }
            }
            // Removing the hook drops the checkpointer's wake-up; it ends, then the writer's
            // connection closes last (SQLite checkpoints and removes the WAL on that close).
            let _ = conn.wal_hook(None::<fn(&mut rusqlite::hooks::Wal, std::ffi::c_int) -> rusqlite::Result<()>>);
            let _ = checkpointer.join();
        })
        .map_err(|_| StoreError::WriterGone)?;
    Ok((WriterHandle { tx, metrics }, join))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OptionalExtension;

    /// Fails the frames of account "BAD" (as a constraint or correlation error would).
    struct FailBad;

    impl AfterInsert for FailBad {
        fn after_insert(
            &mut self,
            _: &rusqlite::Transaction<'_>,
            r: &FrameRecord,
            _: &Committed,
        ) -> Result<(), StoreError> {
            if r.account.as_deref() == Some("BAD") {
                return Err(StoreError::Pragma("simulated failure"));
            }
            Ok(())
        }
    }

    fn record(account: &str, seq: u16) -> FrameRecord {
        let mut r = FrameRecord::new(
            1_000,
            Transport::Tcp,
            "127.0.0.1:1".into(),
            b"x".to_vec(),
            Outcome::Accepted,
        );
        r.account = Some(account.into());
        r.seq = Some(seq);
        r.dedupe_key = Some(dedupe_key(account, None, "0", seq, b"payload"));
        r
    }

    /// Each account counts once, on the receiver line it was last heard over, whatever the
    /// transport and network: the whole of a line for a mass loss of that line.
    #[test]
    fn routes_count_each_account_on_the_line_it_was_last_heard_over() {
        let over = |transport: Transport, peer: &str, line: &str| {
            let mut r = FrameRecord::new(1_000, transport, peer.into(), Vec::new(), Outcome::Accepted);
            r.receiver = Some("1".into());
            r.line = Some(line.into());
            r
        };
        let routes = Routes::default();
        let (l1_tcp, l1_udp, l2) = (
            over(Transport::Tcp, "10.0.0.1:1", "1"),
            over(Transport::Udp, "10.9.0.1:1", "1"),
            over(Transport::Tcp, "10.0.0.1:1", "2"),
        );
        routes.record([(1, &l1_tcp), (2, &l1_udp), (3, &l1_tcp), (4, &l2)].into_iter());
        // Account 3 moves to line 2, account 2 reports again over the same route.
        routes.record([(3, &l2), (2, &l1_udp)].into_iter());
        let line = |l: &str| ReceiverLine {
            receiver: "1".into(),
            line: l.into(),
        };
        let totals = routes.line_totals();
        assert_eq!(totals.get(&line("1")), Some(&2));
        assert_eq!(totals.get(&line("2")), Some(&2));
        assert_eq!(totals.len(), 2);
        assert_eq!(routes.of(3).map(|r| r.receiver_line()), Some(line("2")));
    }

    /// Writer settings for a test database: no last-seen map, no change notices.
    fn test_config(path: &std::path::Path, max_batch: usize) -> WriterConfig {
        WriterConfig {
            path: path.to_path_buf(),
            queue_depth: 64,
            max_batch,
            busy_timeout: Duration::from_secs(5),
            retransmission_window: Duration::from_secs(600),
            max_dedupe_entries: 1000,
            last_seen: None,
            changes: None,
            wal: Default::default(),
            status_flush: STATUS_FLUSH_EVERY,
            polls: PollPolicy::default(),
        }
    }

    /// A writer on a new database `w.db` in a temporary directory, with [`test_config`].
    fn test_writer(
        max_batch: usize,
        hook: Box<dyn AfterInsert>,
    ) -> (
        tempfile::TempDir,
        Arc<Metrics>,
        WriterHandle,
        std::thread::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let (w, join) = start(
            test_config(&dir.path().join("w.db"), max_batch),
            0,
            metrics.clone(),
            hook,
        )
        .expect("writer");
        (dir, metrics, w, join)
    }

    /// A job that holds the writer (inside its own commit group) until the test releases it,
    /// so that what the test submits meanwhile queues up behind it. No sleeps: the job says when
    /// it runs and waits for the word to end.
    struct Held {
        release: std::sync::mpsc::Sender<()>,
        job: tokio::task::JoinHandle<Result<(), Arc<StoreError>>>,
    }

    impl Held {
        /// Submit the job and return once the writer runs it.
        async fn start(w: &WriterHandle) -> Self {
            let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
            let (release, release_rx) = std::sync::mpsc::channel::<()>();
            let w = w.clone();
            let job = tokio::spawn(async move {
                w.run(move |_| {
                    started_tx.send(()).expect("test waits");
                    release_rx.recv().expect("test releases");
                    Ok(())
                })
                .await
            });
            tokio::task::spawn_blocking(move || started_rx.recv().expect("job started"))
                .await
                .expect("join");
            Held { release, job }
        }

        /// Let the job end and wait for its commit.
        async fn release(self) {
            self.release.send(()).expect("job waits");
            self.job.await.expect("job").expect("job ran");
        }
    }

    /// A frame that cannot be stored must not take the other frames of its group down with it
    /// (else it would do so again at every resend: "batch poisoning").
    #[tokio::test]
    async fn one_failing_frame_does_not_poison_its_group() {
        let (dir, metrics, w, join) = test_writer(64, Box::new(FailBad));
        // Hold the writer with a job (a group of its own) so the frames queue up behind it and
        // commit as one group without a job.
        let held = Held::start(&w).await;
        let g1 = w.enqueue(record("GOOD", 1)).await.expect("queued");
        let b = w.enqueue(record("BAD", 2)).await.expect("queued");
        let g2 = w.enqueue(record("GOOD", 3)).await.expect("queued");
        held.release().await;
        let (g1, b, g2) = tokio::join!(g1, b, g2);
        assert!(g1.expect("reply").result.is_ok());
        let b = b.expect("reply");
        assert!(b.result.is_err(), "the failing frame is refused (no ACK)");
        assert_eq!(
            b.record.account.as_deref(),
            Some("BAD"),
            "the record comes back with its answer"
        );
        assert!(g2.expect("reply").result.is_ok());
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).expect("db");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM frames", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2, "both good frames stored, the failing one not at all");
        // Two groups: the job's, then the three frames together, which ran without savepoints
        // first and then again frame by frame.
        assert_eq!(metrics.batch_size.count(), 2);
        assert_eq!(metrics.batch_size.at_most(2.0), Some(1), "the frames in one group");
        assert_eq!(metrics.group_retries.get(), 1);
    }

    /// A queue longer than `max_batch` is committed in groups of at most `max_batch` frames.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_holds_at_most_max_batch_frames() {
        let (_dir, metrics, w, join) = test_writer(4, Box::new(NoHook));
        // A job holds the writer until all ten frames are queued behind it.
        let held = Held::start(&w).await;
        let mut answers = Vec::new();
        for seq in 0..10 {
            answers.push(w.enqueue(record("A1", seq)).await.expect("queued"));
        }
        held.release().await;
        for a in answers {
            assert!(a.await.expect("reply").result.is_ok());
        }
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
        // Groups: the job's, then 4 + 4 + 2 frames.
        let sizes = &metrics.batch_size;
        assert_eq!(sizes.count(), 4);
        assert_eq!(sizes.at_most(4.0), Some(4), "no group of more than four");
        assert_eq!(sizes.at_most(2.0), Some(2), "the job's group and the last two frames");
    }

    /// Behind by more than [`BACKLOG_AFTER`] groups, the writer takes up to
    /// [`BACKLOG_FACTOR`] groups for one flush.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_is_committed_in_larger_groups() {
        let (_dir, metrics, w, join) = test_writer(4, Box::new(NoHook));
        let held = Held::start(&w).await;
        let mut answers = Vec::new();
        for seq in 0..60 {
            answers.push(w.enqueue(record("A1", seq)).await.expect("queued"));
        }
        held.release().await;
        for a in answers {
            assert!(a.await.expect("reply").result.is_ok());
        }
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
        // Groups: the job's, then all 60 frames at once (the queue 15 groups deep; without
        // the backlog rule, 15 groups of 4).
        let sizes = &metrics.batch_size;
        assert_eq!(sizes.count(), 2);
        assert_eq!(sizes.at_most(1.0), Some(1), "the job's group");
        assert_eq!(
            sizes.at_most(32.0),
            Some(1),
            "no group of max_batch or less but the job's"
        );
        assert_eq!(sizes.at_most(64.0), Some(2));
    }

    /// Time the daemon was not receiving is not a silence of the panel (supervision's restart
    /// rule): a poll within one interval of the start after an outage is not the first after
    /// a loss, unless the account was overdue before the outage began.
    #[test]
    fn a_poll_after_an_outage_is_not_a_loss_unless_it_was_overdue_before() {
        let policy = PollPolicy {
            sample_ms: 0,
            ..PollPolicy::default()
        };
        let i = Some(90_000);
        let resumed = Some(Resumed {
            down_since_ms: Some(1_050_000),
            started_ms: 1_600_000,
        });
        // Heard at 1,000 s, deadline 1,090 s fell in the outage (down from 1,050 s to 1,600 s).
        assert_eq!(keep_poll(&policy, 7, 1_650_000, Some(1_000_000), i, resumed), None);
        assert_eq!(
            keep_poll(&policy, 7, 1_700_000, Some(1_000_000), i, resumed),
            Some(KEPT_AFTER_LOSS),
            "silent for more than an interval after the start"
        );
        // Overdue at 990 s, before the outage began: a loss as always.
        assert_eq!(
            keep_poll(&policy, 7, 1_650_000, Some(900_000), i, resumed),
            Some(KEPT_AFTER_LOSS)
        );
        // Without an outage to account for, the silence counts from the last poll.
        assert_eq!(
            keep_poll(&policy, 7, 1_650_000, Some(1_000_000), i, None),
            Some(KEPT_AFTER_LOSS)
        );
        // No previous run recorded: the silence counts from the start.
        let first = Some(Resumed {
            down_since_ms: None,
            started_ms: 1_600_000,
        });
        assert_eq!(keep_poll(&policy, 7, 1_650_000, Some(1_000_000), i, first), None);
    }

    /// Each account keeps its daily sample at its own moment of the day: of 24,000 accounts
    /// polling through one day, about a 24th keep it in any one hour (not all of them after
    /// midnight), and every account keeps exactly one.
    #[test]
    fn daily_samples_are_spread_over_the_day() {
        let policy = PollPolicy::default();
        let day = policy.sample_ms;
        let mut per_hour = [0u32; 24];
        for aid in 1..=24_000i64 {
            let mut kept = 0;
            // Polls every 90 s through one day, the first of them at midnight.
            let mut prev = 20_000 * day - 90_000;
            for k in 0..(day / 90_000) {
                let now = 20_000 * day + k * 90_000;
                if keep_poll(&policy, aid, now, Some(prev), None, None) == Some(KEPT_SAMPLE) {
                    kept += 1;
                    per_hour[(k * 90_000 / 3_600_000) as usize] += 1;
                }
                prev = now;
            }
            assert_eq!(kept, 1, "account {aid}");
        }
        for (h, n) in per_hour.iter().enumerate() {
            assert!((800..1_200).contains(n), "hour {h}: {n} samples of 24,000");
        }
    }

    /// A writer on a new database with accounts 1..=n ("A1", "A2", …) whose status backlog
    /// goes out with the second group and then only once an hour.
    fn writer_with(
        path: &std::path::Path,
        accounts: i64,
        wal: super::super::checkpoint::WalLimits,
    ) -> (WriterHandle, std::thread::JoinHandle<()>) {
        let conn = super::super::open_write(path, Duration::from_secs(5)).expect("db");
        for i in 1..=accounts {
            conn.execute(
                "INSERT INTO accounts (id, account) VALUES (?1, ?2)",
                params![i, format!("A{i}")],
            )
            .expect("account");
        }
        // Closed first (the last connection): the setup's WAL goes into the database.
        drop(conn);
        writer_on(path, wal)
    }

    /// A writer (backlogs as in [`writer_with`]) on an existing database.
    fn writer_on(
        path: &std::path::Path,
        wal: super::super::checkpoint::WalLimits,
    ) -> (WriterHandle, std::thread::JoinHandle<()>) {
        let cfg = WriterConfig {
            wal,
            status_flush: Duration::from_secs(3600),
            ..test_config(path, 64)
        };
        start(cfg, 0, Arc::new(Metrics::default()), Box::new(NoHook)).expect("writer")
    }

    fn event_frame(account_id: i64, seq: u16, at_ms: i64) -> FrameRecord {
        let mut r = record(&format!("A{account_id}"), seq);
        r.account_id = Some(account_id);
        r.received_ms = at_ms;
        r
    }

    /// An event frame of account `A{account_id}` with `n` burglary events, zones 1…n.
    fn alarm_frame(account_id: i64, seq: u16, n: usize) -> FrameRecord {
        let mut r = event_frame(account_id, seq, 1_000 + i64::from(seq));
        r.events = (1..=n)
            .map(|z| Event::sia_for_tests(&format!("A{account_id}"), seq, b"BA", &z.to_string()))
            .collect();
        r
    }

    /// (seq, zone) of an account's events as the operator's search finds them, newest first.
    fn searched(conn: &Connection, account: &str, limit: u32) -> Vec<(i64, String)> {
        let mut stmt = conn
            .prepare(&crate::store::heads::search_sql("e.seq, e.zone"))
            .expect("search");
        stmt.query_map(params![account, limit], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// Every account's events, newest first, compared with a plain scan of the table (the
    /// truth the chain must give).
    fn check_search(conn: &Connection, accounts: i64) {
        for a in 1..=accounts {
            let account = format!("A{a}");
            let mut stmt = conn
                .prepare("SELECT seq, zone FROM events WHERE account = ?1 ORDER BY id DESC")
                .expect("scan");
            let all: Vec<(i64, String)> = stmt
                .query_map([&account], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert_eq!(searched(conn, &account, 1000), all, "{account}");
            assert_eq!(
                searched(conn, &account, 2),
                all.iter().take(2).cloned().collect::<Vec<_>>(),
                "{account}, limit 2"
            );
        }
    }

    /// An account's events are found newest first from its chain: before the bulk write of
    /// the heads (the newest events only after the watermark), after it, after a crash that
    /// left the heads unwritten (the next writer picks them up from the events), and after a
    /// clean stop. Frames of several events, accounts interleaved, a frame refused in its group.
    #[tokio::test]
    async fn an_accounts_events_are_found_newest_first_across_bulk_writes_and_crashes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let (w, _join) = writer_with(&path, 3, Default::default());
        let conn = Connection::open(&path).expect("db");
        let heads = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM account_heads", [], |r| r.get(0))
                .expect("heads")
        };
        // The first group's heads go out with the second group; later ones wait an hour.
        w.submit(alarm_frame(1, 1, 1)).await.expect("stored");
        w.submit(alarm_frame(2, 2, 2)).await.expect("stored");
        assert_eq!(heads(&conn), 1);
        w.submit(alarm_frame(1, 3, 3)).await.expect("stored");
        w.submit(alarm_frame(3, 4, 1)).await.expect("stored");
        w.submit(alarm_frame(1, 5, 1)).await.expect("stored");
        assert_eq!(heads(&conn), 1, "the later heads wait");
        check_search(&conn, 3);
        assert_eq!(
            searched(&conn, "A1", 1000),
            vec![
                (5, "1".into()),
                (3, "3".into()),
                (3, "2".into()),
                (3, "1".into()),
                (1, "1".into())
            ]
        );
        assert!(searched(&conn, "A9", 10).is_empty());
        // "Crash": the writer is never stopped (it would write the heads); a new one loads
        // them from the events after the watermark.
        let _crashed = w;
        let (w, join) = writer_on(&path, Default::default());
        w.submit(alarm_frame(2, 6, 1)).await.expect("stored");
        w.submit(alarm_frame(1, 7, 1)).await.expect("stored");
        check_search(&conn, 3);
        assert_eq!(heads(&conn), 3, "the first group after a start writes what waited");
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
        check_search(&conn, 3);
        let (mark, newest): (String, i64) = conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'heads_event_id'), max(id) FROM events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("watermark");
        assert_eq!(mark, newest.to_string(), "a clean stop leaves every head written");
    }

    fn status(conn: &Connection) -> Vec<(i64, i64)> {
        let mut stmt = conn
            .prepare("SELECT account_id, last_seen_ms FROM account_status ORDER BY account_id")
            .expect("query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn poll_log_len(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM poll_log", [], |r| r.get(0))
            .expect("count")
    }

    /// An event frame's last-seen time is written in bulk, later; a crash before that must not
    /// lose it (supervision after a restart would raise a false "communication lost"). The
    /// frame rows are the durable record: the next start rebuilds the times from them.
    #[tokio::test]
    async fn last_seen_of_event_frames_survives_a_crash_before_the_bulk_write() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let (w, _join) = writer_with(&path, 3, Default::default());
        // The first group's times go out with the second group; the later groups' times wait
        // in memory (the next bulk write is an hour away).
        w.submit(event_frame(1, 1, 5_000)).await.expect("stored");
        w.submit(event_frame(3, 2, 6_000)).await.expect("stored");
        w.submit(event_frame(1, 3, 9_000)).await.expect("stored");
        w.submit(event_frame(2, 4, 9_500)).await.expect("stored");
        let mut poll = event_frame(3, 5, 9_900);
        poll.link_test_only = true;
        w.submit(poll).await.expect("stored");
        // "Crash": the writer is never stopped; a new process opens the database.
        let mut conn = super::super::open_write(&path, Duration::from_secs(5)).expect("db");
        let before = status(&conn);
        assert!(
            before.iter().all(|&(a, t)| (a, t) != (1, 9_000) && a != 2),
            "the newest times are not written yet: {before:?}"
        );
        assert!(
            !before.contains(&(3, 9_900)),
            "a poll waits in the poll log: {before:?}"
        );
        let n = recover_status(&mut conn).expect("recover");
        assert!(n >= 3);
        assert_eq!(status(&conn), vec![(1, 9_000), (2, 9_500), (3, 9_900)]);
        assert_eq!(poll_log_len(&conn), 0, "recovery empties the poll log");
        // Recovery moved the watermark: a second start finds nothing to do.
        assert_eq!(recover_status(&mut conn).expect("recover"), 0);
    }

    /// Before the bulk write, whoever reads an account's last-seen time (the overdue list, the
    /// customer view, supervision loading its deadlines) still gets the newest traffic.
    #[tokio::test]
    async fn readers_see_last_seen_times_before_the_bulk_write() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let (w, _join) = writer_with(&path, 2, Default::default());
        let conn = Connection::open(&path).expect("db");
        conn.execute("UPDATE accounts SET supervision_secs = 60", [])
            .expect("supervised");
        w.submit(event_frame(1, 1, 5_000)).await.expect("stored");
        w.submit(event_frame(1, 2, 9_000)).await.expect("stored");
        let mut poll = event_frame(2, 3, 8_000);
        poll.link_test_only = true;
        w.submit(poll).await.expect("stored");
        assert!(
            !status(&conn).contains(&(1, 9_000)) && !status(&conn).iter().any(|s| s.0 == 2),
            "still waiting for the bulk write: {:?}",
            status(&conn)
        );
        let overdue = crate::operator::queries::overdue(&conn, 1_000_000).expect("overdue");
        let mut seen: Vec<(String, Option<String>)> = overdue.into_iter().map(|o| (o.account, o.last_seen)).collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("A1".to_string(), Some(crate::clock::rfc3339_ms(9_000))),
                ("A2".to_string(), Some(crate::clock::rfc3339_ms(8_000))),
            ]
        );
        let ls = LastSeen::default();
        let d = crate::correlate::supervision::load(&conn, &ls).expect("deadlines");
        assert_eq!(d.len(), 2);
        assert_eq!(ls.get(1), Some(9_000));
        assert_eq!(ls.get(2), Some(8_000));
    }

    /// A bulk write larger than one part goes out over several commits; the watermark and the
    /// poll log move only with the last, and a poll logged meanwhile stays for the next.
    #[test]
    fn a_large_bulk_write_is_spread_over_several_commits() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = super::super::open_write(&dir.path().join("w.db"), Duration::from_secs(5)).expect("db");
        let n = crate::store::bulk::CHUNK as i64 * 2 + 100;
        let mut backlog = StatusBacklog::default();
        for a in 1..=n {
            conn.execute(
                "INSERT INTO accounts (id, account) VALUES (?1, ?2)",
                params![a, format!("A{a}")],
            )
            .expect("account");
            conn.execute(
                "INSERT INTO poll_log (account_id, at_ms) VALUES (?1, ?2)",
                params![a, 1_000 + a],
            )
            .expect("poll");
            backlog.note(a, 1_000 + a, None);
        }
        backlog.note(1, 900, Some(77));
        let watermark = |c: &Connection| -> Option<String> {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [STATUS_WATERMARK], |r| {
                r.get(0)
            })
            .optional()
            .expect("meta")
        };
        let seen_everywhere = |c: &Connection| -> i64 {
            c.query_row(
                &format!(
                    "WITH {SEEN_PENDING} SELECT count(*) FROM accounts a
                     LEFT JOIN account_status st ON st.account_id = a.id LEFT JOIN seen_pending sp ON sp.account_id = a.id
                     WHERE {SEEN_COLUMN} = 1000 + a.id"
                ),
                [],
                |r| r.get(0),
            )
            .expect("seen")
        };
        backlog.start(false);
        let mut commits = 0;
        while backlog.bulk.flushing.is_some() {
            let tx = conn.transaction().expect("tx");
            let step = backlog.write(&tx, false).expect("write").expect("a step");
            tx.commit().expect("commit");
            backlog.written(step);
            commits += 1;
            if commits == 1 {
                assert_eq!(status(&conn).len(), crate::store::bulk::CHUNK);
                assert_eq!(watermark(&conn), None, "the watermark waits for the last part");
                assert_eq!(poll_log_len(&conn), n);
                assert_eq!(seen_everywhere(&conn), n, "readers see every time meanwhile");
                conn.execute("INSERT INTO poll_log (account_id, at_ms) VALUES (1, 5000)", [])
                    .expect("a later poll");
            }
        }
        assert_eq!(commits, 3);
        assert_eq!(status(&conn).len() as i64, n);
        assert_eq!(watermark(&conn).as_deref(), Some("77"));
        assert_eq!(poll_log_len(&conn), 1, "the poll logged during the write stays");
    }

    /// A clean poll of account `A{account_id}` (supervised every 90 s).
    fn poll(account_id: i64, seq: u16, at_ms: i64) -> FrameRecord {
        let mut r = event_frame(account_id, seq, at_ms);
        r.link_test_only = true;
        r.dedupe_key = Some(dedupe_key(&format!("A{account_id}"), None, "0", seq, b""));
        r.supervision_ms = Some(90_000);
        r
    }

    fn frame_reasons(conn: &Connection) -> Vec<(i64, Option<String>)> {
        let mut stmt = conn
            .prepare("SELECT account_id, reason FROM frames ORDER BY id")
            .expect("query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// Polls of an account counted in committed rows: folded into `account_status`, or
    /// waiting in `poll_log`.
    fn counted(conn: &Connection, account_id: i64) -> i64 {
        conn.query_row(
            "SELECT ifnull((SELECT polls FROM account_status WHERE account_id = ?1), 0)
                  + (SELECT count(*) FROM poll_log WHERE account_id = ?1)",
            [account_id],
            |r| r.get(0),
        )
        .expect("counted")
    }

    fn seen_pending(conn: &Connection, account_id: i64) -> Option<i64> {
        conn.query_row(
            &format!("WITH {SEEN_PENDING} SELECT last_ms FROM seen_pending WHERE account_id = ?1"),
            [account_id],
            |r| r.get(0),
        )
        .optional()
        .expect("seen")
    }

    /// A clean poll stores no frame row: when its answer (and so its ACK) comes, its
    /// `poll_log` row is committed, so readers see the account's time and it is counted; the
    /// polls that matter are stored (the first after a silence
    /// longer than the interval, also one known only from the database, the first of a sample
    /// period, one that is not clean); a
    /// retransmission is answered and neither counted nor stored again.
    #[tokio::test]
    async fn clean_polls_are_counted_without_a_row_and_the_ones_that_matter_are_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let (w, join) = writer_with(&path, 2, Default::default());
        let conn = Connection::open(&path).expect("db");
        // Account 1's sample day ends 200 s after the first poll (the default sample period is
        // a day, beginning at the account's own moment of it).
        let t = 20_000 * 86_400_000 + sample_phase(1, 86_400_000) - 200_000;
        let c = w.submit(poll(1, 1, t)).await.expect("stored");
        assert_eq!(c.poll, PollFate::Compacted, "never heard: nothing lost");
        assert_eq!(frame_reasons(&conn), vec![]);
        assert_eq!(counted(&conn, 1), 1);
        for (seq, at, logged) in [(2, t + 30_000, 2), (3, t + 60_000, 3)] {
            let c = w.submit(poll(1, seq, at)).await.expect("stored");
            assert_eq!(c.poll, PollFate::Compacted);
            assert_eq!(c.frame_id, None);
            assert_eq!(counted(&conn, 1), logged, "committed before the answer");
            assert_eq!(seen_pending(&conn, 1), Some(at), "readers see the poll's time");
        }
        let c = w.submit(poll(1, 3, t + 62_000)).await.expect("answered");
        assert_eq!(c.poll, PollFate::Retransmission);
        assert_eq!(counted(&conn, 1), 3, "a retransmission is not counted");
        let c = w.submit(poll(1, 4, t + 160_000)).await.expect("stored");
        assert_eq!(
            c.poll,
            PollFate::Kept(KEPT_AFTER_LOSS),
            "100 s of silence at a 90 s interval"
        );
        let c = w.submit(poll(1, 5, t + 210_000)).await.expect("stored");
        assert_eq!(c.poll, PollFate::Kept(KEPT_SAMPLE), "the first poll of the new day");
        let c = w.submit(poll(1, 6, t + 240_000)).await.expect("stored");
        assert_eq!(c.poll, PollFate::Compacted);
        let mut odd = poll(1, 7, t + 250_000);
        odd.reason = Some("key_change_refused");
        let c = w.submit(odd).await.expect("stored");
        assert_eq!(c.poll, PollFate::NotPoll);
        assert!(c.frame_id.is_some(), "a poll that is not clean is stored");
        // Account 2 was last heard before this writer started (its time only in the database).
        w.run(move |tx| {
            tx.execute(
                "INSERT INTO account_status (account_id, last_seen_ms) VALUES (2, ?1)",
                [t - 1_000_000],
            )?;
            Ok(())
        })
        .await
        .expect("status");
        let c = w.submit(poll(2, 1, t + 260_000)).await.expect("stored");
        assert_eq!(c.poll, PollFate::Kept(KEPT_AFTER_LOSS), "silent since before the start");
        assert_eq!(
            frame_reasons(&conn),
            vec![
                (1, Some(KEPT_AFTER_LOSS.to_string())),
                (1, Some(KEPT_SAMPLE.to_string())),
                (1, Some("key_change_refused".to_string())),
                (2, Some(KEPT_AFTER_LOSS.to_string())),
            ]
        );
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
        let counted: Vec<(i64, i64, i64, Option<i64>)> = conn
            .prepare("SELECT account_id, last_seen_ms, polls, last_poll_ms FROM account_status ORDER BY account_id")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            counted,
            vec![
                (1, t + 250_000, 6, Some(t + 240_000)),
                (2, t + 260_000, 1, Some(t + 260_000))
            ]
        );
    }

    /// A crash in the middle of a bulk write (some parts committed) counts no poll twice: the
    /// next start counts only the polls the committed parts did not.
    #[test]
    fn a_crash_during_a_bulk_write_counts_each_poll_once() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = super::super::open_write(&dir.path().join("w.db"), Duration::from_secs(5)).expect("db");
        let n = crate::store::bulk::CHUNK as i64 + 50;
        let mut backlog = StatusBacklog::default();
        for a in 1..=n {
            conn.execute(
                "INSERT INTO accounts (id, account) VALUES (?1, ?2)",
                params![a, format!("A{a}")],
            )
            .expect("account");
            for k in 0..2 {
                conn.execute(
                    "INSERT INTO poll_log (account_id, at_ms) VALUES (?1, ?2)",
                    params![a, 1_000 + a + k],
                )
                .expect("poll");
                backlog.note(a, 1_000 + a + k, None);
                backlog.count_poll(a, 1_000 + a + k);
            }
        }
        backlog.start(false);
        let tx = conn.transaction().expect("tx");
        let step = backlog.write(&tx, false).expect("write").expect("a step");
        tx.commit().expect("commit");
        backlog.written(step);
        assert!(backlog.bulk.flushing.is_some(), "one part of two written");
        // "Crash": the second part never comes; the next start recovers.
        recover_status(&mut conn).expect("recover");
        let wrong: i64 = conn
            .query_row(
                "SELECT count(*) FROM accounts a LEFT JOIN account_status s ON s.account_id = a.id
                 WHERE ifnull(s.polls, 0) <> 2 OR s.last_poll_ms <> 1_001 + a.id",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(wrong, 0, "every account has its two polls, once");
    }

    /// A clean stop writes the backlog and leaves nothing to recover.
    #[tokio::test]
    async fn a_clean_stop_writes_the_last_seen_backlog() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let (w, join) = writer_with(&path, 2, Default::default());
        w.submit(event_frame(1, 1, 5_000)).await.expect("stored");
        w.submit(event_frame(2, 2, 7_000)).await.expect("stored");
        let mut poll = event_frame(2, 3, 8_000);
        poll.link_test_only = true;
        w.submit(poll).await.expect("stored");
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
        let mut conn = Connection::open(&path).expect("db");
        assert_eq!(status(&conn), vec![(1, 5_000), (2, 8_000)]);
        assert_eq!(poll_log_len(&conn), 0);
        assert_eq!(recover_status(&mut conn).expect("recover"), 0);
    }

    fn file_len(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    /// Checkpoints run on the checkpointer's own connection: with the commit path never
    /// checkpointing, the database file still receives the pages.
    #[tokio::test]
    async fn the_background_checkpointer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let (w, join) = writer_with(
            &path,
            1,
            super::super::checkpoint::WalLimits {
                background_pages: 8,
                foreground_pages: u32::MAX,
            },
        );
        let initial = file_len(&path);
        for seq in 0..300 {
            w.submit(event_frame(1, seq, 1_000 + i64::from(seq)))
                .await
                .expect("stored");
        }
        let mut grew = false;
        for _ in 0..500 {
            if file_len(&path) > initial {
                grew = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            grew,
            "nothing was checkpointed into the database file ({initial} bytes)"
        );
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
    }

    /// Past the bound the writer checkpoints itself, so the WAL starts over and stays small
    /// even when the background checkpointer never runs.
    #[tokio::test]
    async fn the_wal_stays_bounded_without_the_background() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let (w, join) = writer_with(
            &path,
            1,
            super::super::checkpoint::WalLimits {
                background_pages: u32::MAX,
                foreground_pages: 16,
            },
        );
        for seq in 0..400 {
            w.submit(event_frame(1, seq, 1_000 + i64::from(seq)))
                .await
                .expect("stored");
        }
        let wal = file_len(&dir.path().join("w.db-wal"));
        // 400 commits of a few pages each would be well over 1 MiB without the bound.
        assert!(wal < 40 * 4_120, "WAL of {wal} bytes");
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
    }
}
