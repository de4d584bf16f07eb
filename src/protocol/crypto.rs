//! DC-09 encryption: AES-128/192/256 in CBC mode with a zero IV and DC-09's own padding
//! (see `protocols/dc09.md`, section "Encryption").
//!
//! Only the part after `[` is encrypted: `pad [| data] ] xdata* _timestamp`. The pad is
//! pseudo-random and never contains `[`, `]` or `|`; its length varies between
//! implementations, so the decoder never assumes one. When the data is empty, some senders
//! write `pad]_ts` and others `pad|]_ts`; both decode.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use serde::Serialize;
use zeroize::Zeroizing;

use super::frame::{Field, Plain, latin1, parse_plain_tail, push_latin1};

const IV: [u8; 16] = [0; 16];
/// AES block size.
pub const BLOCK: usize = 16;

/// How a key was entered: both exist in the field and give different keys for the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// 32/48/64 hex digits.
    Hex,
    /// 16/24/32 characters whose bytes are the key.
    Ascii,
}

/// An AES key for one account. The bytes never print: `Debug` shows only the size.
///
/// It also holds the expanded key schedule, built once when the key is made: expanding it for
/// every frame (and again for its ACK) was a sixth of the encrypted path. The schedule is as
/// secret as the bytes; the `aes` types zero it on drop (its `zeroize` feature).
#[derive(Clone)]
pub struct Key {
    bytes: Zeroizing<Vec<u8>>,
    format: KeyFormat,
    cipher: Cipher,
}

/// The expanded key schedule, one variant per key size.
#[derive(Clone)]
enum Cipher {
    Aes128(aes::Aes128),
    Aes192(aes::Aes192),
    Aes256(aes::Aes256),
}

impl Cipher {
    /// `None` unless `bytes` is 16, 24 or 32 long (callers have checked).
    fn new(bytes: &[u8]) -> Option<Cipher> {
        match bytes.len() {
            16 => aes::Aes128::new_from_slice(bytes).ok().map(Cipher::Aes128),
            24 => aes::Aes192::new_from_slice(bytes).ok().map(Cipher::Aes192),
            32 => aes::Aes256::new_from_slice(bytes).ok().map(Cipher::Aes256),
            _ => None,
        }
    }
}

// The schedule is a function of the bytes: comparing the bytes (and how they were entered)
// is comparing the keys.
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.bytes == other.bytes && self.format == other.format
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(AES-{}, {:?}, redacted)", self.bytes.len() * 8, self.format)
    }
}

/// Why a key text is not a key. Never contains the key text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 32, 48 or 64 hex digits.
    #[error("a hex key must be 32, 48 or 64 hex digits (AES-128/192/256), got {0} characters")]
    HexLength(usize),
    /// A character that is not a hex digit.
    #[error("a hex key may contain only 0-9 and A-F")]
    HexDigit,
    /// Not 16, 24 or 32 ASCII characters.
    #[error("an ASCII key must be 16, 24 or 32 characters (AES-128/192/256), got {0}")]
    AsciiLength(usize),
    /// A character outside printable ASCII.
    #[error("an ASCII key may contain only printable ASCII characters")]
    AsciiChar,
}

impl Key {
    /// Parse a key in the given format.
    pub fn parse(text: &str, format: KeyFormat) -> Result<Key, KeyError> {
        match format {
            KeyFormat::Hex => Key::from_hex(text),
            KeyFormat::Ascii => Key::from_ascii(text),
        }
    }

    /// A key written as hex digits.
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let text = text.trim();
        if !matches!(text.len(), 32 | 48 | 64) {
            return Err(KeyError::HexLength(text.len()));
        }
        let bytes = Zeroizing::new(hex::decode(text).map_err(|_| KeyError::HexDigit)?);
        Key::new(bytes, KeyFormat::Hex).ok_or(KeyError::HexLength(text.len()))
    }

    /// A key from bytes of a checked length (`None` otherwise).
    fn new(bytes: Zeroizing<Vec<u8>>, format: KeyFormat) -> Option<Key> {
        let cipher = Cipher::new(&bytes)?;
        Some(Key { bytes, format, cipher })
    }

    /// A key written as ASCII characters (the bytes of the text are the key).
    pub fn from_ascii(text: &str) -> Result<Key, KeyError> {
        if !text.bytes().all(|b| (0x20..0x7F).contains(&b)) {
            return Err(KeyError::AsciiChar);
        }
        if !matches!(text.len(), 16 | 24 | 32) {
            return Err(KeyError::AsciiLength(text.len()));
        }
        Key::new(Zeroizing::new(text.as_bytes().to_vec()), KeyFormat::Ascii).ok_or(KeyError::AsciiLength(text.len()))
    }

    /// Key size in bits.
    pub fn bits(&self) -> usize {
        self.bytes.len() * 8
    }

    /// How the key was entered.
    pub fn format(&self) -> KeyFormat {
        self.format
    }

    /// The raw key bytes (for storage only; never log them).
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A key from stored raw bytes.
    pub fn from_bytes(bytes: &[u8], format: KeyFormat) -> Result<Key, KeyError> {
        match format {
            KeyFormat::Hex if !matches!(bytes.len(), 16 | 24 | 32) => Err(KeyError::HexLength(bytes.len() * 2)),
            KeyFormat::Ascii if !matches!(bytes.len(), 16 | 24 | 32) => Err(KeyError::AsciiLength(bytes.len())),
            KeyFormat::Hex => {
                Key::new(Zeroizing::new(bytes.to_vec()), format).ok_or(KeyError::HexLength(bytes.len() * 2))
            }
            KeyFormat::Ascii => {
                Key::new(Zeroizing::new(bytes.to_vec()), format).ok_or(KeyError::AsciiLength(bytes.len()))
            }
        }
    }
}

/// CBC over whole blocks in `buf` (a trailing partial block is left alone; callers check).
/// All blocks go to the cipher in one call: its backend prepares the round keys once per call,
/// and CBC decryption runs the blocks in parallel.
fn cbc_decrypt_in_place<C: BlockCipherDecrypt<BlockSize = aes::cipher::consts::U16>>(cipher: &C, buf: &mut [u8]) {
    let (blocks, _) = aes::Block::slice_as_chunks_mut(buf);
    cbc::Decryptor::inner_iv_init(cipher, &IV.into()).decrypt_blocks(blocks);
}

fn cbc_encrypt_in_place<C: BlockCipherEncrypt<BlockSize = aes::cipher::consts::U16>>(cipher: &C, buf: &mut [u8]) {
    let (blocks, _) = aes::Block::slice_as_chunks_mut(buf);
    cbc::Encryptor::inner_iv_init(cipher, &IV.into()).encrypt_blocks(blocks);
}

impl Key {
    fn decrypt_in_place(&self, buf: &mut [u8]) {
        match &self.cipher {
            Cipher::Aes128(c) => cbc_decrypt_in_place(c, buf),
            Cipher::Aes192(c) => cbc_decrypt_in_place(c, buf),
            Cipher::Aes256(c) => cbc_decrypt_in_place(c, buf),
        }
    }

    fn encrypt_in_place(&self, buf: &mut [u8]) {
        match &self.cipher {
            Cipher::Aes128(c) => cbc_encrypt_in_place(c, buf),
            Cipher::Aes192(c) => cbc_encrypt_in_place(c, buf),
            Cipher::Aes256(c) => cbc_encrypt_in_place(c, buf),
        }
    }
}

/// Raw AES-CBC (zero IV) decryption of whole blocks. The caller checks the length.
pub fn aes_cbc_decrypt(key: &Key, ciphertext: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    key.decrypt_in_place(&mut buf);
    buf
}

/// Raw AES-CBC (zero IV) encryption of whole blocks. The caller pads.
pub fn aes_cbc_encrypt(key: &Key, plaintext: &[u8]) -> Vec<u8> {
    let mut buf = plaintext.to_vec();
    key.encrypt_in_place(&mut buf);
    buf
}

/// The decrypted content of an encrypted frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decrypted {
    /// The pad bytes, as Latin-1 characters (kept so the frame re-encrypts byte-identically).
    pub pad: String,
    /// `|` between pad and data (always when data is non-empty; optional when it is empty).
    pub separator: bool,
    /// Data, extended data and timestamp.
    pub plain: Plain,
}

/// Why an encrypted body did not decrypt to a valid DC-09 plaintext (wrong key, tampering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum DecryptError {
    /// Ciphertext is not a whole number of blocks.
    #[error("ciphertext is not a whole number of 16-byte blocks")]
    BlockLength,
    /// No `]` in the plaintext.
    #[error("decrypted text has no closing ]")]
    NoDataEnd,
    /// The pad contains `[` (it must not).
    #[error("decrypted pad contains [")]
    BadPad,
    /// The text after the pad does not follow the grammar.
    #[error("decrypted {0:?} field is malformed")]
    Garbled(Field),
    /// No timestamp (mandatory when encrypted).
    #[error("decrypted text has no timestamp (mandatory for encrypted frames)")]
    NoTimestamp,
}

/// Decrypt an encrypted body and split pad, data, extended data and timestamp.
///
/// Rule: find the first `]`; if a `|` comes before it, the pad ends at the first `|` and the
/// data runs from there to the `]`; otherwise the data is empty and the pad ends at the `]`.
pub fn decrypt_body(key: &Key, ciphertext: &[u8]) -> Result<Decrypted, DecryptError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(BLOCK) {
        return Err(DecryptError::BlockLength);
    }
    let plain = aes_cbc_decrypt(key, ciphertext);
    let close = plain.iter().position(|b| *b == b']').ok_or(DecryptError::NoDataEnd)?;
    let (pad, data_start, separator) = match plain[..close].iter().position(|b| *b == b'|') {
        Some(bar) => (&plain[..bar], bar + 1, true),
        None => (&plain[..close], close, false),
    };
    if pad.contains(&b'[') {
        return Err(DecryptError::BadPad);
    }
    let (rest, parsed) = parse_plain_tail(&plain[data_start..]).map_err(|(field, _)| DecryptError::Garbled(field))?;
    if !rest.is_empty() {
        return Err(DecryptError::Garbled(Field::End));
    }
    if parsed.timestamp.is_none() {
        return Err(DecryptError::NoTimestamp);
    }
    Ok(Decrypted {
        pad: latin1(pad),
        separator,
        plain: parsed,
    })
}

/// Characters a generated pad may use: none of `[`, `]`, `|`.
pub fn is_pad_byte(b: u8) -> bool {
    b != b'[' && b != b']' && b != b'|'
}

/// A source of pad bytes. Implementations must return only bytes for which [`is_pad_byte`]
/// holds. Injected so that tests and replays are deterministic.
pub trait PadSource {
    /// Fill `out` with pad bytes.
    fn fill_pad(&mut self, out: &mut [u8]);
}

/// A deterministic pad source (SplitMix64) producing alphanumeric pad characters. For tests,
/// replays and `meldkamer parse`; the daemon uses an OS-random source.
#[derive(Debug, Clone)]
pub struct SeededPad(u64);

impl SeededPad {
    /// A pad source starting at `seed`.
    pub fn new(seed: u64) -> Self {
        SeededPad(seed)
    }
}

/// The 62 characters generated pads use: safe for panels that treat the plaintext as text.
pub const PAD_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl PadSource for SeededPad {
    fn fill_pad(&mut self, out: &mut [u8]) {
        for b in out {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            *b = PAD_ALPHABET[(z % 62) as usize];
        }
    }
}

/// A pad of exactly the given bytes (for re-encoding a decoded frame byte for byte).
#[derive(Debug, Clone)]
pub struct FixedPad(pub Vec<u8>);

impl PadSource for FixedPad {
    fn fill_pad(&mut self, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.0.get(i).copied().unwrap_or(b'0');
        }
    }
}

/// Pad length for `content_len` bytes of content: 1–16 bytes so the total is whole blocks.
pub fn pad_len_for(content_len: usize) -> usize {
    let r = (BLOCK - content_len % BLOCK) % BLOCK;
    if r == 0 { BLOCK } else { r }
}

/// Build the plaintext `pad [|] data ] xdata _ts` with a pad from `pad`, and encrypt it.
/// `separator` writes `|` even when the data is empty (it is always written otherwise).
pub fn encrypt_body(key: &Key, plain: &Plain, separator: bool, pad: &mut dyn PadSource) -> Vec<u8> {
    // One buffer: the content is written first, then moved up behind a pad of the length it
    // needs, and encrypted in place (the plaintext is overwritten by its ciphertext).
    // Room for everything up front, so that no plaintext is left behind in a reallocation.
    let room = 1 + plain.data.len() + 1 + plain.xdata.iter().map(|x| x.value.len() + 3).sum::<usize>() + 20 + BLOCK;
    let mut buf = Zeroizing::new(Vec::with_capacity(room));
    let sep = separator || !plain.data.is_empty();
    if sep {
        buf.push(b'|');
    }
    super::frame::write_plain_tail(plain, &mut buf);
    let len = buf.len();
    let n = pad_len_for(len);
    buf.resize(len + n, 0);
    buf.copy_within(..len, n);
    pad.fill_pad(&mut buf[..n]);
    key.encrypt_in_place(&mut buf);
    std::mem::take(&mut *buf)
}

/// Encrypt with exactly the given pad (for byte-identical re-encoding of a decoded frame).
/// The pad length must make the total a whole number of blocks.
pub fn encrypt_body_with_pad(key: &Key, decrypted: &Decrypted) -> Option<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(64));
    push_latin1(&decrypted.pad, &mut buf);
    if decrypted.separator || !decrypted.plain.data.is_empty() {
        buf.push(b'|');
    }
    super::frame::write_plain_tail(&decrypted.plain, &mut buf);
    if buf.len() % BLOCK != 0 {
        return None;
    }
    Some(aes_cbc_encrypt(key, &buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats() {
        let hex = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").expect("hex key");
        assert_eq!(hex.bits(), 128);
        let ascii = Key::from_ascii("3BD7E66AA9E2F190").expect("ascii key");
        assert_eq!(ascii.bits(), 128);
        assert_eq!(ascii.expose_bytes(), b"3BD7E66AA9E2F190");
        assert!(matches!(Key::from_hex("00"), Err(KeyError::HexLength(2))));
        assert!(matches!(Key::from_hex(&"G".repeat(32)), Err(KeyError::HexDigit)));
        assert!(matches!(Key::from_ascii("short"), Err(KeyError::AsciiLength(5))));
        assert_eq!(format!("{hex:?}"), "Key(AES-128, Hex, redacted)");
    }

    #[test]
    fn nist_aes128_cbc_block() {
        // NIST SP 800-38A F.2.1, first block, with a zero IV the first block is plain AES-ECB
        // of (P xor 0) — check against the known ECB answer for this key and block.
        let key = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").expect("key");
        let p = hex::decode("6bc1bee22e409f96e93d7e117393172a").expect("hex");
        let c = aes_cbc_encrypt(&key, &p);
        assert_eq!(hex::encode(&c), "3ad77bb40d7a3660a89ecaf32466ef97");
        assert_eq!(&aes_cbc_decrypt(&key, &c)[..], &p[..]);
    }

    /// The schedule kept in `Key` must be the one of its size: NIST SP 800-38A F.1.3 and F.1.5
    /// (the first CBC block with a zero IV is ECB), through every way a key is made.
    #[test]
    fn aes192_and_aes256_schedules() {
        let p = hex::decode("6bc1bee22e409f96e93d7e117393172a").expect("hex");
        for (k, c) in [
            (
                "8E73B0F7DA0E6452C810F32B809079E562F8EAD2522C6B7B",
                "bd334f1d6e45f25ff712a214571fa5cc",
            ),
            (
                "603DEB1015CA71BE2B73AEF0857D77811F352C073B6108D72D9810A30914DFF4",
                "f3eed1bdb5d2a03c064b5a7e3db181f8",
            ),
        ] {
            let key = Key::from_hex(k).expect("key");
            let stored = Key::from_bytes(key.expose_bytes(), KeyFormat::Hex).expect("stored key");
            assert_eq!(stored, key);
            for key in [key.clone(), stored] {
                let ct = aes_cbc_encrypt(&key, &p);
                assert_eq!(hex::encode(&ct), c);
                assert_eq!(&aes_cbc_decrypt(&key, &ct)[..], &p[..]);
            }
        }
    }

    #[test]
    fn pad_lengths() {
        assert_eq!(pad_len_for(21), 11);
        assert_eq!(pad_len_for(16), 16);
        assert_eq!(pad_len_for(17), 15);
        assert_eq!(pad_len_for(0), 16);
    }

    #[test]
    fn seeded_pad_avoids_forbidden_bytes() {
        let mut p = SeededPad::new(7);
        let mut buf = [0u8; 4096];
        p.fill_pad(&mut buf);
        assert!(buf.iter().all(|b| is_pad_byte(*b) && b.is_ascii_alphanumeric()));
    }

    #[test]
    fn encrypt_decrypt_with_and_without_separator() {
        let key = Key::from_ascii("0123456789abcdef").expect("key");
        let plain = Plain {
            data: String::new(),
            xdata: vec![],
            timestamp: super::super::timestamp::Timestamp::parse(b"12:00:00,01-15-2026"),
        };
        for sep in [false, true] {
            let ct = encrypt_body(&key, &plain, sep, &mut SeededPad::new(1));
            let d = decrypt_body(&key, &ct).expect("decrypts");
            assert_eq!(d.separator, sep);
            assert_eq!(d.plain, plain);
            assert_eq!(encrypt_body_with_pad(&key, &d).expect("aligned"), ct);
        }
    }

    #[test]
    fn wrong_key_is_an_error_not_a_panic() {
        let key = Key::from_ascii("0123456789abcdef").expect("key");
        let other = Key::from_ascii("fedcba9876543210").expect("key");
        let plain = Plain {
            data: "#1234|Nri1/BA01".into(),
            xdata: vec![],
            timestamp: super::super::timestamp::Timestamp::parse(b"12:00:00,01-15-2026"),
        };
        let ct = encrypt_body(&key, &plain, true, &mut SeededPad::new(1));
        assert!(decrypt_body(&other, &ct).is_err());
        assert!(matches!(decrypt_body(&key, &ct[..5]), Err(DecryptError::BlockLength)));
    }
}
