//! Streaming framer: finds `LF … CR` frames in a byte stream, never buffers more than the
//! maximum frame size, and resynchronises on the next LF after garbage.
//!
//! The framer only finds boundaries; [`decode_frame`](super::frame::decode_frame) checks what
//! is inside. With the `crc_binary` quirk allowed, the two raw CRC bytes after the LF may be
//! 0x0A or 0x0D and are skipped when looking for the end.

use super::frame::{CR, CrcFormat, LF, detect_crc_format};

/// What the framer found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// A candidate frame of `len` bytes (LF … CR).
    Frame {
        /// Bytes, LF and CR included.
        len: usize,
    },
    /// Bytes that are not part of any frame (before an LF, or a frame start with no CR before
    /// the next LF).
    Garbage {
        /// Bytes to discard.
        len: usize,
        /// True if every discarded byte is 0x00 (the trailing-NUL quirk).
        nul_only: bool,
    },
    /// A frame that grew beyond the maximum without a CR: discard and resynchronise.
    Oversize {
        /// Bytes to discard: at least the maximum, up to (not including) the next LF, or all
        /// that is buffered if no LF follows yet.
        len: usize,
    },
}

impl Chunk {
    /// Bytes this chunk covers.
    pub fn len(&self) -> usize {
        match *self {
            Chunk::Frame { len } | Chunk::Garbage { len, .. } | Chunk::Oversize { len } => len,
        }
    }

    /// True if the chunk covers no bytes (never produced).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The framer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framer {
    /// Maximum frame length, LF and CR included.
    pub max_len: usize,
    /// Allow a binary CRC (skip two raw bytes after the LF when looking for CR/LF).
    pub allow_binary_crc: bool,
}

impl Framer {
    /// A framer with the given maximum.
    pub fn new(max_len: usize, allow_binary_crc: bool) -> Framer {
        Framer {
            max_len: max_len.max(16),
            allow_binary_crc,
        }
    }

    /// Look at the start of `buf`. `None`: need more bytes. Otherwise the chunk at the start;
    /// the caller consumes `chunk.len()` bytes and calls again.
    pub fn next_chunk(&self, buf: &[u8]) -> Option<Chunk> {
        let first = *buf.first()?;
        if first != LF {
            let len = buf.iter().position(|b| *b == LF).unwrap_or(buf.len());
            let nul_only = buf[..len].iter().all(|b| *b == 0);
            return Some(Chunk::Garbage { len, nul_only });
        }
        // Where may the end be searched from? Normally right after the LF; with a binary CRC
        // the two CRC bytes are opaque.
        let mut from = 1;
        if self.allow_binary_crc {
            if buf.len() < 10 {
                // Not enough to tell hex from binary unless a CR/LF shows up after the CRC bytes.
                let early = buf.get(3..).and_then(|t| t.iter().position(|b| *b == CR || *b == LF));
                if early.is_none() {
                    return self.need_more(buf.len());
                }
            }
            if detect_crc_format(buf, true) == Some(CrcFormat::Binary) {
                from = 3;
            }
        }
        let limit = buf.len().min(self.max_len);
        match buf[from.min(limit)..limit].iter().position(|b| *b == CR || *b == LF) {
            Some(i) => {
                let at = from + i;
                if buf[at] == CR {
                    Some(Chunk::Frame { len: at + 1 })
                } else {
                    // A new LF before any CR: what came before is an unterminated frame.
                    Some(Chunk::Garbage {
                        len: at,
                        nul_only: false,
                    })
                }
            }
            // Nothing within the maximum. If that much is buffered, the frame is oversize: drop
            // it up to the next LF (where a frame may start), never past it.
            None if buf.len() >= self.max_len => {
                let next_lf = buf[limit..]
                    .iter()
                    .position(|b| *b == LF)
                    .map_or(buf.len(), |p| limit + p);
                Some(Chunk::Oversize { len: next_lf })
            }
            None => None,
        }
    }

    fn need_more(&self, have: usize) -> Option<Chunk> {
        if have >= self.max_len {
            Some(Chunk::Oversize { len: have })
        } else {
            None
        }
    }
}

/// Split a complete buffer (a UDP datagram, a test input) into chunks.
pub fn split_all<'a>(framer: &Framer, mut buf: &'a [u8]) -> (Vec<(Chunk, &'a [u8])>, &'a [u8]) {
    let mut out = Vec::new();
    while let Some(chunk) = framer.next_chunk(buf) {
        let (head, tail) = buf.split_at(chunk.len());
        out.push((chunk, head));
        buf = tail;
    }
    (out, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"\nD1A80039\"SIA-DCS\"0040L0#1234[#1234|Nri1/BA01]_12:00:00,01-15-2026\r";

    #[test]
    fn two_frames_in_one_buffer() {
        let f = Framer::new(1024, false);
        let mut buf = A.to_vec();
        buf.extend_from_slice(A);
        let (chunks, rest) = split_all(&f, &buf);
        assert_eq!(chunks.len(), 2);
        assert!(
            chunks
                .iter()
                .all(|(c, b)| *c == Chunk::Frame { len: A.len() } && *b == A)
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn garbage_between_frames_is_skipped() {
        let f = Framer::new(1024, false);
        let mut buf = b"junk".to_vec();
        buf.extend_from_slice(A);
        buf.extend_from_slice(b"\0\0\0");
        buf.extend_from_slice(b"\n123");
        buf.extend_from_slice(A);
        let (chunks, _) = split_all(&f, &buf);
        let kinds: Vec<Chunk> = chunks.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            kinds,
            vec![
                Chunk::Garbage {
                    len: 4,
                    nul_only: false
                },
                Chunk::Frame { len: A.len() },
                Chunk::Garbage { len: 3, nul_only: true },
                Chunk::Garbage {
                    len: 4,
                    nul_only: false
                },
                Chunk::Frame { len: A.len() },
            ]
        );
    }

    #[test]
    fn partial_frame_waits_then_oversize_resyncs() {
        let f = Framer::new(32, false);
        assert_eq!(f.next_chunk(&A[..20]), None);
        assert_eq!(f.next_chunk(&A[..40]), Some(Chunk::Oversize { len: 40 }));
        // After discarding, the tail (no LF) is garbage up to the next frame.
        assert_eq!(
            f.next_chunk(b"xyz\n"),
            Some(Chunk::Garbage {
                len: 3,
                nul_only: false
            })
        );
    }

    #[test]
    fn oversize_does_not_swallow_the_next_frame() {
        // An unterminated frame longer than the maximum, then a valid frame, in one read: the
        // oversize chunk ends at the next LF and the frame after it is found.
        let f = Framer::new(96, false);
        let mut buf = vec![LF];
        buf.extend_from_slice(&[b'x'; 100]);
        buf.extend_from_slice(A);
        let (chunks, rest) = split_all(&f, &buf);
        let kinds: Vec<Chunk> = chunks.iter().map(|(c, _)| *c).collect();
        assert_eq!(kinds, vec![Chunk::Oversize { len: 101 }, Chunk::Frame { len: A.len() }]);
        assert_eq!(chunks[1].1, A);
        assert!(rest.is_empty());
        // Without a following LF, everything buffered is discarded.
        assert_eq!(f.next_chunk(&buf[..101]), Some(Chunk::Oversize { len: 101 }));
    }

    #[test]
    fn binary_crc_bytes_may_be_cr_or_lf() {
        let f = Framer::new(1024, true);
        // LF, CRC 0x0D0A, length, body, CR.
        let mut buf = vec![LF, CR, LF];
        buf.extend_from_slice(b"0015\"NULL\"0000R1L1#1234[]\r");
        assert_eq!(f.next_chunk(&buf), Some(Chunk::Frame { len: buf.len() }));
        assert_eq!(f.next_chunk(&buf[..5]), None);
    }
}
