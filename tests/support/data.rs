//! Deterministic data and hashes.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size of one generated piece.
pub const SEGMENT: usize = 256 * 1024;

/// A deterministic pseudo-random byte stream of a given length, produced one [`SEGMENT`] at a
/// time from a small seed table (memory use is a few hundred KiB whatever the length). Every
/// segment starts with its own index, so lost, repeated or reordered segments change the hash.
pub struct Pattern {
    table: Vec<u8>,
    segment: Vec<u8>,
    index: u64,
    remaining: u64,
}

impl Pattern {
    pub fn new(len: u64, seed: u64) -> Pattern {
        let mut x = seed | 1;
        let mut table = Vec::with_capacity(2 * SEGMENT);
        while table.len() < 2 * SEGMENT {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            table.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        Pattern {
            table,
            segment: vec![0; SEGMENT],
            index: 0,
            remaining: len,
        }
    }

    /// The next piece, or `None` at the end.
    pub fn next_piece(&mut self) -> Option<&[u8]> {
        if self.remaining == 0 {
            return None;
        }
        let offset = (self.index.wrapping_mul(40_503) % SEGMENT as u64) as usize;
        self.segment
            .copy_from_slice(&self.table[offset..offset + SEGMENT]);
        self.segment[..8].copy_from_slice(&self.index.to_le_bytes());
        self.index += 1;
        let n = self.remaining.min(SEGMENT as u64) as usize;
        self.remaining -= n as u64;
        Some(&self.segment[..n])
    }

    /// Writes the rest of the stream to `out`; returns the SHA-256 (hex) of what was written.
    pub fn write_to(mut self, out: &mut impl Write) -> io::Result<String> {
        let mut hasher = Sha256::new();
        while let Some(piece) = self.next_piece() {
            hasher.update(piece);
            out.write_all(piece)?;
        }
        Ok(hex(&hasher.finalize()))
    }
}
