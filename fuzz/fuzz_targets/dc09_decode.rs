//! One frame (LF … CR) through the decoder with and without quirks, then the decision table
//! with a fixed key, the response frame and the events. The input is also used as an AES
//! plaintext under that key, and a plain frame is re-sent encrypted, so decryption is reached
//! with fuzzer-chosen content.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meldkamer::protocol::crypto::{SeededPad, aes_cbc_encrypt, decrypt_body, encrypt_body, encrypt_body_with_pad};
use meldkamer::protocol::frame::{Body, Frame, Quirks, decode_frame};

fuzz_target!(|data: &[u8]| {
    let key = common::key();
    for quirks in [Quirks::NONE, Quirks::ALL] {
        let Ok(f) = decode_frame(data, &common::opts(quirks)) else {
            continue;
        };
        assert!(quirks.permits(&f.framing.quirks()), "decoded with a quirk that was off");
        common::check_reencode(&f);
        common::exercise(&f);
        if let (Body::Plain(p), Quirks::ALL) = (&f.body, quirks) {
            let ct = encrypt_body(
                &key,
                p,
                data.len().is_multiple_of(2),
                &mut SeededPad::new(data.len() as u64),
            );
            let d = decrypt_body(&key, &ct).map_err(|e| (e, p.clone()));
            if p.timestamp.is_some() {
                let d = d.expect("our own encryption of a decoded plain body decrypts");
                assert_eq!(d.plain, *p);
                assert_eq!(encrypt_body_with_pad(&key, &d), Some(ct.clone()));
            }
            let enc = Frame {
                encrypted: true,
                body: Body::Encrypted(ct),
                ..f.clone()
            };
            common::check_reencode(&enc);
            common::exercise(&enc);
        }
    }
    // The input as a decrypted plaintext: whatever parses re-encrypts to the same ciphertext.
    let mut pt = data.to_vec();
    pt.resize(pt.len().div_ceil(16).max(1) * 16, b'0');
    let ct = aes_cbc_encrypt(&key, &pt);
    if let Ok(d) = decrypt_body(&key, &ct) {
        assert_eq!(
            encrypt_body_with_pad(&key, &d),
            Some(ct),
            "decrypted content does not re-encrypt"
        );
    }
});
