//! Protocol core benchmarks: decode (plain SIA-DCS, ADM-CID, AES-128), the full receiver path
//! (decode + decision + response bytes), and ACK encoding alone.
//!
//! Run: `cargo bench --bench protocol`

use criterion::{Criterion, criterion_group, criterion_main};
use meldkamer::event::events_from;
use meldkamer::protocol::crypto::{Key, SeededPad};
use meldkamer::protocol::frame::{DecodeOptions, decode_frame};
use meldkamer::protocol::policy::{AccountPolicy, Verdict, Window, evaluate, response_frame};
use meldkamer::protocol::response;
use meldkamer::protocol::timestamp::Timestamp;
use std::hint::black_box;

const SIA: &[u8] = b"\nF5F5003B\"SIA-DCS\"0001R1L1#1234[#1234|Nri1/BA01]_12:00:00,01-15-2026\r";
const CID: &[u8] = b"\n4D63003D\"ADM-CID\"0010R1L1#1234[#1234|1130 01 003]_12:00:00,01-15-2026\r";
const ENC: &[u8] = b"\n56770078\"*SIA-DCS\"0020R1L1#1234[2DE06BF9D0F1C17881556E4EBB97807B090F923DEB8139DD0FAC2735FBB3BE87C9D06AA71FE691BF4A5B17F5DC83D6B6\r";

fn full_path(raw: &[u8], policy: &AccountPolicy, now: time::OffsetDateTime, pad: &mut SeededPad) -> usize {
    let Ok(frame) = decode_frame(raw, &DecodeOptions::default()) else {
        return 0;
    };
    let verdict = evaluate(&frame, Some(policy), now, Window::default());
    let n = match &verdict {
        Verdict::Accepted(a) => events_from(&frame, &a.plain).map(|e| e.len()).unwrap_or(0),
        _ => 0,
    };
    let resp = response_frame(&frame, &verdict, Some(policy), now, pad).map(|f| f.encode());
    n + resp.map_or(0, |r| r.len())
}

fn bench(c: &mut Criterion) {
    let plain_policy = AccountPolicy::default();
    let key = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").ok();
    let enc_policy = AccountPolicy {
        key,
        ..AccountPolicy::default()
    };
    let opts = DecodeOptions::default();
    let mut g = c.benchmark_group("decode");
    g.bench_function("sia_dcs_plain", |b| b.iter(|| decode_frame(black_box(SIA), &opts)));
    g.bench_function("adm_cid_plain", |b| b.iter(|| decode_frame(black_box(CID), &opts)));
    g.bench_function("sia_dcs_aes128", |b| b.iter(|| decode_frame(black_box(ENC), &opts)));
    g.finish();

    let mut g = c.benchmark_group("decode_and_respond");
    let mut pad = SeededPad::new(1);
    // The receiver reads its clock once per frame; parsing a timestamp for it is no part of
    // the path being measured.
    let now = Timestamp::parse(b"12:00:00,01-15-2026")
        .map(|t| t.to_datetime())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    g.bench_function("sia_dcs_plain", |b| {
        b.iter(|| full_path(black_box(SIA), &plain_policy, black_box(now), &mut pad))
    });
    g.bench_function("adm_cid_plain", |b| {
        b.iter(|| full_path(black_box(CID), &plain_policy, black_box(now), &mut pad))
    });
    g.bench_function("sia_dcs_aes128", |b| {
        b.iter(|| full_path(black_box(ENC), &enc_policy, black_box(now), &mut pad))
    });
    g.finish();

    let frame = decode_frame(SIA, &opts).ok();
    let enc_frame = decode_frame(ENC, &opts).ok();
    let now = time::OffsetDateTime::UNIX_EPOCH;
    let mut g = c.benchmark_group("ack_encode");
    if let Some(f) = &frame {
        g.bench_function("plain", |b| b.iter(|| response::ack_plain(black_box(f)).encode()));
    }
    if let (Some(f), Some(k)) = (&enc_frame, &enc_policy.key) {
        g.bench_function("aes128", |b| {
            b.iter(|| response::ack_encrypted(black_box(f), k, now, &mut pad, false).encode())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
