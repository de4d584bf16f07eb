//! The fixture library (`fixtures/traces/`), written as code: every panel frame is built with
//! the protocol API (no hand-computed CRC, length or ciphertext), and every `>` line says which
//! answer it exists to show. `MELDKAMER_GEN_FIXTURES=1 cargo test --test it generate_fixture_library`
//! writes the traces and blesses them (the `<` lines and the outcome files come from an
//! in-process run); the tests then check that the committed files still match this generator
//! and that every blessed answer is the intended one.

use meldkamer::protocol::crypto::{Key, SeededPad, encrypt_body};
use meldkamer::protocol::frame::{AccountField, Body, CrcFormat, Frame, Framing, Plain, Token, XData};
use meldkamer::protocol::timestamp::Timestamp;
use time::OffsetDateTime;
use time::macros::datetime;

/// The virtual start time of every library trace.
pub const T0: OffsetDateTime = datetime!(2026-01-15 12:00:00 UTC);

pub const K128: &str = "5A3C9E0F17B24D68A1C3E5F7092B4D6F";
pub const K192: &str = "0F1E2D3C4B5A69788796A5B4C3D2E1F00112233445566778";
pub const K256: &str = "C0FFEE00DEADBEEF0123456789ABCDEF00FF00FF00FF00FF1122334455667788";
pub const A128: &str = "proef-sleutel-16";
pub const A256: &str = "proef-sleutel-aes256-synthetisch";
pub const HIKVISION: &str = "48494B564953494F4E2D50524F45462D";
/// Not any account's key.
pub const WRONG: &str = "000102030405060708090A0B0C0D0E0F";

fn hex(k: &str) -> Key {
    Key::from_hex(k).expect("hex key")
}

fn ascii(k: &str) -> Key {
    Key::from_ascii(k).expect("ascii key")
}

fn secs(s: i64) -> time::Duration {
    time::Duration::seconds(s)
}

/// A panel frame under construction.
#[derive(Clone)]
pub struct F {
    token: Token,
    seq: u16,
    receiver: Option<String>,
    line: String,
    account: String,
    data: String,
    xdata: Vec<XData>,
    ts: Option<OffsetDateTime>,
    key: Option<(Key, u64)>,
    framing: Framing,
    /// No `#acct` in the header (the account only in the data).
    no_account: bool,
}

/// A frame with receiver 1, line 1, a timestamp at `T0`.
pub fn frame(token: &str, seq: u16, account: &str, data: &str) -> F {
    F {
        token: Token::from_text(token),
        seq,
        receiver: Some("1".into()),
        line: "1".into(),
        account: account.into(),
        data: data.into(),
        xdata: Vec::new(),
        ts: Some(T0),
        key: None,
        framing: Framing::default(),
        no_account: false,
    }
}

impl F {
    pub fn at(mut self, t: OffsetDateTime) -> F {
        self.ts = Some(t);
        self
    }
    pub fn no_ts(mut self) -> F {
        self.ts = None;
        self
    }
    pub fn key(mut self, k: Key, pad_seed: u64) -> F {
        self.key = Some((k, pad_seed));
        self
    }
    pub fn header(mut self, receiver: Option<&str>, line: &str) -> F {
        self.receiver = receiver.map(str::to_string);
        self.line = line.into();
        self
    }
    pub fn xdata(mut self, id: char, value: &str) -> F {
        self.xdata.push(XData {
            id,
            value: value.into(),
        });
        self
    }
    pub fn binary_crc(mut self) -> F {
        self.framing.crc = CrcFormat::Binary;
        self
    }
    pub fn cr_in_crc(mut self) -> F {
        self.framing.cr_in_crc = true;
        self
    }
    pub fn no_account(mut self) -> F {
        self.no_account = true;
        self
    }
    /// The frame with a CRC digit changed: its CRC no longer checks out.
    pub fn bad_crc(&self) -> Vec<u8> {
        let mut b = self.bytes();
        b[1] = if b[1] == b'0' { b'1' } else { b'0' };
        b
    }
    /// The frame with its length field one too high.
    pub fn bad_length(&self) -> Vec<u8> {
        let mut b = self.bytes();
        let len = u16::from_str_radix(std::str::from_utf8(&b[5..9]).expect("ascii"), 16).expect("hex");
        b[5..9].copy_from_slice(format!("{:04X}", len + 1).as_bytes());
        b
    }
    pub fn bytes(&self) -> Vec<u8> {
        let plain = Plain {
            data: self.data.clone(),
            xdata: self.xdata.clone(),
            timestamp: self.ts.map(Timestamp::from_datetime),
        };
        let (encrypted, body) = match &self.key {
            Some((k, seed)) => (
                true,
                Body::Encrypted(encrypt_body(k, &plain, false, &mut SeededPad::new(*seed))),
            ),
            None => (false, Body::Plain(plain)),
        };
        Frame {
            framing: self.framing,
            token: self.token.clone(),
            encrypted,
            seq: self.seq,
            receiver: self.receiver.clone(),
            line: self.line.clone(),
            account: if self.no_account {
                AccountField::Absent
            } else {
                AccountField::Number(self.account.clone())
            },
            body,
        }
        .encode()
    }
}

/// One line of a generated trace.
pub enum Line {
    Text(String),
    /// Panel bytes, and the answers they must get: `ACK`, `*ACK`, `NAK`, `DUH` or `none`.
    Send(Vec<u8>, Vec<&'static str>),
}

/// A generated trace.
pub struct Fixture {
    pub name: &'static str,
    pub lines: Vec<Line>,
}

impl Fixture {
    fn new(name: &'static str, title: &str, about: &[&str]) -> Fixture {
        let mut lines = vec![Line::Text(format!("# {title}"))];
        for a in about {
            lines.push(Line::Text(format!("# {a}")));
        }
        lines.push(Line::Text(
            "# Generated by tests/it/replay/library.rs; blessed in-process.".into(),
        ));
        lines.push(Line::Text(format!("@title {title}")));
        lines.push(Line::Text("@records ../records/traces.toml".into()));
        lines.push(Line::Text("@clock 2026-01-15T12:00:00Z".into()));
        lines.push(Line::Text("@pad-seed 1".into()));
        Fixture { name, lines }
    }
    fn d(mut self, directive: &str) -> Fixture {
        self.lines.push(Line::Text(directive.into()));
        self
    }
    fn note(mut self, comment: &str) -> Fixture {
        self.lines.push(Line::Text(format!("# {comment}")));
        self
    }
    fn send(mut self, bytes: Vec<u8>, expect: &[&'static str]) -> Fixture {
        self.lines.push(Line::Send(bytes, expect.to_vec()));
        self
    }
    fn f(self, f: &F, expect: &'static str) -> Fixture {
        self.send(f.bytes(), &[expect])
    }

    /// The trace text with `< (none)` placeholders (bless fills them in).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            match l {
                Line::Text(t) => s.push_str(t),
                Line::Send(b, expect) => {
                    s.push_str(&meldkamer::trace::send_line(b));
                    for _ in expect {
                        s.push_str("\n< (none)");
                    }
                }
            }
            s.push('\n');
        }
        s
    }

    /// The intended answers, in order.
    pub fn intent(&self) -> Vec<&'static str> {
        self.lines
            .iter()
            .flat_map(|l| match l {
                Line::Send(_, e) => e.clone(),
                Line::Text(_) => Vec::new(),
            })
            .collect()
    }
}

/// A frame of 7010 whose binary CRC contains a CR or LF byte (the framer must skip it).
fn binary_crc_with_cr_or_lf() -> F {
    (0..10000u16)
        .map(|seq| frame("SIA-DCS", seq, "7010", "#7010|Nri1/BA01"))
        .find(|f| {
            let b = f.clone().binary_crc().bytes();
            matches!(b[1], b'\r' | b'\n') || matches!(b[2], b'\r' | b'\n')
        })
        .expect("some sequence number gives a CRC byte 0x0A or 0x0D")
        .binary_crc()
}

/// Every trace of the library.
pub fn library() -> Vec<Fixture> {
    let k128 = hex(K128);
    let k192 = hex(K192);
    let k256 = hex(K256);
    let a128 = ascii(A128);
    let a256 = ascii(A256);
    let hik = hex(HIKVISION);
    let wrong = hex(WRONG);
    let ba = |seq, acct: &str| frame("SIA-DCS", seq, acct, &format!("#{acct}|Nri1/BA01"));
    vec![
        // ---- normal flows ------------------------------------------------------------------
        Fixture::new(
            "sia-alarm-restore",
            "SIA-DCS burglary alarm on zone 3, then its restore",
            &[],
        )
        .f(&frame("SIA-DCS", 1, "7001", "#7001|Nri1/BA03"), "ACK")
        .d("@advance 30s")
        .f(&frame("SIA-DCS", 2, "7001", "#7001|Nri1/BR03").at(T0 + secs(30)), "ACK"),
        Fixture::new("sia-open-close", "SIA-DCS opening and closing by user 5", &[])
            .f(&frame("SIA-DCS", 3, "7001", "#7001|Nri1/OP5"), "ACK")
            .d("@advance 10m")
            .f(&frame("SIA-DCS", 4, "7001", "#7001|Nri1/CL5").at(T0 + secs(600)), "ACK"),
        Fixture::new(
            "null-poll-tcp",
            "NULL link tests over TCP, with and without a timestamp",
            &[],
        )
        .f(&frame("NULL", 0, "7001", "").no_ts(), "ACK")
        .d("@advance 30s")
        .f(&frame("NULL", 0, "7001", "").at(T0 + secs(30)), "ACK"),
        Fixture::new("null-poll-udp", "NULL link tests over UDP", &[])
            .d("@transport udp")
            .f(&frame("NULL", 0, "7001", "").no_ts(), "ACK")
            .d("@advance 30s")
            .f(&frame("NULL", 1, "7001", "").no_ts(), "ACK"),
        Fixture::new(
            "cid-alarm-restore",
            "ADM-CID burglary (1130) on zone 3, then its restore (3130)",
            &[],
        )
        .f(&frame("ADM-CID", 5, "7001", "#7001|1130 01 003"), "ACK")
        .d("@advance 20s")
        .f(
            &frame("ADM-CID", 6, "7001", "#7001|3130 01 003").at(T0 + secs(20)),
            "ACK",
        ),
        Fixture::new(
            "sia-several-events",
            "Several events in one SIA-DCS frame: one ACK, every event stored",
            &["Two zones in one packet, a fire in another area, and a text block."],
        )
        .f(
            &frame(
                "SIA-DCS",
                7,
                "7001",
                "#7001|Nri1/BA01/BA03|Nri2/FA04|ASmoke in the storeroom",
            ),
            "ACK",
        ),
        Fixture::new(
            "sia-xdata",
            "Extended data: location, time of the event, a video link",
            &[],
        )
        .f(
            &frame("SIA-DCS", 8, "7001", "#7001|Nri1/PA001")
                .xdata('X', "E05.123456")
                .xdata('Y', "N52.654321")
                .xdata('H', "11:59:58,01-15-2026")
                .xdata('V', "http://cam.example/1"),
            "ACK",
        ),
        Fixture::new(
            "enc-aes128-hex",
            "AES-128 (hex key): an event and a link test get *ACK",
            &[],
        )
        .f(&ba(9, "7002").key(k128.clone(), 1), "*ACK")
        .f(&frame("NULL", 10, "7002", "").key(k128.clone(), 2), "*ACK"),
        Fixture::new("enc-aes192-hex", "AES-192 (hex key): fire alarm gets *ACK", &[])
            .f(&frame("SIA-DCS", 11, "7003", "#7003|Nri1/FA04").key(k192, 3), "*ACK"),
        Fixture::new(
            "enc-aes256-hex",
            "AES-256 (hex key): Contact ID over DC-09 gets *ACK",
            &[],
        )
        .f(&frame("ADM-CID", 12, "7004", "#7004|1110 01 004").key(k256, 4), "*ACK"),
        Fixture::new(
            "enc-aes128-ascii",
            "AES-128 with a key entered as 16 ASCII characters",
            &[],
        )
        .f(&ba(13, "7005").key(a128, 5), "*ACK"),
        Fixture::new(
            "enc-aes256-ascii",
            "AES-256 with a key entered as 32 ASCII characters",
            &[],
        )
        .f(&ba(14, "7006").key(a256, 6), "*ACK"),
        Fixture::new(
            "enc-stale-nak-resend",
            "A panel clock 2 minutes behind: NAK with receiver time, clock-corrected resend gets *ACK",
            &["The resend keeps the sequence number (dc09.md section 10): one event is stored."],
        )
        .f(&ba(15, "7002").key(k128.clone(), 7).at(T0 - secs(120)), "NAK")
        .f(&ba(15, "7002").key(k128.clone(), 8), "*ACK"),
        Fixture::new(
            "enc-future-nak-resend",
            "A panel clock a minute ahead: NAK, then the clock-corrected resend gets *ACK",
            &[],
        )
        .f(&ba(16, "7002").key(k128.clone(), 9).at(T0 + secs(60)), "NAK")
        .f(&ba(16, "7002").key(k128.clone(), 10), "*ACK"),
        Fixture::new(
            "enc-window-edges",
            "The timestamp window is -40 s ... +20 s inclusive",
            &["40 s behind and 20 s ahead are accepted; 41 s behind and 21 s ahead get NAK."],
        )
        .f(&ba(17, "7002").key(k128.clone(), 11).at(T0 - secs(40)), "*ACK")
        .f(&ba(18, "7002").key(k128.clone(), 12).at(T0 + secs(20)), "*ACK")
        .f(&ba(19, "7002").key(k128.clone(), 13).at(T0 - secs(41)), "NAK")
        .f(&ba(20, "7002").key(k128.clone(), 14).at(T0 + secs(21)), "NAK"),
        Fixture::new(
            "enc-wrong-key-nak",
            "Encrypted with a key that is not the account's: NAK (never DUH, never ACK)",
            &[],
        )
        .f(&ba(21, "7002").key(wrong.clone(), 15), "NAK"),
        Fixture::new(
            "duh-unknown-account",
            "An account the receiver does not know: DUH, stored for the supervisor",
            &[],
        )
        .f(&ba(22, "7999"), "DUH"),
        Fixture::new(
            "duh-unsupported-token",
            "Well-formed frames with tokens meldkamer does not process: DUH",
            &[
                "SIA-PUL is a legacy format; RSP is a receiver's response, which a panel has no reason",
                "to send (protocols/dc09.md section 4).",
            ],
        )
        .f(&frame("SIA-PUL", 23, "7001", "#7001|Nri1/BA01"), "DUH")
        .f(&frame("RSP", 24, "7001", ""), "DUH"),
        Fixture::new(
            "duh-plain-refused",
            "A plain frame from an account that requires encryption: DUH (no downgrade)",
            &[],
        )
        .f(&ba(25, "7002"), "DUH"),
        Fixture::new(
            "duh-no-key",
            "An encrypted frame from an account without a key: DUH",
            &[],
        )
        .f(&ba(26, "7001").key(k128.clone(), 16), "DUH"),
        Fixture::new(
            "retransmission-tcp",
            "A retransmission over TCP is ACKed again but stored as one event",
            &["Same sequence number and payload: on the same connection and on a new one."],
        )
        .f(&ba(27, "7001"), "ACK")
        .d("@advance 5s")
        .f(&ba(27, "7001").at(T0 + secs(5)), "ACK")
        .d("@connect")
        .d("@advance 5s")
        .f(&ba(27, "7001").at(T0 + secs(10)), "ACK"),
        Fixture::new(
            "retransmission-udp",
            "UDP retransmissions (plain and encrypted, new pad each time) are one event each",
            &[],
        )
        .d("@transport udp")
        .f(&ba(28, "7001"), "ACK")
        .f(&ba(28, "7001"), "ACK")
        .f(&ba(29, "7002").key(k128.clone(), 17), "*ACK")
        .d("@advance 2s")
        .f(&ba(29, "7002").key(k128.clone(), 18).at(T0 + secs(2)), "*ACK"),
        Fixture::new(
            "two-frames-one-write",
            "Two frames in one TCP write: each gets its own answer, in order",
            &[],
        )
        .send(
            [
                ba(30, "7001").bytes(),
                frame("SIA-DCS", 31, "7001", "#7001|Nri1/BR01").bytes(),
            ]
            .concat(),
            &["ACK", "ACK"],
        ),
        Fixture::new(
            "garbage-between-frames",
            "Bytes that are not DC-09 never get an answer and never wedge the connection",
            &[
                "Galaxy F#123456 lines (pysiaalarm #41/#75), an ATS HID=... line (pysiaalarm #43), legacy",
                "SIA bytes (ioBroker.sia #12) and a frame start cut off by a new LF.",
            ],
        )
        .send(b"F#123456".to_vec(), &["none"])
        .send([b"F#123456".to_vec(), ba(32, "7001").bytes()].concat(), &["ACK"])
        .send(
            [
                b"HID=1234#LFQ=600#CRC=ABCD##\x05\x01\x81\x59\x68".to_vec(),
                ba(33, "7001").bytes(),
                b"\n\"SIA-DCS\"00".to_vec(),
                ba(34, "7001").bytes(),
            ]
            .concat(),
            &["ACK", "ACK"],
        ),
        Fixture::new(
            "unknown-code-ack",
            "An unknown SIA code is ACKed, not DUHed (a DUH wedges panels: HA core #88675)",
            &["The event is stored without a table meaning and reaches the supervisor queue."],
        )
        .f(&frame("SIA-DCS", 35, "7001", "#7001|Nri1/ZX01"), "ACK"),
        Fixture::new(
            "ack-without-receiver",
            "A frame without R gets an ACK without R (the shape a Pyronix accepted: HA core #180511)",
            &[],
        )
        .f(
            &frame("SIA-DCS", 36, "7001", "#7001|Nri0/BA01").header(None, "0"),
            "ACK",
        ),
        // ---- quirks: each switched on, and refused without the switch ---------------------
        Fixture::new(
            "quirk-crc-binary-on",
            "crc_binary switched on: a CRC sent as two raw bytes is accepted and answered the same way",
            &["The second frame's CRC contains a CR or LF byte, which the framer must skip."],
        )
        .f(&ba(37, "7010").binary_crc(), "ACK")
        .f(&binary_crc_with_cr_or_lf(), "ACK")
        .d("@transport udp")
        .f(&ba(38, "7010").binary_crc(), "ACK"),
        Fixture::new(
            "quirk-crc-binary-off",
            "Without crc_binary a binary-CRC frame gets no answer; the connection stays usable",
            &[],
        )
        .f(&ba(39, "7001").binary_crc(), "none")
        .f(&ba(40, "7001"), "ACK"),
        Fixture::new(
            "quirk-cr-in-crc-on",
            "cr_in_crc switched on: CRC and length counting the CR are accepted, the ACK counts it too",
            &["Eldes panels (Cheaterdev/sia-ha #3)."],
        )
        .f(&ba(41, "7011").cr_in_crc(), "ACK")
        .d("@transport udp")
        .f(&frame("NULL", 42, "7011", "").no_ts().cr_in_crc(), "ACK"),
        Fixture::new(
            "quirk-cr-in-crc-off",
            "Without cr_in_crc such a frame gets no answer",
            &[],
        )
        .f(&ba(43, "7001").cr_in_crc(), "none")
        .f(&ba(44, "7001"), "ACK"),
        Fixture::new(
            "quirk-trailing-nul-on",
            "trailing_nul switched on: a UDP datagram with NUL bytes after the CR is answered",
            &["ioBroker.sia #11 panels pad datagrams with 0x00."],
        )
        .d("@transport udp")
        .send([ba(45, "7012").bytes(), vec![0, 0, 0]].concat(), &["ACK"]),
        Fixture::new(
            "quirk-trailing-nul-off",
            "Without trailing_nul such a datagram gets no answer; on TCP the NULs are only noise",
            &["On TCP the frame is answered before the NULs arrive, so the switch does not matter there."],
        )
        .d("@transport udp")
        .send([ba(46, "7001").bytes(), vec![0, 0, 0]].concat(), &["none"])
        .d("@transport tcp")
        .send([ba(47, "7001").bytes(), vec![0, 0, 0]].concat(), &["ACK"])
        .f(&ba(48, "7001"), "ACK"),
        Fixture::new(
            "iobroker-empty-line-prefix",
            "L without digits (ioBroker.sia #11) is an empty line prefix: ACKed, L# echoed",
            &[
                "The account has trailing_nul, for the NUL after the CR in the UDP datagram; the empty",
                "line prefix needs no switch (protocols/dc09.md section 6.1).",
            ],
        )
        .d("@transport udp")
        .send(
            meldkamer::protocol::frame::wrap(b"\"NULL\"0001L#7012[]", Framing::default())
                .into_iter()
                .chain([0u8])
                .collect(),
            &["ACK"],
        ),
        Fixture::new(
            "g90b-empty-line-prefix",
            "Chinese IP hosts (G90B-style, ioBroker.sia #19): \"SIA-DCS\"0001L#… with a NUL after the CR",
            &[
                "An event over TCP and a link test over UDP, each followed by one NUL: both ACKed, the",
                "ACK echoes L#. On TCP the NUL is noise after the frame; on UDP the account's trailing_nul",
                "switch accepts it.",
            ],
        )
        .send(
            [frame("SIA-DCS", 1, "7030", "#7030|NBA4").header(None, "").bytes(), vec![0]].concat(),
            &["ACK"],
        )
        .d("@transport udp")
        .send(
            [frame("NULL", 0, "7030", "").header(None, "").no_ts().bytes(), vec![0]].concat(),
            &["ACK"],
        ),
        // ---- answers for frames whose header cannot be read --------------------------------
        Fixture::new(
            "focus-unreadable-account",
            "FOCUS FC-7688 (pysiaalarm #36): a non-hex account with a right CRC and length gets DUH",
            &[
                "The DUH echoes the header as sent; the supervisor gets one item for the source with the",
                "raw frame (the retry a minute later is answered the same, and joins nothing new).",
            ],
        )
        .f(
            &frame("ADM-CID", 6616, "foc7688", "#foc7688|1351 01 000").header(Some("0"), "0").no_ts(),
            "DUH",
        )
        .d("@advance 60s")
        .f(
            &frame("ADM-CID", 6616, "foc7688", "#foc7688|1351 01 000").header(Some("0"), "0").no_ts(),
            "DUH",
        ),
        Fixture::new(
            "tellmon-missing-line",
            "Tellmon IP bridge (pysiaalarm #60): a header without L is unreadable, answered DUH with the header echoed",
            &["DC-09 makes L mandatory; without it the account cannot be told from the line (dc09.md 6.1)."],
        )
        .send(
            meldkamer::protocol::frame::wrap(b"\"NULL\"0001#7001[]_12:00:00,01-15-2026", Framing::default()),
            &["DUH"],
        ),
        Fixture::new(
            "integrity-failures-repeated",
            "Frames failing CRC or length are never answered; a source that keeps sending them gets one supervisor item",
            &[
                "Three failures within 10 minutes from one address raise the item (a line glitch and",
                "its retry do not); more within the next 10 minutes raise nothing new. A good frame in",
                "between is answered as usual.",
            ],
        )
        .send(ba(59, "7001").bad_crc(), &["none"])
        .d("@advance 5s")
        .send(ba(59, "7001").at(T0 + secs(5)).bad_length(), &["none"])
        .f(&ba(60, "7001").at(T0 + secs(5)), "ACK")
        .d("@advance 5s")
        .send(ba(59, "7001").at(T0 + secs(10)).bad_crc(), &["none"])
        .d("@advance 5s")
        .send(ba(59, "7001").at(T0 + secs(15)).bad_crc(), &["none"]),
        Fixture::new(
            "account-in-data-only",
            "A header without an account (pysiaalarm case_op): the account is read from the data",
            &[
                "Plain SIA-DCS and ADM-CID frames are ACKed with the header echoed as sent (no account);",
                "an encrypted frame without a header account cannot be given a key: DUH.",
            ],
        )
        .f(&frame("SIA-DCS", 61, "7001", "#7001|Nri1/BA03").no_account(), "ACK")
        .f(&frame("ADM-CID", 62, "7001", "#7001|3130 01 003").no_account(), "ACK")
        .f(&ba(63, "7002").key(k128.clone(), 20).no_account(), "DUH"),
        // ---- DC-09 completeness: XNM, key change ----------------------------------------
        Fixture::new(
            "xnm-extended-null",
            "XNM (extended null, DC-09-2026) is a link test: ACK, *ACK when encrypted",
            &[
                "Its extended data (here a path number and a supervision category) is read but not used:",
                "an XNM counts as a poll of the account, like NULL (protocols/dc09.md section 4).",
            ],
        )
        .f(&frame("XNM", 0, "7001", "").xdata('G', "2").xdata('C', "DP").no_ts(), "ACK")
        .f(&frame("XNM", 0, "7002", "").xdata('G', "1").key(k128.clone(), 21), "*ACK"),
        Fixture::new(
            "key-change-refused",
            "A key offered over the air (K extended data) is never adopted: the event is ACKed, the supervisor told",
            &[
                "meldkamer never answers RSP and never stores a key from the wire (protocols/dc09.md",
                "section 15.4): the next frame under the old key is still accepted.",
            ],
        )
        .f(
            &frame("SIA-DCS", 64, "7001", "#7001|Nri1/RP").xdata('K', "00112233445566778899AABBCCDDEEFF"),
            "ACK",
        )
        .f(
            &frame("NULL", 65, "7002", "")
                .xdata('K', "FFEEDDCCBBAA99887766554433221100")
                .key(k128.clone(), 22),
            "*ACK",
        )
        .f(&ba(66, "7002").key(k128.clone(), 23), "*ACK"),
        // ---- panels from the field reports ------------------------------------------------
        Fixture::new(
            "satel-nri2-id1-op",
            "Satel Perfecta: Nri2/id1/OP is an opening by user 1 in area 2, ACKed (pysiaalarm #51 got DUH)",
            &[],
        )
        .f(&frame("SIA-DCS", 49, "7020", "#7020|Nri2/id1/OP"), "ACK"),
        Fixture::new(
            "scantronic-nti-id1-rp",
            "Scantronic SIA3: Nti19:44/id1/RP is a periodic test with a time, ACKed (pysiaalarm #8 got DUH)",
            &[],
        )
        .f(&frame("SIA-DCS", 50, "7021", "#7021|Nti19:44/id1/RP"), "ACK"),
        Fixture::new(
            "hikvision-null-tagged",
            "Hikvision hub: events tagged NULL / *NULL (key entered as hex) are stored and acknowledged",
            &[
                "A NULL frame with data is not a link test: its data is read as SIA-DCS (else ADM-CID),",
                "stored, correlated and acknowledged (eavanvalkenburg/sia #17). An empty NULL is a poll.",
            ],
        )
        .f(&frame("NULL", 51, "7022", "#7022|Nri1/BA01"), "ACK")
        .f(&frame("NULL", 52, "7022", "#7022|Nri1/BA02").key(hik, 19), "*ACK"),
        Fixture::new(
            "ajax-nf-pc",
            "Ajax hub codes NF and PC are ACKed, never DUHed (HA core #88675: DUH wedged the hub)",
            &[],
        )
        .f(&frame("SIA-DCS", 53, "7023", "#7023|Nri1/NF"), "ACK")
        .f(&frame("SIA-DCS", 54, "7023", "#7023|Nid0/PC"), "ACK"),
        Fixture::new(
            "local-time-plain",
            "Plain frames stamped in local time (UTC+1, UTC+2) are accepted unless the account checks them",
            &[
                "Egardia/Woonveilig (pysiaalarm PR #27). check_plain_timestamp (account 7013) turns the",
                "window on for plain frames: the same frame then gets NAK.",
            ],
        )
        .f(
            &frame("SIA-DCS", 55, "7024", "#7024|Nri1/BA01").at(T0 + secs(3600)),
            "ACK",
        )
        .f(
            &frame("SIA-DCS", 56, "7024", "#7024|Nri1/BR01").at(T0 + secs(7200)),
            "ACK",
        )
        .f(
            &frame("SIA-DCS", 57, "7013", "#7013|Nri1/BA01").at(T0 + secs(3600)),
            "NAK",
        )
        .note("Without a timestamp there is nothing to check: accepted.")
        .f(&frame("SIA-DCS", 58, "7013", "#7013|Nri1/BA01").no_ts(), "ACK"),
    ]
}

/// The answer kind of a response (`none` for no response).
pub fn kind(response: Option<&[u8]>) -> String {
    let Some(r) = response else {
        return "none".into();
    };
    let opts = meldkamer::protocol::frame::DecodeOptions {
        quirks: meldkamer::protocol::frame::Quirks::ALL,
        max_len: meldkamer::protocol::frame::MAX_FRAME_LEN,
    };
    match meldkamer::protocol::frame::decode_frame(r, &opts) {
        Ok(f) => format!("{}{}", if f.encrypted { "*" } else { "" }, f.token.as_str()),
        // The DUH to an unreadable frame echoes its header, which need not parse either.
        Err(meldkamer::protocol::frame::DecodeError::Unreadable { .. }) if r.get(9..14) == Some(b"\"DUH\"") => {
            "DUH".into()
        }
        Err(_) => "garbage".into(),
    }
}
