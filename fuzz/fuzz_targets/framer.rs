//! The streaming framer over arbitrary bytes, fed in socket-sized reads; every frame chunk is
//! decoded. Checks: progress, the buffer bound, frame chunks within the maximum, and the same
//! frames whether the stream arrives in pieces or at once.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meldkamer::protocol::frame::{CR, LF, MAX_FRAME_LEN, Quirks, decode_frame};
use meldkamer::protocol::framer::{Chunk, Framer, split_all};

fuzz_target!(|data: &[u8]| {
    // First byte: maximum, binary-CRC switch, read size.
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let max = if ctl & 0x80 != 0 {
        MAX_FRAME_LEN
    } else {
        16 + usize::from(ctl & 0x3F) * 4
    };
    let framer = Framer::new(max, ctl & 0x40 != 0);
    let read = 1 + usize::from(ctl.rotate_left(3)) % 97;

    let mut buf: Vec<u8> = Vec::new();
    let mut streamed: Vec<Vec<u8>> = Vec::new();
    for piece in stream.chunks(read) {
        buf.extend_from_slice(piece);
        assert!(buf.len() < framer.max_len + piece.len(), "buffer grew past the maximum");
        while let Some(chunk) = framer.next_chunk(&buf) {
            let len = chunk.len();
            assert!(len > 0 && len <= buf.len(), "{chunk:?} with {} buffered", buf.len());
            match chunk {
                Chunk::Frame { len } => {
                    assert!(len <= framer.max_len);
                    assert!(buf[0] == LF && buf[len - 1] == CR);
                    for q in [Quirks::NONE, Quirks::ALL] {
                        if let Ok(f) = decode_frame(&buf[..len], &common::opts(q)) {
                            common::check_reencode(&f);
                        }
                    }
                    streamed.push(buf[..len].to_vec());
                }
                Chunk::Oversize { len } => assert!(len >= framer.max_len && buf[0] == LF),
                Chunk::Garbage { .. } => {}
            }
            buf.drain(..len);
        }
    }
    let (chunks, _) = split_all(&framer, stream);
    let at_once: Vec<Vec<u8>> = chunks
        .iter()
        .filter(|(c, _)| matches!(c, Chunk::Frame { .. }))
        .map(|(_, b)| b.to_vec())
        .collect();
    assert_eq!(streamed, at_once, "frames depend on how the stream was cut");
});
