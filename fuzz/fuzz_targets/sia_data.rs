//! SIA-DCS data: the parser on the raw input (as Latin-1 and as UTF-8), then the input as the
//! data field of a `SIA-DCS` frame (the input may close the field itself and add extended data
//! and a timestamp), decoded and turned into events.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meldkamer::event::events_from;
use meldkamer::protocol::frame::{Body, Framing, Quirks, decode_frame, wrap};
use meldkamer::protocol::sia::{SiaBlock, parse_sia_data};

fuzz_target!(|data: &[u8]| {
    let _ = parse_sia_data(&common::latin1(data));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_sia_data(s);
    }

    let mut body = b"\"SIA-DCS\"0001R1L1#1234[".to_vec();
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
    let parsed = parse_sia_data(&p.data);
    match events_from(&f, p) {
        Ok(events) => {
            let parsed = parsed.expect("events from data the parser refuses");
            let n: usize = parsed
                .blocks
                .iter()
                .map(|b| match b {
                    SiaBlock::Events { events, .. } => events.len(),
                    _ => 0,
                })
                .sum();
            assert_eq!(events.len(), n, "one event per parsed SIA event");
            for e in &events {
                assert_eq!(e.account, "1234");
                let _ = e.describe();
            }
        }
        Err(_) => assert!(parsed.is_err(), "parsed data gave no events"),
    }
    common::exercise(&f);
});
