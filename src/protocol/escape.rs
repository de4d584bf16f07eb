//! Frames as text people can type and read: printable ASCII as is, `\n`, `\r`, `\t`, `\0`,
//! `\\` and `\xNN` for the rest. Used by `meldkamer parse` and `send`, fixture traces, replay
//! reports and the supervisor's view of a frame nobody could read.

/// Turn `\n`, `\r`, `\t`, `\\`, `\xNN` escapes into bytes.
pub fn unescape(s: &str) -> Result<Vec<u8>, usize> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let h = b.get(i + 2..i + 4).ok_or(i)?;
                let v = std::str::from_utf8(h)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(i)?;
                out.push(v);
                i += 2;
            }
            _ => return Err(i),
        }
        i += 2;
    }
    Ok(out)
}

/// Write bytes with the same escapes (printable ASCII as is).
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 8);
    for &b in bytes {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7E => s.push(char::from(b)),
            _ => s.push_str(&format!("\\x{b:02X}")),
        }
    }
    s
}
