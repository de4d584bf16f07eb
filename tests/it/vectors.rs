//! Every vector in `fixtures/vectors/dc09-public.json` (copied from the project's protocol
//! notes; sources are named in each vector) as a test: decoded fields, the CRC/length verdict,
//! and the exact response bytes where the vector gives them.

use meldkamer::event::{Event, EventCode, events_from};
use meldkamer::protocol::cid::{CidError, parse_contact_id};
use meldkamer::protocol::crypto::{Key, SeededPad, decrypt_body};
use meldkamer::protocol::frame::{Body, DecodeError, DecodeOptions, Frame, Plain, decode_frame};
use meldkamer::protocol::framer::{Chunk, Framer, split_all};
use meldkamer::protocol::policy::{AccountPolicy, Verdict, Window, evaluate, response_frame};
use meldkamer::protocol::timestamp::Timestamp;
use serde_json::Value;
use time::OffsetDateTime;

const VECTORS: &str = include_str!("../../fixtures/vectors/dc09-public.json");

fn receiver_clock(v: &Value) -> OffsetDateTime {
    let s = v["expect"]["receiver_clock"].as_str().unwrap_or("12:00:00,01-15-2026");
    Timestamp::parse(s.as_bytes()).expect("clock").to_datetime()
}

fn key_of(v: &Value) -> Option<Key> {
    let k = v["key_hex"].as_str()?;
    Some(Key::from_hex(k).expect("vector key"))
}

fn s(v: &Value) -> Option<&str> {
    v.as_str()
}

fn plain_of(frame: &Frame, key: Option<&Key>) -> Plain {
    match &frame.body {
        Body::Plain(p) => p.clone(),
        Body::Encrypted(ct) => decrypt_body(key.expect("key"), ct).expect("decrypts").plain,
    }
}

fn check_event_fields(id: &str, exp: &Value, events: &[Event]) {
    if let Some(list) = exp["events"].as_array() {
        assert_eq!(list.len(), events.len(), "{id}: number of events");
        for (e, ev) in list.iter().zip(events) {
            check_one(id, e, ev);
        }
    } else if exp.get("code").is_some() || exp.get("cid_event").is_some() {
        check_one(id, exp, &events[0]);
    }
}

fn check_one(id: &str, e: &Value, ev: &Event) {
    if let Some(code) = s(&e["code"]) {
        match ev.code {
            EventCode::Sia(c) => assert_eq!(c.as_str(), code, "{id}: code"),
            other => panic!("{id}: expected SIA code {code}, got {other}"),
        }
    }
    if let Some(zone) = s(&e["zone"]) {
        assert_eq!(ev.zone.as_deref(), Some(zone), "{id}: zone");
    }
    if let Some(area) = s(&e["area"]) {
        assert_eq!(ev.area.as_deref(), Some(area), "{id}: area");
    }
    if let Some(user) = s(&e["user"]) {
        assert_eq!(ev.user.as_deref(), Some(user), "{id}: user");
    }
    if let Some(code) = s(&e["cid_event"]) {
        match ev.code {
            EventCode::Cid(c) => assert_eq!(c.to_string(), code, "{id}: cid event"),
            other => panic!("{id}: expected CID {code}, got {other}"),
        }
        let q = s(&e["cid_qualifier"]).expect("qualifier");
        let want = match q {
            "1" => meldkamer::event::Qualifier::New,
            "3" => meldkamer::event::Qualifier::Restore,
            _ => meldkamer::event::Qualifier::Status,
        };
        assert_eq!(ev.qualifier, want, "{id}: qualifier");
        if let Some(g) = s(&e["cid_group"]) {
            assert_eq!(ev.area.as_deref(), Some(g), "{id}: group");
        }
        if let Some(z) = s(&e["cid_zone"]) {
            assert_eq!(ev.zone.as_deref(), Some(z), "{id}: cid zone");
        }
        if let Some(u) = s(&e["cid_user"]) {
            assert_eq!(ev.user.as_deref(), Some(u), "{id}: cid user");
        }
        if let Some(sia) = s(&e["sia_equiv"]) {
            let EventCode::Cid(c) = ev.code else { unreachable!() };
            let info = c.info().expect("known CID code");
            let eq = if q == "3" { info.sia_restore } else { info.sia_new };
            assert_eq!(eq.map(|c| c.to_string()).as_deref(), Some(sia), "{id}: SIA equivalent");
        }
    }
}

fn run_frame_vector(v: &Value) {
    let id = v["id"].as_str().expect("id");
    let exp = &v["expect"];
    let raw = v["frame"].as_str().expect("frame").as_bytes();
    let opts = DecodeOptions::default();
    let decoded = decode_frame(raw, &opts);

    // Independent CRC/length verdict where the vector states it.
    if let Some(checked) = exp.get("_checked") {
        let body = &raw[9..raw.len() - 1];
        let crc = format!("{:04X}", meldkamer::protocol::crc::crc16_arc(body));
        assert_eq!(Some(crc.as_str()), s(&checked["crc_calc"]), "{id}: crc");
        assert_eq!(
            Some(format!("{:04X}", body.len()).as_str()),
            s(&checked["len_calc"]),
            "{id}: length"
        );
    }

    if exp["valid"] == Value::Bool(false) {
        match s(&exp["reason"]) {
            Some("crc") => assert!(matches!(decoded, Err(DecodeError::Crc { .. })), "{id}: {decoded:?}"),
            other => panic!("{id}: unexpected reason {other:?}"),
        }
        return;
    }
    let frame = decoded.unwrap_or_else(|e| panic!("{id}: {e}"));
    // Decode → encode is byte-identical for every valid vector.
    assert_eq!(frame.encode(), raw.to_vec(), "{id}: re-encode");

    if let Some(t) = s(&exp["token"]) {
        assert_eq!(frame.token.as_str(), t, "{id}: token");
    }
    if let Some(e) = exp["encrypted"].as_bool() {
        assert_eq!(frame.encrypted, e, "{id}: encrypted");
    }
    if let Some(n) = exp["seq"].as_u64() {
        assert_eq!(u64::from(frame.seq), n, "{id}: seq");
    }
    if exp.get("receiver").is_some() {
        assert_eq!(frame.receiver.as_deref(), s(&exp["receiver"]), "{id}: receiver");
    }
    if let Some(l) = s(&exp["line"]) {
        assert_eq!(frame.line, l, "{id}: line");
    }
    if let Some(a) = s(&exp["account"]) {
        assert_eq!(frame.account.number(), Some(a), "{id}: account");
    }
    if let Some(a) = s(&exp["account_field"]) {
        let meldkamer::protocol::frame::AccountField::Anonymous(x) = &frame.account else {
            panic!("{id}: anonymous account")
        };
        assert_eq!(format!("A{x}"), a, "{id}: account field");
    }

    // Receiver-side vectors (direction receiver->panel) stop at the fields.
    if s(&exp["direction"]) == Some("receiver->panel") {
        if let Some(ts) = s(&exp["timestamp"]) {
            let Body::Plain(p) = &frame.body else { panic!("plain") };
            assert_eq!(
                p.timestamp.map(|t| t.to_rfc3339()).as_deref(),
                Some(ts),
                "{id}: timestamp"
            );
        }
        return;
    }

    let key = key_of(v);
    if let Some(hexpt) = s(&exp["decrypted_hex"]) {
        let Body::Encrypted(ct) = &frame.body else {
            panic!("{id}: encrypted")
        };
        let pt = meldkamer::protocol::crypto::aes_cbc_decrypt(key.as_ref().expect("key"), ct);
        assert_eq!(hex::encode(&pt[..]), hexpt, "{id}: decrypted bytes");
        let tail = s(&exp["decrypted_tail"]).expect("tail");
        assert!(pt.ends_with(tail.as_bytes()), "{id}: tail");
        // Its timestamp is from when the vector was made: NAK now, ACK at its own time.
        let d = decrypt_body(key.as_ref().expect("key"), ct).expect("decrypts");
        assert!(!d.separator, "{id}: no | before ] for empty data");
        let policy = AccountPolicy {
            key: key.clone(),
            ..AccountPolicy::default()
        };
        let own_time = d.plain.timestamp.expect("ts").to_datetime();
        assert!(matches!(
            evaluate(&frame, Some(&policy), own_time, Window::default()),
            Verdict::Accepted(_)
        ));
        let stale = own_time + time::Duration::days(30);
        let v = evaluate(&frame, Some(&policy), stale, Window::default());
        assert_eq!(v.response_kind().map(|k| k.as_str()), Some("NAK"), "{id}");
        return;
    }

    let plain = plain_of(&frame, key.as_ref());
    if let Some(d) = s(&exp["data"]) {
        assert_eq!(plain.data, d, "{id}: data");
    }
    if let Some(pt) = s(&exp["plaintext"]) {
        let Body::Encrypted(ct) = &frame.body else {
            panic!("{id}: encrypted")
        };
        let bytes = meldkamer::protocol::crypto::aes_cbc_decrypt(key.as_ref().expect("key"), ct);
        assert_eq!(&bytes[..], pt.as_bytes(), "{id}: plaintext");
    }
    if exp.get("timestamp").is_some() && exp.get("direction").is_none() {
        assert_eq!(
            plain.timestamp.map(|t| t.to_wire_string()).as_deref(),
            s(&exp["timestamp"]),
            "{id}: timestamp"
        );
    }
    if let Some(x) = exp["xdata"].as_object() {
        assert_eq!(plain.xdata.len(), x.len(), "{id}: xdata count");
        for (k, val) in x {
            let got = plain
                .xdata
                .iter()
                .find(|d| d.id.to_string() == *k)
                .expect("xdata present");
            assert_eq!(Some(got.value.as_str()), val.as_str(), "{id}: xdata {k}");
        }
    }
    if let Some(blocks) = exp["dcs_blocks"].as_array() {
        let got: Vec<&str> = plain.data.split('|').collect();
        let want: Vec<&str> = blocks.iter().filter_map(|b| b.as_str()).collect();
        assert_eq!(got, want, "{id}: blocks");
    }

    let events = events_from(&frame, &plain).unwrap_or_else(|e| panic!("{id}: {e}"));
    if exp["supervision"] == Value::Bool(true) {
        assert!(events.iter().all(|e| e.is_link_test()), "{id}: link test");
    }
    check_event_fields(id, exp, &events);
    if s(&exp["code"]) == Some("ZX") {
        assert!(events[0].meaning.is_none(), "{id}: ZX must be an unknown code");
        assert!(events[0].describe().contains("unknown code SIA ZX"));
    }

    // The decision and the response bytes.
    let known = exp["account_known"] != Value::Bool(false);
    let policy = AccountPolicy {
        key: key.clone(),
        ..AccountPolicy::default()
    };
    let now = receiver_clock(v);
    let verdict = evaluate(&frame, known.then_some(&policy), now, Window::default());
    let resp = response_frame(&frame, &verdict, Some(&policy), now, &mut SeededPad::new(1)).map(|f| f.encode());
    let want = s(&exp["response"]).unwrap_or("");
    if let Some(ack) = s(&exp["ack_frame"]) {
        assert_eq!(resp.as_deref(), Some(ack.as_bytes()), "{id}: ACK bytes");
    }
    if let Some(duh) = s(&exp["duh_frame"]) {
        assert_eq!(resp.as_deref(), Some(duh.as_bytes()), "{id}: DUH bytes");
    }
    if want.starts_with("ACK (encrypted") {
        let resp = resp.clone().expect("response");
        let prefix = s(&exp["ack_unencrypted_part"]).expect("prefix");
        assert_eq!(&resp[9..9 + prefix.len()], prefix.as_bytes(), "{id}: *ACK header");
        let ack = decode_frame(&resp, &DecodeOptions::default()).expect("our *ACK decodes");
        let Body::Encrypted(ct) = &ack.body else {
            panic!("{id}: *ACK is encrypted")
        };
        let d = decrypt_body(key.as_ref().expect("key"), ct).expect("*ACK decrypts");
        assert!(d.pad.bytes().all(|b| b != b'[' && b != b']' && b != b'|'), "{id}: pad");
        let clock = s(&exp["receiver_clock"]).expect("clock");
        assert_eq!(
            d.plain.timestamp.map(|t| t.to_wire_string()).as_deref(),
            Some(clock),
            "{id}: *ACK time"
        );
        assert!(d.plain.data.is_empty());
    }
    if want == "NAK" {
        let pattern = s(&exp["nak_frame_pattern"]).expect("pattern");
        let resp = resp.clone().expect("NAK");
        assert_eq!(&resp[9..resp.len() - 1], pattern.as_bytes(), "{id}: NAK body");
        assert_eq!(
            resp,
            meldkamer::protocol::frame::wrap(pattern.as_bytes(), Default::default())
        );
    }
    if want == "ACK" {
        assert!(matches!(verdict, Verdict::Accepted(_)), "{id}: {verdict:?}");
    }
}

fn run_two_frames(v: &Value) {
    let raw = v["frame"].as_str().expect("frame").as_bytes();
    let framer = Framer::new(2048, false);
    let (chunks, rest) = split_all(&framer, raw);
    assert!(rest.is_empty());
    assert_eq!(chunks.len(), v["expect"]["frames"].as_u64().expect("n") as usize);
    let policy = AccountPolicy::default();
    let now = receiver_clock(v);
    let mut seqs = Vec::new();
    for (c, bytes) in chunks {
        assert!(matches!(c, Chunk::Frame { .. }));
        let f = decode_frame(bytes, &DecodeOptions::default()).expect("valid");
        let verdict = evaluate(&f, Some(&policy), now, Window::default());
        let ack = response_frame(&f, &verdict, Some(&policy), now, &mut SeededPad::new(0)).expect("ack");
        assert_eq!(ack.token.as_str(), "ACK");
        seqs.push(ack.seq);
    }
    assert_eq!(seqs, vec![40, 41], "two ACKs in order");
}

fn run_cid_vector(v: &Value) {
    let id = v["id"].as_str().expect("id");
    let exp = &v["expect"];
    let r = parse_contact_id(v["frame"].as_str().expect("frame"));
    if exp["valid"] == Value::Bool(false) {
        assert_eq!(r, Err(CidError::Checksum), "{id}");
        return;
    }
    let m = r.unwrap_or_else(|e| panic!("{id}: {e}"));
    assert_eq!(Some(m.account.as_str()), s(&exp["account"]));
    assert_eq!(Some(m.message_type.as_str()), s(&exp["mt"]));
    assert_eq!(Some(m.event.qualifier.digit().to_string().as_str()), s(&exp["q"]));
    assert_eq!(Some(m.event.code.to_string().as_str()), s(&exp["event"]));
    assert_eq!(Some(m.event.group.as_str()), s(&exp["group"]));
    assert_eq!(Some(m.event.zone.as_str()), s(&exp["zone"]));
    assert_eq!(Some(m.checksum.to_string().as_str()), s(&exp["checksum_digit"]));
}

#[test]
fn every_public_vector_passes() {
    let vectors: Vec<Value> = serde_json::from_str(VECTORS).expect("vectors parse");
    assert_eq!(vectors.len(), 22, "all vectors present");
    for v in &vectors {
        let id = v["id"].as_str().expect("id");
        if id.starts_with("cid-dtmf") {
            run_cid_vector(v);
        } else if id == "neg-two-frames" {
            run_two_frames(v);
        } else {
            run_frame_vector(v);
        }
    }
}
