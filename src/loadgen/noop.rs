//! `meldkamer bench --noop-receiver ADDR --noop-accounts FILE…`: a DC-09 receiver that stores
//! nothing, the ceiling of every throughput figure. It shows what the load generator, the
//! kernel's loopback and the protocol core reach on this machine; `BENCHMARKS.md` quotes the
//! daemon's throughput as a ratio to it, measured in the same run by `meldkamer bench --baseline`.
//!
//! Every frame gets the answer the daemon would send, built the daemon's way: the same framer
//! and `decode_frame` options, the account looked up in an [`AccountTable`] loaded from the
//! same records files the daemon imports (applied to an in-memory database, so keys, policies,
//! receiver/line matching and disabled accounts are the daemon's), the decision table
//! ([`evaluate`]) with the default timestamp window, the events of an accepted frame
//! ([`events_from`], built and dropped), and the response from [`response_frame`]: an encrypted
//! ACK with the account key and a pad from the OS ([`OsPad`]), so AES runs compare like for
//! like. That is the protocol core's whole work per frame, as the criterion benchmark
//! `decode_and_respond` counts it (`benches/protocol.rs`). On the wire it makes the daemon's system calls too: one read per
//! arrival ([`read_available`]) and one write per read's answers.
//!
//! What it leaves out is everything the daemon does with the result: the retransmission
//! identity, the store writer and its commit, metrics and logs. It answers at once (there is no
//! commit to wait for), on TCP per connection in order, on UDP one datagram after the other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::BenchError;
use crate::config::ReceiverConfig;
use crate::event::events_from;
use crate::protocol::crypto::PadSource;
use crate::protocol::frame::{DecodeOptions, Quirks, Token, decode_frame};
use crate::protocol::framer::{Chunk, Framer, split_all};
use crate::protocol::policy::{Silence, Verdict, Window, evaluate, response_frame};
use crate::protocol::response::ResponseKind;
use crate::receiver::pad::OsPad;
use crate::receiver::read_available;
use crate::store::accounts::AccountTable;

/// The answer to one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// ACK, NAK or DUH.
    pub kind: ResponseKind,
    /// The response frame.
    pub bytes: Vec<u8>,
    /// Events the frame carried (built as the daemon builds them, then dropped).
    pub events: usize,
}

/// Answers frames as the daemon would, from the daemon's account table.
pub struct Responder {
    accounts: AccountTable,
    window: Window,
    max_frame_bytes: usize,
}

impl Responder {
    /// The responder for these records files (`.toml`, or `.csv` named after the kind), read
    /// and applied as `meldkamer import` does, into a database in memory.
    pub fn from_files(files: &[PathBuf]) -> Result<Responder, BenchError> {
        let mut records = crate::records::Records::default();
        for f in files {
            records.extend(crate::records::parse_file(f)?);
        }
        Responder::from_records(&records)
    }

    /// The responder for parsed records.
    pub fn from_records(records: &crate::records::Records) -> Result<Responder, BenchError> {
        let mut conn = rusqlite::Connection::open_in_memory().map_err(crate::store::StoreError::from)?;
        crate::store::schema::migrate(&conn)?;
        // The keys are sealed as the daemon seals them, under a key that lives as long as this
        // database in memory (never written anywhere; without OS randomness, zeros do as well).
        let mut raw = [0u8; crate::keyfile::KEY_LEN];
        let _ = getrandom::fill(&mut raw);
        let seal = crate::store::sealed::SealKey::from_bytes(&raw);
        crate::records::apply(&mut conn, records, &seal)?;
        let accounts = crate::store::accounts::load(&conn, &seal)?;
        // The daemon's defaults: the bench configurations leave these alone.
        let cfg = ReceiverConfig::default();
        Ok(Responder {
            accounts,
            window: Window {
                behind_s: cfg.timestamp_behind_secs,
                ahead_s: cfg.timestamp_ahead_secs,
            },
            max_frame_bytes: cfg.max_frame_bytes,
        })
    }

    /// Accounts it knows (enabled ones, as the daemon loads them).
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    fn framer(&self) -> Framer {
        Framer::new(self.max_frame_bytes, self.accounts.quirks_in_use.crc_binary)
    }

    /// The answer to one frame (`None`: silence), as the daemon's `receiver::prepare_frame`
    /// decides it. `trailing_nuls`: a datagram carried NUL bytes after the frame's CR.
    pub fn answer(
        &self,
        raw: &[u8],
        trailing_nuls: bool,
        now: OffsetDateTime,
        pad: &mut dyn PadSource,
    ) -> Option<Answer> {
        let opts = DecodeOptions {
            quirks: Quirks::ALL,
            max_len: self.max_frame_bytes,
        };
        let frame = decode_frame(raw, &opts).ok()?;
        let entry = frame
            .account
            .number()
            .and_then(|a| self.accounts.lookup(a, frame.receiver.as_deref(), &frame.line));
        let policy = entry.map(|e| &e.policy);
        let mut verdict = evaluate(&frame, policy, now, self.window);
        if trailing_nuls && !policy.is_some_and(|p| p.quirks.trailing_nul) && !matches!(verdict, Verdict::Silent(_)) {
            verdict = Verdict::Silent(Silence::QuirkNotEnabled {
                needs: Quirks {
                    trailing_nul: true,
                    ..Quirks::NONE
                },
            });
        }
        let kind = verdict.response_kind()?;
        let events = match &verdict {
            Verdict::Accepted(a) if !(frame.token == Token::Null && a.plain.data.trim().is_empty()) => {
                // A payload the daemon cannot read is stored and ACKed all the same.
                events_from(&frame, &a.plain).map_or(0, |e| e.len())
            }
            _ => 0,
        };
        let bytes = response_frame(&frame, &verdict, policy, now, pad)?.encode();
        Some(Answer { kind, bytes, events })
    }
}

/// What the no-op receiver answered.
#[derive(Debug, Default)]
pub struct Counts {
    ack: AtomicU64,
    nak: AtomicU64,
    duh: AtomicU64,
    silent: AtomicU64,
    events: AtomicU64,
}

impl Counts {
    fn count(&self, answer: Option<&Answer>) {
        let c = match answer.map(|a| a.kind) {
            Some(ResponseKind::Ack) => &self.ack,
            Some(ResponseKind::Nak) => &self.nak,
            Some(ResponseKind::Duh) => &self.duh,
            None => &self.silent,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(a) = answer {
            self.events.fetch_add(a.events as u64, Ordering::Relaxed);
        }
    }

    /// (ACK, NAK, DUH, no answer) so far.
    pub fn get(&self) -> (u64, u64, u64, u64) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (g(&self.ack), g(&self.nak), g(&self.duh), g(&self.silent))
    }

    /// Events in the frames it accepted so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ack, nak, duh, silent) = self.get();
        write!(
            f,
            "{} frame(s): ACK {ack}, NAK {nak}, DUH {duh}, no answer {silent}; {} event(s) in them",
            ack + nak + duh + silent,
            self.events()
        )
    }
}

/// The bound listeners of a no-op receiver.
pub struct Listeners {
    tcp: TcpListener,
    udp: UdpSocket,
}

impl Listeners {
    /// Bind TCP on `addr`, and UDP on the same address and port (the port TCP got, if `addr`
    /// asks for any).
    pub async fn bind(addr: SocketAddr) -> Result<Listeners, BenchError> {
        let bind_err = |addr, source| BenchError::Bind { addr, source };
        let tcp = TcpListener::bind(addr).await.map_err(|e| bind_err(addr, e))?;
        let tcp_addr = tcp.local_addr().map_err(|e| bind_err(addr, e))?;
        let udp = UdpSocket::bind(tcp_addr).await.map_err(|e| bind_err(tcp_addr, e))?;
        Ok(Listeners { tcp, udp })
    }

    /// The TCP address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.local_addr().ok()
    }

    /// The UDP address.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.local_addr().ok()
    }

    /// Answer every frame until `cancel`; connections still open then are closed.
    pub async fn serve(self, responder: Arc<Responder>, counts: Arc<Counts>, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        tracker.spawn(serve_udp(self.udp, responder.clone(), counts.clone(), cancel.clone()));
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.tcp.accept() => match r {
                    Ok((s, _)) => s,
                    // Out of descriptors and the like: the next accept may work.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            tracker.spawn(connection(stream, responder.clone(), counts.clone(), cancel.clone()));
        }
        tracker.close();
        tracker.wait().await;
    }
}

async fn connection(mut stream: TcpStream, responder: Arc<Responder>, counts: Arc<Counts>, cancel: CancellationToken) {
    // As the daemon's accept path does.
    let _ = stream.set_nodelay(true);
    let framer = responder.framer();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = stream.readable() => if r.is_err() { break },
        }
        match read_available(&stream, &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        }
        while let Some(chunk) = framer.next_chunk(&buf) {
            let len = chunk.len();
            if let Chunk::Frame { .. } = chunk {
                let answer = responder.answer(&buf[..len], false, OffsetDateTime::now_utc(), &mut OsPad);
                counts.count(answer.as_ref());
                if let Some(a) = answer {
                    out.extend_from_slice(&a.bytes);
                }
            }
            // Bytes outside any frame and oversize frames are dropped, as the daemon drops them.
            buf.advance(len);
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
    }
}

async fn serve_udp(socket: UdpSocket, responder: Arc<Responder>, counts: Arc<Counts>, cancel: CancellationToken) {
    let framer = responder.framer();
    // One byte more than the largest frame: a full buffer means the datagram was too long.
    let mut buf = vec![0u8; responder.max_frame_bytes + 1];
    loop {
        let (n, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        if peer.port() == 0 {
            // Nothing can be answered to port 0.
            continue;
        }
        if n > responder.max_frame_bytes {
            // Longer than any frame: the daemon stores it as garbage and answers nothing.
            counts.count(None);
            continue;
        }
        let datagram = &buf[..n];
        let now = OffsetDateTime::now_utc();
        // The daemon's reading of a datagram: one frame, optionally followed by NUL bytes.
        let answer = match split_all(&framer, datagram) {
            (chunks, []) => match chunks.as_slice() {
                [(Chunk::Frame { .. }, frame)] => responder.answer(frame, false, now, &mut OsPad),
                [(Chunk::Frame { .. }, frame), (Chunk::Garbage { nul_only: true, .. }, _)] => {
                    responder.answer(frame, true, now, &mut OsPad)
                }
                _ => responder.answer(datagram, false, now, &mut OsPad),
            },
            _ => responder.answer(datagram, false, now, &mut OsPad),
        };
        counts.count(answer.as_ref());
        if let Some(a) = answer {
            let _ = socket.send_to(&a.bytes, peer).await;
        }
    }
}

/// Run the no-op receiver on `addr` until SIGTERM or SIGINT: one line on stdout when ready,
/// one with what it answered when it stops.
pub fn run(
    addr: SocketAddr,
    files: &[PathBuf],
    threads: Option<u32>,
    out: &mut dyn std::io::Write,
) -> Result<(), BenchError> {
    let responder = Arc::new(Responder::from_files(files)?);
    let mut b = tokio::runtime::Builder::new_multi_thread();
    // The daemon's runtime has a worker per core unless told otherwise; so has this one.
    if let Some(n) = threads {
        if n == 0 || n > super::MAX_THREADS {
            return Err(BenchError::Args(format!("--threads must be 1…{}", super::MAX_THREADS)));
        }
        b.worker_threads(n as usize);
    }
    let rt = b
        .enable_all()
        .thread_name("noop")
        .build()
        .map_err(BenchError::Runtime)?;
    let write_err = |source| BenchError::Write {
        what: "the report".into(),
        source,
    };
    let counts = Arc::new(Counts::default());
    rt.block_on(async {
        let listeners = Listeners::bind(addr).await?;
        let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        writeln!(
            out,
            "meldkamer noop-receiver ready tcp={} udp={} accounts={}",
            show(listeners.tcp_addr()),
            show(listeners.udp_addr()),
            responder.accounts()
        )
        .and_then(|()| out.flush())
        .map_err(write_err)?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        listeners.serve(responder, counts.clone(), cancel).await;
        Ok::<(), BenchError>(())
    })?;
    writeln!(out, "meldkamer noop-receiver stopped after answering {counts}").map_err(write_err)?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::{BENCH_KEY_HEX, BenchEvent, Panel, accounts_toml, bench_key};
    use crate::protocol::crypto::{Key, SeededPad, decrypt_body};
    use crate::protocol::frame::{Body, Frame, Token};
    use crate::protocol::policy::AccountPolicy;
    use tokio::io::AsyncReadExt;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-01-15 12:00:00 UTC);

    fn responder(toml: &str) -> Responder {
        Responder::from_records(&crate::records::parse_toml(toml, "test").expect("records")).expect("responder")
    }

    fn decode(raw: &[u8]) -> Frame {
        decode_frame(raw, &DecodeOptions::default()).expect("a frame")
    }

    fn event(conn: u32) -> BenchEvent {
        Panel::new(conn, 2, false, 0).next_event()
    }

    /// The bytes the decision table and the response builder give for this frame and policy,
    /// with the same pad: what the daemon would send.
    fn expected(raw: &[u8], policy: Option<&AccountPolicy>, seed: u64) -> Option<Vec<u8>> {
        let f = decode(raw);
        let v = evaluate(&f, policy, NOW, Window::default());
        response_frame(&f, &v, policy, NOW, &mut SeededPad::new(seed)).map(|r| r.encode())
    }

    #[test]
    fn plain_and_encrypted_frames_get_the_daemons_answer() {
        for encrypted in [false, true] {
            let r = responder(&accounts_toml(2, 2, encrypted));
            assert_eq!(r.accounts(), 4);
            let policy = AccountPolicy {
                key: encrypted.then(bench_key),
                require_encryption: encrypted,
                ..AccountPolicy::default()
            };
            let key = encrypted.then(bench_key);
            let raw = event(1).encode(key.as_ref(), NOW, 7);
            let a = r.answer(&raw, false, NOW, &mut SeededPad::new(3)).expect("an answer");
            let (kind, bytes) = (a.kind, a.bytes);
            assert_eq!(kind, ResponseKind::Ack);
            assert_eq!(a.events, 1, "the alarm, read as the daemon reads it");
            assert_eq!(Some(bytes.clone()), expected(&raw, Some(&policy), 3), "byte for byte");
            let ack = decode(&bytes);
            assert_eq!((&ack.token, ack.encrypted), (&Token::Ack, encrypted));
            if encrypted {
                // The *ACK is encrypted with the account key and carries the receiver's time.
                let Body::Encrypted(ct) = &ack.body else {
                    panic!("encrypted body")
                };
                let k = Key::from_hex(BENCH_KEY_HEX).expect("key");
                let plain = decrypt_body(&k, ct).expect("decrypts").plain;
                assert!(plain.timestamp.is_some());
            }
        }
    }

    #[test]
    fn refusals_and_silence_follow_the_decision_table() {
        let plain = responder(&accounts_toml(1, 2, false));
        let keyed = responder(&accounts_toml(1, 2, true));
        let ev = event(0);
        let pad = &mut SeededPad::new(0);
        // Unknown account: DUH (connection 1's accounts are not in a one-connection file).
        let stranger = event(1).encode(None, NOW, 0);
        assert_eq!(
            plain.answer(&stranger, false, NOW, pad).map(|a| a.kind),
            Some(ResponseKind::Duh)
        );
        // Plain frame to an account that requires encryption: DUH.
        let raw = ev.encode(None, NOW, 0);
        assert_eq!(
            keyed.answer(&raw, false, NOW, pad).map(|a| a.kind),
            Some(ResponseKind::Duh)
        );
        // Encrypted with another key: NAK; stale: NAK.
        let other = Key::from_hex("000102030405060708090A0B0C0D0E0F").expect("key");
        let wrong = ev.encode(Some(&other), NOW, 0);
        assert_eq!(
            keyed.answer(&wrong, false, NOW, pad).map(|a| a.kind),
            Some(ResponseKind::Nak)
        );
        let stale = ev.encode(Some(&bench_key()), NOW, 0);
        let later = NOW + time::Duration::seconds(41);
        assert_eq!(
            keyed.answer(&stale, false, later, pad).map(|a| a.kind),
            Some(ResponseKind::Nak)
        );
        // Not a frame, a broken CRC, NUL padding the account has not enabled: no answer.
        assert_eq!(plain.answer(b"\nnot a frame\r", false, NOW, pad), None);
        let mut bad = raw.clone();
        bad[1] = if bad[1] == b'0' { b'1' } else { b'0' };
        assert_eq!(plain.answer(&bad, false, NOW, pad), None);
        assert_eq!(plain.answer(&raw, true, NOW, pad), None);
        assert!(plain.answer(&raw, false, NOW, pad).is_some());
        // A disabled account is unknown to the daemon, and so to this.
        let disabled = responder(&format!("[[account]]\naccount = \"{}\"\nenabled = false\n", ev.account));
        assert_eq!(disabled.accounts(), 0);
        assert_eq!(
            disabled.answer(&raw, false, NOW, pad).map(|a| a.kind),
            Some(ResponseKind::Duh)
        );
    }

    #[test]
    fn events_are_read_from_accepted_frames_only() {
        let r = responder(&accounts_toml(1, 2, false));
        let pad = &mut SeededPad::new(0);
        // The ninth event of a mixed panel is a link test: ACKed, no event in it.
        let mut p = Panel::new(0, 2, true, 0);
        let kinds: Vec<(ResponseKind, usize)> = (0..10)
            .map(|_| {
                let a = r
                    .answer(&p.next_event().encode(None, NOW, 0), false, NOW, pad)
                    .expect("answer");
                (a.kind, a.events)
            })
            .collect();
        assert!(kinds.iter().all(|(k, _)| *k == ResponseKind::Ack), "{kinds:?}");
        let events: Vec<usize> = kinds.iter().map(|(_, e)| *e).collect();
        assert_eq!(events, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
        // A refused frame carries none for the receiver.
        let stranger = event(1).encode(None, NOW, 0);
        assert_eq!(r.answer(&stranger, false, NOW, pad).map(|a| a.events), Some(0));
    }

    #[tokio::test]
    async fn it_answers_over_tcp_and_udp_and_counts_what_it_answered() {
        let responder = Arc::new(responder(&accounts_toml(1, 2, false)));
        let counts = Arc::new(Counts::default());
        let listeners = Listeners::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let (tcp, udp) = (listeners.tcp_addr().expect("tcp"), listeners.udp_addr().expect("udp"));
        assert_eq!(tcp, udp, "one port for both");
        let cancel = CancellationToken::new();
        let server = tokio::spawn(listeners.serve(responder, counts.clone(), cancel.clone()));
        let wait = std::time::Duration::from_secs(10);

        let mut panel = Panel::new(0, 2, false, 0);
        let mut s = TcpStream::connect(tcp).await.expect("connect");
        // Two frames in one write, with garbage between them: two answers, in order.
        let (a, b) = (panel.next_event(), panel.next_event());
        let mut two = a.encode(None, OffsetDateTime::now_utc(), 0);
        two.extend_from_slice(b"garbage");
        two.extend_from_slice(&b.encode(None, OffsetDateTime::now_utc(), 0));
        s.write_all(&two).await.expect("write");
        let mut got = Vec::new();
        while got.iter().filter(|b| **b == b'\r').count() < 2 {
            let mut chunk = [0u8; 256];
            let n = tokio::time::timeout(wait, s.read(&mut chunk))
                .await
                .expect("in time")
                .expect("read");
            assert!(n > 0, "closed early");
            got.extend_from_slice(&chunk[..n]);
        }
        let answers: Vec<Frame> = got.split_inclusive(|b| *b == b'\r').map(decode).collect();
        assert_eq!(answers.len(), 2);
        assert_eq!((&answers[0].token, answers[0].seq), (&Token::Ack, a.seq));
        assert_eq!(answers[1].account.number(), Some(b.account.as_str()));

        let u = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        u.connect(udp).await.expect("connect");
        let c = panel.next_event();
        u.send(&c.encode(None, OffsetDateTime::now_utc(), 0))
            .await
            .expect("send");
        let mut d = [0u8; 512];
        let n = tokio::time::timeout(wait, u.recv(&mut d))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(decode(&d[..n]).token, Token::Ack);

        assert_eq!(counts.get(), (3, 0, 0, 0));
        assert_eq!(
            counts.to_string(),
            "3 frame(s): ACK 3, NAK 0, DUH 0, no answer 0; 3 event(s) in them"
        );
        // Stopping closes the connection that is still open.
        cancel.cancel();
        tokio::time::timeout(wait, server).await.expect("stops").expect("join");
        let mut rest = [0u8; 16];
        assert_eq!(s.read(&mut rest).await.ok(), Some(0), "closed");
    }
}
