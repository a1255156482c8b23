//! Chain hashes: `h(0) = 32 zero bytes`, `h(n) = SHA-256(h(n-1) || SHA-256(entry n))`,
//! where `entry n` is the exact line bytes (no newline). A segment carries
//! `h(first_seq - 1)` and `h(last_seq)`, so continuity between segments and
//! forks (same origin and seq, different content) are checkable from a few
//! stored hashes.

use std::fmt;

use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The hash before the first entry.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// The hash after appending an entry whose bytes are `entry`.
    pub fn next(&self, entry: &[u8]) -> ChainHash {
        let leaf = Sha256::digest(entry);
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(leaf);
        ChainHash(h.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<ChainHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ChainHash(out))
    }

    pub fn from_slice(b: &[u8]) -> Option<ChainHash> {
        Some(ChainHash(b.try_into().ok()?))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_order_and_content() {
        let a = ChainHash::GENESIS.next(b"a").next(b"b");
        let b = ChainHash::GENESIS.next(b"b").next(b"a");
        assert_ne!(a, b);
        assert_eq!(ChainHash::from_hex(&a.to_hex()), Some(a));
    }
}
