//! `serve --record DIR [--anonymise]`: every TCP connection and every UDP peer becomes a fixture
//! trace (`fixtures/README.md`) in DIR, so a real panel's behaviour becomes a test in one step.
//!
//! - `>` lines hold the panel's bytes as received (TCP: grouped per read, so frames that came
//!   in one write stay in one line; bytes outside frames travel with the next frame), `<` lines
//!   the response actually written, or `(none)`.
//! - `@clock` is the receive time of the first frame, and `@advance` reproduces the time that
//!   passed between reads, so timestamp windows decide the same way on replay.
//! - The accounts the traffic used are written to `RUN-records.toml` next to the traces (and
//!   named by `@records`): quirks, encryption policy, timestamp checks. Account keys never
//!   leave the database: without `--anonymise` a keyed account is written without its key
//!   (its encrypted traffic then needs `--anonymise` to replay standalone).
//! - `--anonymise` maps every account number to a synthetic one of the same length (`F001`…)
//!   in headers, data and responses, and gives each keyed account a synthetic key: encrypted
//!   frames and `*ACK`s are decrypted with the real key and re-encrypted with the synthetic one
//!   (same pad, same content), CRC and length recomputed. Peer addresses are left out.
//! - A TCP trace is written when its connection closes; UDP traces every few seconds while
//!   their peer is active, and finally at shutdown.
//!
//! Nothing here runs unless recording is on: the listeners hold an `Option` and skip it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::warn;

use crate::clock::rfc3339_ms;
use crate::protocol::crypto::{Key, KeyFormat, decrypt_body, encrypt_body_with_pad};
use crate::protocol::frame::{AccountField, Body, DecodeOptions, Frame, MAX_FRAME_LEN, Quirks, decode_frame};
use crate::protocol::framer::{Chunk, Framer, split_all};
use crate::store::accounts::{AccountEntry, AccountTable};
use crate::trace::{expect_line, send_line};

/// What to record where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOptions {
    /// The directory for traces and the records file.
    pub dir: PathBuf,
    /// Replace account numbers and keys with synthetic ones.
    pub anonymise: bool,
}

/// A UDP peer is done (its trace written one last time and forgotten) after this long without
/// a datagram.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// How often UDP traces are written.
pub const UDP_FLUSH_EVERY: Duration = Duration::from_secs(2);

fn opts() -> DecodeOptions {
    DecodeOptions {
        quirks: Quirks::ALL,
        max_len: MAX_FRAME_LEN,
    }
}

/// Account numbers and keys, real to synthetic (only used with `--anonymise`).
#[derive(Default)]
struct Anonymiser {
    accounts: BTreeMap<String, String>,
}

impl Anonymiser {
    fn account(&mut self, real: &str) -> String {
        if let Some(s) = self.accounts.get(real) {
            return s.clone();
        }
        let n = self.accounts.len() + 1;
        let width = real.len().saturating_sub(1).max(2);
        let s = format!("F{n:0width$}");
        self.accounts.insert(real.to_string(), s.clone());
        s
    }

    /// `#real` to `#synthetic` wherever a known account appears (bytes that are not a frame).
    fn text(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for (real, fake) in &self.accounts {
            if real.len() != fake.len() {
                continue;
            }
            let pat: Vec<u8> = std::iter::once(b'#').chain(real.bytes()).collect();
            let mut i = 0;
            while i + pat.len() <= out.len() {
                let boundary = out.get(i + pat.len()).is_none_or(|b| !b.is_ascii_hexdigit());
                if out[i..i + pat.len()] == pat[..] && boundary {
                    out[i + 1..i + pat.len()].copy_from_slice(fake.as_bytes());
                    i += pat.len();
                } else {
                    i += 1;
                }
            }
        }
        out
    }
}

/// A synthetic key of the same size and format as `real`, derived from the synthetic account
/// only (nothing of the real key survives).
fn synthetic_key(real: &Key, synthetic_account: &str) -> Option<(Key, String)> {
    let n = real.bits() / 8;
    let mut seed = Sha256::digest(format!("meldkamer synthetic key {synthetic_account}").as_bytes()).to_vec();
    seed.extend_from_slice(&Sha256::digest(&seed));
    let bytes = &seed[..n];
    match real.format() {
        KeyFormat::Hex => {
            let text = hex::encode_upper(bytes);
            Key::from_hex(&text).ok().map(|k| (k, text))
        }
        KeyFormat::Ascii => {
            let text: String = bytes
                .iter()
                .map(|b| char::from(crate::protocol::crypto::PAD_ALPHABET[usize::from(*b) % 62]))
                .collect();
            Key::from_ascii(&text).ok().map(|k| (k, text))
        }
    }
}

/// `#real…` at the start of the data (SIA-DCS and ADM-CID data begin with the account).
fn replace_data_account(data: &mut String, real: &str, fake: &str) {
    if let Some(rest) = data.strip_prefix('#').and_then(|d| d.strip_prefix(real))
        && (rest.is_empty() || rest.starts_with('|'))
    {
        *data = format!("#{fake}{rest}");
    }
}

/// One account as written to the records file.
#[derive(Clone)]
struct SeenAccount {
    entry: Arc<AccountEntry>,
}

struct UdpTrace {
    file: PathBuf,
    peer: SocketAddr,
    first_ms: i64,
    entries: Vec<(i64, Vec<u8>, Option<Vec<u8>>)>,
    last: Instant,
    dirty: bool,
}

#[derive(Default)]
struct State {
    anon: Anonymiser,
    /// Accounts the recorded traffic used, by row id.
    seen: BTreeMap<i64, SeenAccount>,
    records_written: usize,
    udp: HashMap<SocketAddr, UdpTrace>,
}

/// The recorder, shared by the listeners.
pub struct Recorder {
    opts: RecordOptions,
    run: String,
    next: AtomicU64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.opts.dir)
            .field("anonymise", &self.opts.anonymise)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder writing into `opts.dir` (created if missing). `started` names this run's files.
    pub fn new(opts: RecordOptions, started: time::OffsetDateTime) -> std::io::Result<Recorder> {
        crate::hardening::private_dir_all(&opts.dir)?;
        let run = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            started.year(),
            u8::from(started.month()),
            started.day(),
            started.hour(),
            started.minute(),
            started.second()
        );
        Ok(Recorder {
            opts,
            run,
            next: AtomicU64::new(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The records file of this run.
    pub fn records_file(&self) -> PathBuf {
        self.opts.dir.join(format!("{}-records.toml", self.run))
    }

    fn next_file(&self, transport: &str) -> (u64, PathBuf) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n, self.opts.dir.join(format!("{}-{transport}-{n:04}.trace", self.run)))
    }

    /// Start recording one TCP connection.
    pub fn tcp(self: &Arc<Self>, peer: SocketAddr) -> ConnRecorder {
        ConnRecorder {
            rec: self.clone(),
            peer,
            entries: Vec::new(),
            pending: Vec::new(),
            pending_frames: Vec::new(),
            pending_ms: None,
            slots: Vec::new(),
        }
    }

    /// Note the account a frame used, and return the frame as it is to be written (anonymised
    /// when asked).
    fn panel_frame(&self, st: &mut State, raw: &[u8], table: &AccountTable) -> Vec<u8> {
        // A key offered in clear (`[K…]`) is never recorded: starred out as the store does, in
        // a frame that decodes with its CRC made to fit (so a replay still gets the answer the
        // panel got), in bytes that do not decode as they are.
        let Ok(f) = decode_frame(raw, &opts()) else {
            let raw = crate::protocol::frame::redact_key_bytes(raw);
            return if self.opts.anonymise {
                st.anon.text(&raw)
            } else {
                raw.into_owned()
            };
        };
        let offers_key = matches!(&f.body, crate::protocol::Body::Plain(p) if p.xdata.iter().any(|x| x.id == 'K'));
        let (f, redacted) = if offers_key {
            let g = f.with_keys_redacted();
            let bytes = g.encode();
            (g, Some(bytes))
        } else {
            (f, None)
        };
        let raw = redacted.as_deref().unwrap_or(raw);
        let entry = f
            .account
            .number()
            .and_then(|a| table.lookup(a, f.receiver.as_deref(), &f.line))
            .cloned();
        if let Some(e) = &entry {
            st.seen.entry(e.id).or_insert_with(|| SeenAccount { entry: e.clone() });
        }
        if !self.opts.anonymise {
            return raw.to_vec();
        }
        if f.encode() != raw {
            return st.anon.text(raw);
        }
        self.anonymise_frame(st, f, entry.as_deref())
            .unwrap_or_else(|| st.anon.text(raw))
    }

    /// A response as it is to be written.
    fn response(&self, st: &mut State, raw: &[u8], table: &AccountTable) -> Vec<u8> {
        if !self.opts.anonymise {
            return raw.to_vec();
        }
        let Ok(f) = decode_frame(raw, &opts()) else {
            return st.anon.text(raw);
        };
        let entry = f
            .account
            .number()
            .and_then(|a| table.lookup(a, f.receiver.as_deref(), &f.line))
            .cloned();
        self.anonymise_frame(st, f, entry.as_deref())
            .unwrap_or_else(|| st.anon.text(raw))
    }

    fn anonymise_frame(&self, st: &mut State, mut f: Frame, entry: Option<&AccountEntry>) -> Option<Vec<u8>> {
        let AccountField::Number(real) = f.account.clone() else {
            return Some(f.encode());
        };
        let fake = st.anon.account(&real);
        f.account = AccountField::Number(fake.clone());
        match &mut f.body {
            Body::Plain(p) => replace_data_account(&mut p.data, &real, &fake),
            Body::Encrypted(ct) => {
                // Re-encrypt under the synthetic key when the real key opens it; a frame that
                // does not decrypt (a wrong key) stays undecryptable under any key.
                let synthetic = entry
                    .and_then(|e| e.policy.key.as_ref())
                    .and_then(|k| Some((k, synthetic_key(k, &fake)?.0)));
                if let Some((real_key, fake_key)) = synthetic
                    && let Ok(mut d) = decrypt_body(real_key, ct)
                {
                    replace_data_account(&mut d.plain.data, &real, &fake);
                    *ct = encrypt_body_with_pad(&fake_key, &d)?;
                }
            }
        }
        Some(f.encode())
    }

    /// Write the records file if accounts were added since it was last written.
    fn write_records(&self, st: &mut State) {
        if st.records_written == st.seen.len() && self.records_file().exists() {
            return;
        }
        let mut text = String::from(
            "# Accounts used by the traces recorded with `meldkamer serve --record` in this run.\n\
             # Test data for replaying them: never import it into a production database.\n",
        );
        let seen: Vec<SeenAccount> = st.seen.values().cloned().collect();
        for s in seen {
            let e = &s.entry;
            let p = &e.policy;
            let account = if self.opts.anonymise {
                st.anon.account(&e.account)
            } else {
                e.account.clone()
            };
            text.push_str("\n[[account]]\n");
            text.push_str(&format!("account = {account:?}\n"));
            if !e.receiver.is_empty() {
                text.push_str(&format!("receiver = {:?}\n", e.receiver));
            }
            if !e.line.is_empty() {
                text.push_str(&format!("line = {:?}\n", e.line));
            }
            match (&p.key, self.opts.anonymise) {
                (Some(k), true) => {
                    if let Some((_, key_text)) = synthetic_key(k, &account) {
                        text.push_str(&format!("key = {key_text:?}  # synthetic\n"));
                        if k.format() == KeyFormat::Ascii {
                            text.push_str("key_format = \"ascii\"\n");
                        }
                        text.push_str(&format!("require_encryption = {}\n", p.require_encryption));
                    }
                }
                (Some(_), false) => text.push_str(
                    "# key withheld: keys never leave the database. Record with --anonymise to replay\n\
                     # this account's encrypted traffic with a synthetic key.\n",
                ),
                (None, _) => {}
            }
            let q = p.quirks.names();
            if !q.is_empty() {
                text.push_str(&format!("quirks = {q:?}\n"));
            }
            if p.check_plain_timestamp {
                text.push_str("check_plain_timestamp = true\n");
            }
            if p.ack_separator {
                text.push_str("ack_separator = true\n");
            }
        }
        match write_atomically(&self.records_file(), &text) {
            Ok(()) => st.records_written = st.seen.len(),
            Err(e) => {
                warn!(error = %e, file = %self.records_file().display(), "recording: cannot write the records file")
            }
        }
    }

    fn header(&self, transport: &str, n: u64, peer: SocketAddr, first_ms: i64) -> String {
        let records = self
            .records_file()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let from = if self.opts.anonymise {
            String::new()
        } else {
            format!(" from {peer}")
        };
        let what = if transport == "tcp" {
            "TCP connection"
        } else {
            "UDP peer"
        };
        format!(
            "# Recorded by `meldkamer serve --record`{}: {what} {n}{from}, {}.\n\
             # `>` is what the panel sent, `<` what the receiver answered. Replay: meldkamer replay FILE\n\
             @title Recorded {what} {n}{from}\n\
             @records {records}\n\
             @clock {}\n\
             @outcome none\n\
             @transport {transport}\n",
            if self.opts.anonymise { " --anonymise" } else { "" },
            rfc3339_ms(first_ms),
            rfc3339_ms(first_ms),
        )
    }

    /// Record one UDP datagram and the response sent to it (`None`: no response).
    pub fn udp(&self, peer: SocketAddr, datagram: &[u8], received_ms: i64, sent: Option<&[u8]>, table: &AccountTable) {
        let mut st = self.lock();
        let framer = Framer::new(MAX_FRAME_LEN, true);
        let (chunks, rest) = split_all(&framer, datagram);
        let mut bytes = Vec::with_capacity(datagram.len());
        for (c, b) in chunks {
            match c {
                Chunk::Frame { .. } => bytes.extend(self.panel_frame(&mut st, b, table)),
                _ if self.opts.anonymise => bytes.extend(st.anon.text(b)),
                _ => bytes.extend_from_slice(b),
            }
        }
        bytes.extend(if self.opts.anonymise {
            st.anon.text(rest)
        } else {
            rest.to_vec()
        });
        let response = sent.map(|r| self.response(&mut st, r, table));
        let t = st.udp.entry(peer).or_insert_with(|| UdpTrace {
            file: self.next_file("udp").1,
            peer,
            first_ms: received_ms,
            entries: Vec::new(),
            last: Instant::now(),
            dirty: false,
        });
        t.entries.push((received_ms, bytes, response));
        t.last = Instant::now();
        t.dirty = true;
    }

    /// Write the UDP traces that changed; forget peers idle for a minute. `all`: write every
    /// one and forget them all (shutdown).
    pub fn flush_udp(&self, all: bool) {
        let mut st = self.lock();
        let now = Instant::now();
        let mut done = Vec::new();
        let mut texts = Vec::new();
        for (peer, t) in &mut st.udp {
            if t.dirty {
                let n = t
                    .file
                    .file_stem()
                    .and_then(|s| s.to_string_lossy().rsplit('-').next().map(str::to_string))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let mut text = self.header("udp", n, t.peer, t.first_ms);
                let mut at = t.first_ms;
                for (ms, bytes, resp) in &t.entries {
                    if *ms > at {
                        text.push_str(&format!("@advance {}ms\n", ms - at));
                        at = *ms;
                    }
                    text.push_str(&send_line(bytes));
                    text.push('\n');
                    text.push_str(&expect_line(resp.as_deref()));
                    text.push('\n');
                }
                texts.push((t.file.clone(), text));
                t.dirty = false;
            }
            if all || now.duration_since(t.last) >= UDP_IDLE {
                done.push(*peer);
            }
        }
        for p in done {
            st.udp.remove(&p);
        }
        if !texts.is_empty() {
            self.write_records(&mut st);
        }
        drop(st);
        for (file, text) in texts {
            if let Err(e) = write_atomically(&file, &text) {
                warn!(error = %e, file = %file.display(), "recording: cannot write a trace");
            }
        }
    }

    /// Write every pending trace (shutdown).
    pub fn flush_all(&self) {
        self.flush_udp(true);
    }
}

/// Write the UDP traces every [`UDP_FLUSH_EVERY`] until `cancel` (the last write happens at
/// shutdown, after the listeners stopped: [`Recorder::flush_all`]).
pub async fn flush_udp_every(rec: Arc<Recorder>, cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(UDP_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let r = rec.clone();
        let _ = tokio::task::spawn_blocking(move || r.flush_udp(false)).await;
    }
}

/// Write via a temporary file and a rename, so a reader never sees half a trace.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    crate::hardening::write_private_atomically(path, text.as_bytes())
}

/// What a TCP trace holds, in order.
enum Entry {
    /// Panel bytes, received at (Unix ms).
    Send(Vec<u8>, i64),
    /// The response in this slot.
    Expect(usize),
}

/// The recording of one TCP connection.
pub struct ConnRecorder {
    rec: Arc<Recorder>,
    peer: SocketAddr,
    entries: Vec<Entry>,
    /// Bytes received and consumed by the framer, not yet written as a `>` line.
    pending: Vec<u8>,
    /// Response slots of the frames in `pending`.
    pending_frames: Vec<usize>,
    /// Receive time of the first frame in `pending`.
    pending_ms: Option<i64>,
    /// Responses by slot (`None` inside: nothing was written).
    slots: Vec<Option<Vec<u8>>>,
}

impl ConnRecorder {
    /// A chunk the framer consumed. For a frame (`received_ms` given) the return value is the
    /// slot its response goes to ([`ConnRecorder::respond`]).
    pub fn chunk(&mut self, bytes: &[u8], frame_received_ms: Option<i64>, table: &AccountTable) -> Option<usize> {
        let mut st = self.rec.lock();
        match frame_received_ms {
            Some(ms) => {
                let b = self.rec.panel_frame(&mut st, bytes, table);
                self.pending.extend(b);
                self.pending_ms.get_or_insert(ms);
                let slot = self.slots.len();
                self.slots.push(None);
                self.pending_frames.push(slot);
                Some(slot)
            }
            None => {
                let b = if self.rec.opts.anonymise {
                    st.anon.text(bytes)
                } else {
                    bytes.to_vec()
                };
                self.pending.extend(b);
                None
            }
        }
    }

    /// The end of one read: the frames completed by it become one `>` line (bytes outside
    /// frames wait for the next frame).
    pub fn end_read(&mut self) {
        if self.pending_frames.is_empty() {
            return;
        }
        let at = self.pending_ms.take().unwrap_or(0);
        self.entries.push(Entry::Send(std::mem::take(&mut self.pending), at));
        for s in self.pending_frames.drain(..) {
            self.entries.push(Entry::Expect(s));
        }
    }

    /// The response written for a slot (`None`: nothing was written).
    pub fn respond(&mut self, slot: usize, sent: Option<&[u8]>, table: &AccountTable) {
        let mut st = self.rec.lock();
        let r = sent.map(|b| self.rec.response(&mut st, b, table));
        if let Some(s) = self.slots.get_mut(slot) {
            *s = r;
        }
    }

    /// The connection closed: `leftover` is what the framer never consumed. Writes the trace.
    pub fn finish(mut self, leftover: &[u8], now_ms: i64) {
        self.end_read();
        let mut tail = std::mem::take(&mut self.pending);
        tail.extend(if self.rec.opts.anonymise {
            self.rec.lock().anon.text(leftover)
        } else {
            leftover.to_vec()
        });
        if !tail.is_empty() {
            self.entries.push(Entry::Send(tail, now_ms));
        }
        let Some(first_ms) = self.entries.iter().find_map(|e| match e {
            Entry::Send(_, at) => Some(*at),
            Entry::Expect(_) => None,
        }) else {
            return;
        };
        let (n, file) = self.rec.next_file("tcp");
        let mut text = self.rec.header("tcp", n, self.peer, first_ms);
        let mut at = first_ms;
        for e in &self.entries {
            match e {
                Entry::Send(bytes, ms) => {
                    if *ms > at {
                        text.push_str(&format!("@advance {}ms\n", ms - at));
                        at = *ms;
                    }
                    text.push_str(&send_line(bytes));
                    text.push('\n');
                }
                Entry::Expect(slot) => {
                    text.push_str(&expect_line(self.slots.get(*slot).and_then(|s| s.as_deref())));
                    text.push('\n');
                }
            }
        }
        {
            let mut st = self.rec.lock();
            self.rec.write_records(&mut st);
        }
        if let Err(e) = write_atomically(&file, &text) {
            warn!(error = %e, file = %file.display(), "recording: cannot write a trace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_accounts_are_consistent_and_keep_their_length() {
        let mut a = Anonymiser::default();
        assert_eq!(a.account("1234"), "F001");
        assert_eq!(a.account("123456"), "F00002");
        assert_eq!(a.account("1234"), "F001");
        assert_eq!(a.account("ABC"), "F03");
        assert_eq!(a.text(b"x#1234|y #12345 #1234"), b"x#F001|y #12345 #F001".to_vec());
    }

    #[test]
    fn synthetic_keys_keep_size_and_format_and_nothing_else() {
        let real = Key::from_hex("000102030405060708090A0B0C0D0E0F1011121314151617").expect("key");
        let (k, text) = synthetic_key(&real, "F001").expect("key");
        assert_eq!(k.bits(), 192);
        assert_eq!(text.len(), 48);
        assert_ne!(k.expose_bytes(), real.expose_bytes());
        let ascii = Key::from_ascii("DEMOKEY-0123456!").expect("key");
        let (k, text) = synthetic_key(&ascii, "F002").expect("key");
        assert_eq!((k.bits(), k.format(), text.len()), (128, KeyFormat::Ascii, 16));
        assert_eq!(synthetic_key(&ascii, "F002").expect("same").1, text, "deterministic");
    }

    fn keyed_entry() -> Arc<AccountEntry> {
        Arc::new(AccountEntry {
            id: 1,
            account: "5678".into(),
            receiver: String::new(),
            line: String::new(),
            policy: crate::protocol::policy::AccountPolicy {
                key: Some(Key::from_hex("000102030405060708090A0B0C0D0E0F").expect("key")),
                require_encryption: true,
                ..Default::default()
            },
        })
    }

    fn records_text(anonymise: bool) -> String {
        let dir = std::env::temp_dir().join(format!("meldkamer-record-test-{}-{anonymise}", std::process::id()));
        let rec = Recorder::new(
            RecordOptions {
                dir: dir.clone(),
                anonymise,
            },
            time::macros::datetime!(2026-01-15 12:00:00 UTC),
        )
        .expect("recorder");
        {
            let mut st = rec.lock();
            st.seen.insert(1, SeenAccount { entry: keyed_entry() });
            rec.write_records(&mut st);
        }
        let text = std::fs::read_to_string(rec.records_file()).expect("records file");
        let _ = std::fs::remove_dir_all(&dir);
        text
    }

    #[test]
    fn keys_never_reach_the_records_file() {
        let plain = records_text(false);
        assert!(!plain.contains("000102030405060708090A0B0C0D0E0F"), "{plain}");
        assert!(
            plain.contains("account = \"5678\"") && plain.contains("key withheld"),
            "{plain}"
        );
        crate::records::parse_toml(&plain, "recorded").expect("a valid records file");
        let anon = records_text(true);
        assert!(
            !anon.contains("000102030405060708090A0B0C0D0E0F") && !anon.contains("5678"),
            "{anon}"
        );
        let r = crate::records::parse_toml(&anon, "recorded").expect("a valid records file");
        let key = r.accounts[0].spec.key.as_ref().expect("a synthetic key");
        assert_eq!(key.bits(), 128);
        assert_eq!(r.accounts[0].spec.account, "F001");
    }

    #[test]
    fn data_account_is_replaced_only_at_the_start() {
        let mut d = "#1234|Nri1/BA01".to_string();
        replace_data_account(&mut d, "1234", "F001");
        assert_eq!(d, "#F001|Nri1/BA01");
        let mut d = "#12345|Nri1/BA01".to_string();
        replace_data_account(&mut d, "1234", "F001");
        assert_eq!(d, "#12345|Nri1/BA01");
    }
}
