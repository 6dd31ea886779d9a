//! API keys. Keys are kept only as HMAC-SHA-256 digests under a per-process random pepper, and
//! compared in constant time, so a memory dump or a timing probe does not reveal them.

use sha2::{Digest, Sha256};

/// The accepted keys, as keyed hashes.
#[derive(Clone)]
pub struct ApiKeys {
    pepper: [u8; 32],
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

impl ApiKeys {
    /// Keys from a file's text: one per line; blank lines and `#` comments are skipped.
    /// Returns `None` if the text holds no key.
    pub fn from_text(text: &str) -> Option<ApiKeys> {
        let pepper = random_pepper();
        let digests: Vec<[u8; 32]> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|k| hmac_sha256(&pepper, k.as_bytes()))
            .collect();
        (!digests.is_empty()).then_some(ApiKeys { pepper, digests })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are no keys (never true for a constructed set).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `key` is one of the keys. Every stored digest is compared, in constant time.
    pub fn verify(&self, key: &str) -> bool {
        let d = hmac_sha256(&self.pepper, key.as_bytes());
        let mut any = 0u8;
        for s in &self.digests {
            let diff = s.iter().zip(&d).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            any |= u8::from(diff == 0);
        }
        any == 1
    }
}

/// HMAC-SHA-256 (RFC 2104) with a 32-byte key.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key);
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn random_pepper() -> [u8; 32] {
    let mut p = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut p).is_ok() {
            return p;
        }
    }
    // Fallback: the std hasher's per-process random keys, mixed with the time.
    use std::hash::{BuildHasher, Hasher};
    for (i, chunk) in p.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2_shape_and_keys_verify() {
        // RFC 4231 test case 2 uses a 4-byte key; ours is zero-padded to 32, which HMAC does
        // anyway (keys shorter than the block are zero-padded), so the digest must match.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let d = hmac_sha256(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(d),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let keys = ApiKeys::from_text("# comment\nsk-one\n\n  sk-two  \n").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.verify("sk-one") && keys.verify("sk-two"));
        assert!(!keys.verify("sk-three") && !keys.verify("") && !keys.verify("sk-one "));
        assert!(ApiKeys::from_text("\n# none\n").is_none());
    }
}
