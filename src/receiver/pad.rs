//! The daemon's pad source for encrypted ACKs: the operating system's CSPRNG, mapped onto the
//! alphanumeric pad alphabet by rejection sampling (no bias, never `[`, `]` or `|`).

use crate::protocol::crypto::{PAD_ALPHABET, PadSource};

/// Pads from the OS random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsPad;

impl PadSource for OsPad {
    fn fill_pad(&mut self, out: &mut [u8]) {
        let mut i = 0;
        let mut pool = [0u8; 64];
        while i < out.len() {
            if getrandom::fill(&mut pool).is_err() {
                // No OS randomness: fall back to a time-seeded generator rather than send a
                // fixed pad (the pad is not a secret; it only needs to vary).
                let seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                crate::protocol::crypto::SeededPad::new(seed).fill_pad(&mut out[i..]);
                return;
            }
            for b in pool {
                // 248 = 4 × 62: accept only bytes below it so every character is equally likely.
                if b < 248 && i < out.len() {
                    out[i] = PAD_ALPHABET[usize::from(b % 62)];
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_are_alphanumeric_and_vary() {
        let mut a = [0u8; 27];
        let mut b = [0u8; 27];
        OsPad.fill_pad(&mut a);
        OsPad.fill_pad(&mut b);
        assert!(a.iter().chain(&b).all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
