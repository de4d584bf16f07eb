//! The operator API's framing: one JSON object per line, at most [`MAX_LINE`] bytes. A request
//! line may hold a password or a phone code, so the bytes of every line are overwritten with
//! zeros as soon as the line has been parsed ([`Line`] does it when dropped), and so are the
//! bytes of an over-long line that is thrown away.
//!
//! What this cannot reach, and stays in memory until reused: the kernel's socket buffers, the
//! TLS layer's record buffers (rustls), `serde_json`'s scratch buffer when a string holds
//! escapes, and a fragment of a line that arrived in pieces when the read buffer had to grow
//! while holding it (the old allocation is freed, not wiped). Core dumps are off
//! (`serve` makes the process non-dumpable), so none of it reaches a file.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use zeroize::Zeroize;

/// Largest request line.
pub const MAX_LINE: usize = 64 * 1024;

/// One received line (without its newline); its bytes are zeroed when it is dropped.
pub struct Line(BytesMut);

impl std::ops::Deref for Line {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Line {
    /// Overwrite the line's bytes with zeros (done on drop).
    fn wipe(&mut self) {
        self.0.as_mut().zeroize();
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// Why the line stream stops.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A line longer than [`MAX_LINE`].
    #[error("a request line is longer than {MAX_LINE} bytes")]
    TooLong,
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// The codec: [`Line`]s in, text lines out.
#[derive(Debug, Default)]
pub struct JsonLines {
    /// Bytes already searched for a newline.
    searched: usize,
}

impl Decoder for JsonLines {
    type Item = Line;
    type Error = WireError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, WireError> {
        match buf[self.searched..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                let end = self.searched + i;
                self.searched = 0;
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > MAX_LINE {
                    line.as_mut().zeroize();
                    return Err(WireError::TooLong);
                }
                Ok(Some(Line(line)))
            }
            None if buf.len() > MAX_LINE => {
                buf.as_mut().zeroize();
                buf.clear();
                Err(WireError::TooLong)
            }
            None => {
                self.searched = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, WireError> {
        let r = self.decode(buf)?;
        if r.is_none() && buf.has_remaining() {
            // A last line without its newline is not a request: wipe it.
            buf.as_mut().zeroize();
            buf.clear();
        }
        Ok(r)
    }
}

impl Encoder<String> for JsonLines {
    type Error = WireError;

    fn encode(&mut self, line: String, dst: &mut BytesMut) -> Result<(), WireError> {
        dst.reserve(line.len() + 1);
        dst.put_slice(line.as_bytes());
        dst.put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_the_buffer_holds_no_parsed_secret() {
        let mut c = JsonLines::default();
        let mut buf = BytesMut::from(&b"{\"op\":\"login\",\"password\":\"s3cret-s3cret\"}\r\n{\"op\":\"qu"[..]);
        let line = c.decode(&mut buf).expect("ok").expect("a line");
        assert!(line.starts_with(b"{\"op\":\"login\""));
        assert!(!line.ends_with(b"\r"));
        drop(line);
        assert_eq!(&buf[..], b"{\"op\":\"qu", "the rest waits for its newline");
        assert!(c.decode(&mut buf).expect("ok").is_none());
        buf.extend_from_slice(b"eue\"}\n");
        let line = c.decode(&mut buf).expect("ok").expect("a line");
        assert_eq!(&line[..], b"{\"op\":\"queue\"}");
    }

    #[test]
    fn a_line_is_wiped_when_dropped() {
        let mut bytes = BytesMut::from(&b"password=hunter2hunter2"[..]);
        let copy = bytes.split_to(bytes.len());
        let mut line = Line(copy);
        line.wipe();
        assert!(line.iter().all(|b| *b == 0));
    }

    #[test]
    fn an_over_long_line_is_refused_and_wiped() {
        let mut c = JsonLines::default();
        let mut buf = BytesMut::from(vec![b'x'; MAX_LINE + 1].as_slice());
        assert!(matches!(c.decode(&mut buf), Err(WireError::TooLong)));
        assert!(buf.is_empty());
    }
}
