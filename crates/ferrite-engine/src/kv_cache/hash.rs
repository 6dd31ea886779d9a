//! Chained block hashes for prefix caching.
//!
//! `hash_i = SHA-256(scheme ‖ seed ‖ parent ‖ le32(tokens of block i) ‖ extra_keys)[..16]`, with
//! `parent` the previous block's hash (zeros for block 0), so equal hashes at block i mean equal
//! tokens in blocks 0..=i. Extra keys (length-prefixed) hold whatever else changes the KV for the
//! same ids; today that is the request's `cache_salt`, on block 0 only, which keeps tenants with
//! different salts from sharing (and timing) each other's prefixes. SHA-256 rather than a fast
//! non-cryptographic hash because cross-tenant collisions would leak data; the seed is a
//! deployment setting so that a router can reproduce the hashes.

use sha2::{Digest, Sha256};

/// 128-bit block identity.
pub type BlockHash = [u8; 16];

/// Identifies this hashing scheme (travels with KV events later).
pub const HASH_SCHEME: &str = "ferrite-sha256-128-v1";

/// Hash of one full block.
pub fn hash_block(
    seed: u64,
    parent: Option<&BlockHash>,
    tokens: &[u32],
    cache_salt: Option<&str>,
) -> BlockHash {
    let mut h = Sha256::new();
    h.update(HASH_SCHEME.as_bytes());
    h.update(seed.to_le_bytes());
    h.update(parent.copied().unwrap_or([0; 16]));
    h.update((tokens.len() as u32).to_le_bytes());
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    match (parent, cache_salt) {
        (None, Some(s)) => {
            h.update([1]);
            h.update((s.len() as u32).to_le_bytes());
            h.update(s.as_bytes());
        }
        _ => h.update([0]),
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// Extend `hashes` with the hashes of every full block of `tokens` not yet hashed.
pub fn extend_block_hashes(
    hashes: &mut Vec<BlockHash>,
    tokens: &[u32],
    block_size: usize,
    seed: u64,
    cache_salt: Option<&str>,
) {
    while (hashes.len() + 1) * block_size <= tokens.len() {
        let i = hashes.len();
        let h = hash_block(
            seed,
            hashes.last(),
            &tokens[i * block_size..(i + 1) * block_size],
            cache_salt,
        );
        hashes.push(h);
    }
}
