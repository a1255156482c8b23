//! Every applied entry's chain hash, so a forked copy of an origin's journal
//! (a cloned laptop) is caught wherever it lands, not only where a segment
//! starts or ends.
//!
//! `_ferry_hashes (origin, blk, hashes)` holds, per origin, one row per
//! [`HASH_BLOCK`] consecutive seqs: `hashes` is [`HASH_BLOCK`] slots of the
//! first [`PREFIX`] bytes of the chain hash at seq `blk * HASH_BLOCK + i`,
//! all zero for a seq not known. Eight bytes make an accidental match of two
//! different journals a one in 2^64 chance, and cost 8 bytes per entry
//! (a million entries: 8 MB). A segment's `chain_before` is stored at
//! `first_seq - 1` too, so a segment arriving later that ends there is
//! checked against it.

use crate::apply::session::{self, Session};
use crate::args;

use crate::chain::ChainHash;

/// Seqs per `_ferry_hashes` row: 960 bytes of hashes, so a row stays within
/// what a page of a `WITHOUT ROWID` table holds in place (about 1,000 bytes
/// at 4 KiB pages; a longer row spills into overflow pages, which doubled
/// the table's size with 256).
pub const HASH_BLOCK: u64 = 120;
/// Bytes of each chain hash kept.
pub const PREFIX: usize = 8;
const BLOCK_BYTES: usize = HASH_BLOCK as usize * PREFIX;

/// The kept bytes of a chain hash; never all zero (which means "unknown").
pub fn prefix(h: &ChainHash) -> [u8; PREFIX] {
    let mut p = [0u8; PREFIX];
    p.copy_from_slice(&h.0[..PREFIX]);
    if p == [0; PREFIX] {
        p[PREFIX - 1] = 1;
    }
    p
}

/// The chain hashes of one origin, read and written one block at a time
/// (segments run in seq order, so one block is in memory).
pub struct Hashes<'c> {
    conn: &'c dyn Session,
    origin: u32,
    blk: Option<u64>,
    buf: Box<[u8; BLOCK_BYTES]>,
    dirty: bool,
}

impl<'c> Hashes<'c> {
    pub fn new(conn: &'c dyn Session, origin: u32) -> Hashes<'c> {
        Hashes { conn, origin, blk: None, buf: Box::new([0; BLOCK_BYTES]), dirty: false }
    }

    /// Whether any seq in `first..=last` has a known hash (a fork could then
    /// show inside a segment of that range).
    pub fn any_known(conn: &dyn Session, origin: u32, first: u64, last: u64) -> session::Result<bool> {
        let rows = conn.query(
            "SELECT blk, hashes FROM _ferry_hashes WHERE origin = ?1 AND blk BETWEEN ?2 AND ?3",
            args![origin, (first / HASH_BLOCK) as i64, (last / HASH_BLOCK) as i64],
        )?;
        for r in rows {
            let blk = r.get::<i64>(0)? as u64;
            let Some(crate::value::Value::Blob(b)) = r.0.get(1) else { continue };
            let lo = first.max(blk * HASH_BLOCK);
            let hi = last.min(blk * HASH_BLOCK + HASH_BLOCK - 1);
            for seq in lo..=hi {
                let i = (seq % HASH_BLOCK) as usize * PREFIX;
                if b.get(i..i + PREFIX).is_some_and(|s| s.iter().any(|&x| x != 0)) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn goto(&mut self, seq: u64) -> session::Result<()> {
        let blk = seq / HASH_BLOCK;
        if self.blk == Some(blk) {
            return Ok(());
        }
        self.flush()?;
        let stored: Option<Vec<u8>> = self
            .conn
            .query_opt(
                "SELECT hashes FROM _ferry_hashes WHERE origin = ?1 AND blk = ?2",
                args![self.origin, blk as i64],
            )?
            .map(|r| r.get(0))
            .transpose()?;
        self.buf.fill(0);
        if let Some(b) = stored {
            let n = b.len().min(BLOCK_BYTES);
            self.buf[..n].copy_from_slice(&b[..n]);
        }
        self.blk = Some(blk);
        Ok(())
    }

    /// The kept hash at `seq`, `None` when not known.
    pub fn get(&mut self, seq: u64) -> session::Result<Option<[u8; PREFIX]>> {
        self.goto(seq)?;
        let i = (seq % HASH_BLOCK) as usize * PREFIX;
        let mut p = [0u8; PREFIX];
        p.copy_from_slice(&self.buf[i..i + PREFIX]);
        Ok((p != [0; PREFIX]).then_some(p))
    }

    /// Whether `h` disagrees with the hash known at `seq` (a fork).
    pub fn differs(&mut self, seq: u64, h: &ChainHash) -> session::Result<bool> {
        Ok(self.get(seq)?.is_some_and(|known| known != prefix(h)))
    }

    /// Records the hash at `seq`.
    pub fn set(&mut self, seq: u64, h: &ChainHash) -> session::Result<()> {
        self.goto(seq)?;
        let i = (seq % HASH_BLOCK) as usize * PREFIX;
        let p = prefix(h);
        if self.buf[i..i + PREFIX] != p {
            self.buf[i..i + PREFIX].copy_from_slice(&p);
            self.dirty = true;
        }
        Ok(())
    }

    /// Writes the block in memory if it changed.
    pub fn flush(&mut self) -> session::Result<()> {
        if let (true, Some(blk)) = (self.dirty, self.blk) {
            let sql = self.conn.dialect().pick(
                "INSERT OR REPLACE INTO _ferry_hashes (origin, blk, hashes) VALUES (?1, ?2, ?3)",
                "INSERT INTO _ferry_hashes (origin, blk, hashes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (origin, blk) DO UPDATE SET hashes = excluded.hashes",
                "REPLACE INTO _ferry_hashes (origin, blk, hashes) VALUES (?1, ?2, ?3)",
            );
            self.conn.execute(sql, args![self.origin, blk as i64, &self.buf[..]])?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Forgets the block in memory (after a rollback undid what it holds).
    pub fn discard(&mut self) {
        self.blk = None;
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn hashes_round_trip_across_blocks_and_tell_forks() {
        let c = Connection::open_in_memory().expect("db");
        c.execute_batch(super::super::DDL).expect("ddl");
        let h = |n: u8| ChainHash([n; 32]);
        let mut w = Hashes::new(&c, 1);
        for seq in 230..=300 {
            w.set(seq, &h(seq as u8)).expect("set");
        }
        w.flush().expect("flush");
        let mut r = Hashes::new(&c, 1);
        assert_eq!(r.get(260).expect("get"), Some(prefix(&h(260u64 as u8))));
        assert_eq!(r.get(229).expect("get"), None);
        assert!(r.differs(255, &h(7)).expect("differs"));
        assert!(!r.differs(255, &h(255)).expect("differs"));
        assert!(!r.differs(5, &h(1)).expect("unknown is no fork"));
        assert!(Hashes::any_known(&c, 1, 200, 230).expect("any"));
        assert!(!Hashes::any_known(&c, 1, 301, 600).expect("any"));
        assert!(!Hashes::any_known(&c, 2, 230, 300).expect("other origin"));
        assert_ne!(prefix(&ChainHash([0; 32])), [0; PREFIX], "a zero prefix still reads as known");
    }
}
