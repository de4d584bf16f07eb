//! Contact ID: `parse_adm_cid` and `parse_contact_id` on the input (as Latin-1 and as UTF-8),
//! the encoder's round trip for accepted raw messages, and the input as the data field of an
//! `ADM-CID` frame turned into an event.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meldkamer::event::events_from;
use meldkamer::protocol::cid::{encode_contact_id, parse_adm_cid, parse_contact_id};
use meldkamer::protocol::frame::{Body, Framing, Quirks, decode_frame, wrap};

fn check(s: &str) {
    if let Ok(d) = parse_adm_cid(s) {
        assert_eq!((d.event.group.len(), d.event.zone.len()), (2, 3));
    }
    if let Ok(m) = parse_contact_id(s) {
        // `A` is tolerated in the account and checksum (valued 10) but never written.
        if !s.contains('A') {
            let again = encode_contact_id(&m.account, &m.message_type, &m.event);
            assert_eq!(again.as_deref(), Some(s), "accepted message does not re-encode");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(&common::latin1(data));
    if let Ok(s) = std::str::from_utf8(data) {
        check(s);
    }

    let mut body = b"\"ADM-CID\"0010R1L1#1234[".to_vec();
    body.extend_from_slice(data);
    if !data.contains(&b']') {
        body.push(b']');
    }
    let raw = wrap(&body, Framing::default());
    let Ok(f) = decode_frame(&raw, &common::opts(Quirks::NONE)) else {
        return;
    };
    let Body::Plain(p) = &f.body else {
        panic!("plain frame decoded as encrypted");
    };
    common::check_reencode(&f);
    match events_from(&f, p) {
        Ok(events) => {
            assert!(parse_adm_cid(&p.data).is_ok());
            assert_eq!(events.len(), 1);
            let _ = events[0].describe();
        }
        Err(_) => assert!(parse_adm_cid(&p.data).is_err()),
    }
    common::exercise(&f);
});
