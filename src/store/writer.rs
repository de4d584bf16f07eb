//! The single writer: owns the write connection, commits frames in groups (one fsync per
//! group), recognises retransmissions, and answers each submitter only after the transaction
//! holding its frame has committed. If a commit fails, every submitter in that group gets the
//! error and sends no acknowledgement; the next group tries again.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
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
        }
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The stored frame row (none for a link test).
    pub frame_id: Option<i64>,
    /// Set when the frame is a retransmission of this earlier frame.
    pub duplicate_of: Option<i64>,
    /// The stored event rows.
    pub event_ids: Vec<i64>,
}

type Reply = oneshot::Sender<Result<Committed, Arc<StoreError>>>;

enum Msg {
    Frame(Box<FrameRecord>, Reply),
    Job(Box<dyn Job>),
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

    /// Called for every stored accepted frame with its event ids.
    fn after_insert(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        record: &FrameRecord,
        committed: &Committed,
    ) -> Result<(), StoreError>;
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
    /// Frames per transaction.
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
}

/// Last valid traffic per account id, Unix ms, as committed.
#[derive(Debug, Default)]
pub struct LastSeen(pub std::sync::Mutex<HashMap<i64, i64>>);

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
            Ok(rx) => rx.await.unwrap_or_else(|_| Err(Arc::new(StoreError::WriterGone))),
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

    /// Ask the writer to stop once everything queued so far is committed.
    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Stop).await;
    }

    /// Queue a frame; the returned receiver resolves at commit. For pipelining on one connection.
    pub async fn enqueue(
        &self,
        record: FrameRecord,
    ) -> Result<oneshot::Receiver<Result<Committed, Arc<StoreError>>>, Arc<StoreError>> {
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

fn qualifier_str(q: Qualifier) -> String {
    match q {
        Qualifier::New => "new".into(),
        Qualifier::Restore => "restore".into(),
        Qualifier::Status => "status".into(),
        Qualifier::Unknown(d) => format!("unknown:{d}"),
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
    xdata_json: &mut XdataJson,
) -> Result<i64, StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (frame_id, received_ms, account, account_id, receiver, line, seq, code_format, code,
                             qualifier, category, kind, priority, description, zone, user_no, area, text,
                             occurred_ms, sent_ms, old, xdata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
    )?;
    let (fmt, code) = match e.code {
        EventCode::Sia(c) => ("sia", c.to_string()),
        EventCode::Cid(c) => ("cid", c.to_string()),
        EventCode::LinkTest => ("sia", "NULL".to_string()),
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
    ])?;
    Ok(tx.last_insert_rowid())
}

fn touch_account(tx: &rusqlite::Transaction<'_>, account_id: i64, ms: i64) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO account_status (account_id, last_seen_ms) VALUES (?1, ?2)
         ON CONFLICT (account_id) DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    )?;
    stmt.execute(params![account_id, ms])?;
    Ok(())
}

fn apply(
    tx: &rusqlite::Transaction<'_>,
    r: &FrameRecord,
    dedupe: &Dedupe,
    pending: &mut HashMap<[u8; 16], (i64, i64)>,
    hook: &mut dyn AfterInsert,
) -> Result<Committed, StoreError> {
    if r.outcome != Outcome::Accepted {
        let id = insert_frame(tx, r, r.outcome.as_str(), None)?;
        let c = Committed {
            frame_id: Some(id),
            duplicate_of: None,
            event_ids: Vec::new(),
        };
        hook.after_insert(tx, r, &c)?;
        return Ok(c);
    }
    if let Some(aid) = r.account_id {
        touch_account(tx, aid, r.received_ms)?;
    }
    if r.link_test_only {
        let c = Committed {
            frame_id: None,
            duplicate_of: None,
            event_ids: Vec::new(),
        };
        hook.after_insert(tx, r, &c)?;
        return Ok(c);
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
                event_ids: Vec::new(),
            });
        }
    }
    let id = insert_frame(tx, r, "accepted", None)?;
    let mut event_ids = Vec::with_capacity(r.events.len());
    let mut xdata_json = XdataJson { of: None, json: None };
    for e in &r.events {
        event_ids.push(insert_event(tx, id, r, e, &mut xdata_json)?);
    }
    let c = Committed {
        frame_id: Some(id),
        duplicate_of: None,
        event_ids,
    };
    hook.after_insert(tx, r, &c)?;
    // Remembered only once everything for this frame succeeded.
    if let Some(k) = r.dedupe_key {
        pending.insert(k, (id, r.received_ms));
    }
    Ok(c)
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
    let window_ms = cfg.retransmission_window.as_millis() as i64;
    let mut dedupe = load_dedupe(&conn, now_ms, window_ms, cfg.max_dedupe_entries)?;
    let (tx, mut rx) = mpsc::channel::<Msg>(cfg.queue_depth.max(1));
    let m = metrics.clone();
    let max_batch = cfg.max_batch.max(1);
    let last_seen = cfg.last_seen.clone();
    let changes = cfg.changes.clone();
    let join = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let mut batch: Vec<Item> = Vec::with_capacity(max_batch);
            let mut stopping = false;
            let take = |m: Msg, batch: &mut Vec<Item>| -> bool {
                match m {
                    Msg::Frame(r, reply) => batch.push(Item::Frame(r, reply)),
                    Msg::Job(j) => batch.push(Item::Job(j)),
                    Msg::Stop => return false,
                }
                true
            };
            while !stopping {
                match rx.blocking_recv() {
                    Some(m) => {
                        if !take(m, &mut batch) {
                            break;
                        }
                    }
                    None => break,
                }
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(m) => {
                            if !take(m, &mut batch) {
                                stopping = true;
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                m.queue_depth.add(-(batch.len() as i64));
                let started = Instant::now();
                let mut pending = HashMap::new();
                let result: Result<Vec<Option<Result<Committed, Arc<StoreError>>>>, StoreError> = (|| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    hook.begin(&tx)?;
                    let mut out = Vec::with_capacity(batch.len());
                    for item in batch.iter_mut() {
                        match item {
                            Item::Frame(rec, _) => {
                                // Each frame in its own savepoint: one frame that cannot be stored
                                // is refused alone (no ACK; the panel retries) instead of taking
                                // the whole group down with it, again at every resend.
                                tx.prepare_cached("SAVEPOINT frame")?.execute([])?;
                                match apply(&tx, rec, &dedupe, &mut pending, hook.as_mut()) {
                                    Ok(c) => {
                                        tx.prepare_cached("RELEASE frame")?.execute([])?;
                                        out.push(Some(Ok(c)));
                                    }
                                    Err(e) => {
                                        // If even the rollback fails (disk full, I/O error: the
                                        // transaction is gone), the whole group fails.
                                        hook.forget();
                                        tx.execute_batch("ROLLBACK TO frame; RELEASE frame")?;
                                        tracing::warn!(error = %e, "a frame could not be stored; not acknowledged");
                                        out.push(Some(Err(Arc::new(e))));
                                    }
                                }
                            }
                            Item::Job(job) => {
                                tx.execute_batch("SAVEPOINT job")?;
                                let ok = job.run(&tx);
                                hook.forget();
                                if ok {
                                    tx.execute_batch("RELEASE job")?;
                                } else {
                                    tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                                }
                                out.push(None);
                            }
                        }
                    }
                    tx.commit()?;
                    Ok(out)
                })();
                m.commit_latency.observe(started.elapsed());
                match result {
                    Ok(done) => {
                        m.observe_batch(batch.len());
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
                        if let Some(ls) = &last_seen {
                            ls.record(batch.iter().zip(&done).filter_map(|(i, d)| match (i, d) {
                                (Item::Frame(r, _), Some(Ok(_))) if r.outcome == Outcome::Accepted => {
                                    r.account_id.map(|a| (a, r.received_ms))
                                }
                                _ => None,
                            }));
                        }
                        for (item, c) in batch.drain(..).zip(done) {
                            match (item, c) {
                                (Item::Frame(_, reply), Some(Err(e))) => {
                                    m.refusals.inc("commit_failed");
                                    let _ = reply.send(Err(e));
                                }
                                (Item::Frame(_, reply), Some(Ok(c))) => {
                                    if c.duplicate_of.is_some() {
                                        m.retransmissions.add(1);
                                    }
                                    for _ in &c.event_ids {
                                        m.events.inc("stored");
                                    }
                                    let _ = reply.send(Ok(c));
                                }
                                (Item::Job(job), _) => job.finish(Ok(())),
                                (Item::Frame(_, reply), None) => {
                                    let _ = reply.send(Err(Arc::new(StoreError::WriterGone)));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        hook.forget();
                        let e = Arc::new(e);
                        m.refusals.inc("commit_failed");
                        for item in batch.drain(..) {
                            match item {
                                Item::Frame(_, reply) => {
                                    let _ = reply.send(Err(e.clone()));
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
            }
        })
        .map_err(|_| StoreError::WriterGone)?;
    Ok((WriterHandle { tx, metrics }, join))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A frame that cannot be stored must not take the other frames of its group down with it
    /// (else it would do so again at every resend: "batch poisoning").
    #[tokio::test]
    async fn one_failing_frame_does_not_poison_its_group() {
        let dir = tempfile::tempdir().expect("dir");
        let (w, join) = start(
            WriterConfig {
                path: dir.path().join("w.db"),
                queue_depth: 64,
                max_batch: 64,
                busy_timeout: Duration::from_secs(5),
                retransmission_window: Duration::from_secs(600),
                max_dedupe_entries: 1000,
                last_seen: None,
                changes: None,
            },
            0,
            Arc::new(Metrics::default()),
            Box::new(FailBad),
        )
        .expect("writer");
        // Hold the writer busy so the next frames queue up and commit as one group.
        let busy = w.run(|_| {
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        });
        let (good1, bad, good2) = (
            w.enqueue(record("GOOD", 1)),
            w.enqueue(record("BAD", 2)),
            w.enqueue(record("GOOD", 3)),
        );
        let (_, g1, b, g2) = tokio::join!(busy, good1, bad, good2);
        let (g1, b, g2) = (g1.expect("queued"), b.expect("queued"), g2.expect("queued"));
        let (g1, b, g2) = tokio::join!(g1, b, g2);
        assert!(g1.expect("reply").is_ok());
        assert!(b.expect("reply").is_err(), "the failing frame is refused (no ACK)");
        assert!(g2.expect("reply").is_ok());
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).expect("db");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM frames", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2, "both good frames stored, the failing one not at all");
    }
}
