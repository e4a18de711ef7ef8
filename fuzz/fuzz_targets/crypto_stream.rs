//! The cipher stream envelope `0x01 || nonce || ciphertext||tag`: `decode_stream` and
//! `Cipher::open_stream` with a fixed key, plus `Cipher::open` with the first 12 bytes as
//! the nonce. Nothing random can authenticate, so opening must always fail.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use spike_crypto::aead::{self, NONCE_SIZE};
use spike_crypto::{Cipher, RootKey};

static CIPHER: LazyLock<Option<Cipher>> = LazyLock::new(|| {
    RootKey::from_bytes(&[0x42; 32])
        .ok()
        .map(|k| Cipher::new(&k))
});

fuzz_target!(|data: &[u8]| {
    if let Ok((nonce, ciphertext)) = aead::decode_stream(data) {
        assert_eq!(aead::encode_stream(&nonce, ciphertext), data);
    }
    let Some(cipher) = CIPHER.as_ref() else {
        return;
    };
    assert!(
        cipher.open_stream(data).is_err(),
        "forged stream authenticated"
    );
    let (nonce, rest) = data.split_at(data.len().min(NONCE_SIZE));
    assert!(
        cipher.open(nonce, rest).is_err(),
        "forged ciphertext authenticated"
    );
});
