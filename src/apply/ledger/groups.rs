//! Grouped row ledgers: the row states of single-integer keys, 32
//! neighbouring keys to a ledger row.
//!
//! Apps number their rows upwards, so the keys one origin inserts fill one
//! group after another: an insert changes the group the previous insert
//! changed, still in memory, and a million keys take some 31,000 ledger rows
//! instead of a million. Versions in a group are stored relative to the
//! group's *base* (the first version written to it), so the timestamps and
//! seqs of neighbouring keys cost a few bytes instead of eleven or more.
//!
//! A group row is `base` (a version, absolute) then one record per key in
//! slot order: `slot` (byte, `key mod 32`), `flags` (byte), the state's
//! length (varint) and the state ([`super::encode_state`] relative to
//! `base`).

use integer_encoding::VarInt;

use super::{decode_state, encode_state, take_varint, RowState, Ver};

/// Keys per group: group `g` holds keys `32 g ..= 32 g + 31`.
pub const KEYS: i64 = 32;

/// Bytes a group's records grow by at a time.
const GROWTH: usize = 64;

/// The group of `key` and its slot in it (floor division: negative keys too).
pub fn locate(key: i64) -> (i64, u8) {
    (key.div_euclid(KEYS), key.rem_euclid(KEYS) as u8)
}

/// The version that versions are stored relative to when there is no base
/// (`_ferry_rows`, and a group's own base): relative to it, they are absolute.
pub const ZERO: Ver = Ver { ts: 0, origin: 0, seq: 0 };

/// One group, decoded down to its record boundaries.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    base: Ver,
    recs: Vec<u8>,
    /// The highest slot with a record: keys that grow are appended without
    /// walking the records.
    last: Option<u8>,
}

/// Where one record lies in [`Group::recs`].
struct Record {
    start: usize,
    flags: i64,
    state: std::ops::Range<usize>,
}

impl Group {
    pub fn new() -> Group {
        Group { base: ZERO, recs: Vec::new(), last: None }
    }

    /// A stored group; `None` for bytes ferry did not write (records out of
    /// order, a slot or flags out of range, a length past the end).
    pub fn parse(mut blob: &[u8]) -> Option<Group> {
        let base = Ver::decode(&mut blob, ZERO)?;
        let mut g = Group { base, recs: blob.to_vec(), last: None };
        let mut at = 0;
        while at < g.recs.len() {
            let r = g.record_at(at)?;
            let slot = g.recs[at];
            if g.last.is_some_and(|l| l >= slot) || i64::from(slot) >= KEYS || r.flags > super::FLAGS_MAX {
                return None;
            }
            g.last = Some(slot);
            at = r.state.end;
        }
        Some(g)
    }

    /// The stored form: the base, then the records.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        self.base.encode_into(out, ZERO);
        out.extend_from_slice(&self.recs);
    }

    /// Bytes of memory the records take.
    pub fn footprint(&self) -> usize {
        self.recs.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    fn record_at(&self, start: usize) -> Option<Record> {
        let mut b = self.recs.get(start + 2..)?;
        let before = b.len();
        let len: usize = take_varint(&mut b)?;
        let from = start + 2 + (before - b.len());
        let state = from..from.checked_add(len).filter(|&end| end <= self.recs.len())?;
        Some(Record { start, flags: i64::from(self.recs[start + 1]), state })
    }

    /// The record of `slot`, or where it would go (`Err`). Only called on
    /// parsed groups, whose records are well formed.
    fn find(&self, slot: u8) -> Result<Record, usize> {
        if self.last.is_none_or(|l| slot > l) {
            return Err(self.recs.len());
        }
        let mut at = 0;
        while at < self.recs.len() {
            let Some(r) = self.record_at(at) else { break };
            match self.recs[at].cmp(&slot) {
                std::cmp::Ordering::Equal => return Ok(r),
                std::cmp::Ordering::Greater => return Err(at),
                std::cmp::Ordering::Less => at = r.state.end,
            }
        }
        Err(at)
    }

    /// The state of `slot`: `Ok(None)` when the group has no record of it,
    /// `Err` when its record cannot be decoded.
    pub fn get(&self, slot: u8) -> Result<Option<RowState>, ()> {
        match self.find(slot) {
            Ok(r) => decode_state(r.flags, &self.recs[r.state], self.base).map(Some).ok_or(()),
            Err(_) => Ok(None),
        }
    }

    pub fn has(&self, slot: u8) -> bool {
        self.find(slot).is_ok()
    }

    /// Sets the state of `slot`. The first version written to a group
    /// becomes its base.
    pub fn put(&mut self, slot: u8, st: &RowState, scratch: &mut Vec<u8>) {
        if self.recs.is_empty() {
            self.base = ZERO;
        }
        if self.base == ZERO {
            if let Some(v) = st.ins.or(st.del).or(st.cols.first().map(|c| c.1)) {
                self.rebase(v, scratch);
            }
        }
        let flags = encode_state(st, scratch, self.base);
        let (head, n) = record_head(slot, flags, scratch.len());
        let range = match self.find(slot) {
            Ok(r) => r.start..r.state.end,
            Err(at) => at..at,
        };
        // Grow in small steps, not by doubling: a cache full of groups would
        // otherwise hold up to twice the memory it counts.
        let len = self.recs.len() - range.len() + n + scratch.len();
        if len > self.recs.capacity() {
            self.recs.reserve_exact(len.next_multiple_of(GROWTH) - self.recs.len());
        }
        self.recs.splice(range, head[..n].iter().chain(scratch.iter()).copied());
        self.last = Some(self.last.map_or(slot, |l| l.max(slot)));
    }

    /// Re-encodes every record relative to `base`: a group whose records so
    /// far hold no version (a parked update's key, say) takes the first
    /// version that comes. Records it cannot decode leave the group as it
    /// is (still consistent: relative to `ZERO`, versions are absolute).
    fn rebase(&mut self, base: Ver, scratch: &mut Vec<u8>) {
        let mut recs = Vec::with_capacity(self.recs.capacity());
        let mut at = 0;
        while at < self.recs.len() {
            let Some(r) = self.record_at(at) else { return };
            let Some(st) = decode_state(r.flags, &self.recs[r.state.clone()], self.base) else { return };
            let flags = encode_state(&st, scratch, base);
            let (head, n) = record_head(self.recs[at], flags, scratch.len());
            recs.extend_from_slice(&head[..n]);
            recs.extend_from_slice(scratch);
            at = r.state.end;
        }
        self.base = base;
        self.recs = recs;
    }

    /// Forgets `slot`; false when the group had no record of it.
    pub fn remove(&mut self, slot: u8) -> bool {
        match self.find(slot) {
            Ok(r) => {
                self.recs.drain(r.start..r.state.end);
                if self.last == Some(slot) {
                    self.last = self.slots().last();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// The flags of every record.
    pub fn flags(&self) -> impl Iterator<Item = i64> + '_ {
        self.records().map(|r| r.flags)
    }

    fn slots(&self) -> impl Iterator<Item = u8> + '_ {
        self.records().map(|r| self.recs[r.start])
    }

    fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let r = self.record_at(at)?;
            at = r.state.end;
            Some(r)
        })
    }
}

/// A record's head: slot, flags (four bits, checked by [`Group::parse`] on
/// the way back) and the state's length; the bytes and how many are used.
fn record_head(slot: u8, flags: i64, len: usize) -> ([u8; 12], usize) {
    let mut head = [slot, flags as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let n = 2 + len.encode_var(&mut head[2..]);
    (head, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ledger::Cols;

    fn v(ts: i64, origin: u32, seq: u64) -> Ver {
        Ver { ts, origin, seq }
    }

    fn fresh(ins: Ver) -> RowState {
        RowState {
            present: true,
            ins: Some(ins),
            del: None,
            cols: [(1, ins), (2, ins)].into_iter().collect(),
            parked: false,
            held: false,
        }
    }

    fn stored(g: &Group) -> Group {
        let mut blob = Vec::new();
        g.encode_into(&mut blob);
        Group::parse(&blob).expect("a written group parses")
    }

    #[test]
    fn keys_locate_by_floor_division() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(31), (0, 31));
        assert_eq!(locate(32), (1, 0));
        assert_eq!(locate(-1), (-1, 31));
        assert_eq!(locate(-32), (-1, 0));
        assert_eq!(locate(i64::MIN), (i64::MIN / 32, 0));
        assert_eq!(locate(i64::MAX), (i64::MAX / 32, 31));
    }

    #[test]
    fn states_in_any_order_read_back_and_neighbours_cost_a_few_bytes() {
        let mut g = Group::new();
        let mut scratch = Vec::new();
        let base = v(1_790_000_000_000_000, 1, 70_000);
        // Written out of slot order, one replaced, one removed.
        for (slot, i) in [(5u8, 5u64), (1, 1), (31, 31), (0, 0), (7, 7)] {
            let ver = v(base.ts + 1000 * i as i64, 1, base.seq + i);
            g.put(slot, &fresh(ver), &mut scratch);
        }
        let far = v(base.ts - 86_400_000_000, 2, 3);
        let updated =
            RowState { cols: [(1, far), (2, v(i64::MIN, u32::MAX, u64::MAX))].into_iter().collect(), ..fresh(base) };
        g.put(0, &updated, &mut scratch);
        assert!(g.remove(7) && !g.remove(7) && !g.remove(8));
        let g = stored(&g);
        assert_eq!(g.get(0), Ok(Some(updated)), "extremes and versions older than the base round-trip");
        assert_eq!(g.get(5), Ok(Some(fresh(v(base.ts + 5000, 1, base.seq + 5)))));
        assert_eq!(g.get(31), Ok(Some(fresh(v(base.ts + 31000, 1, base.seq + 31)))));
        assert_eq!(g.get(7), Ok(None));
        assert_eq!(g.get(2), Ok(None));
        assert_eq!(g.flags().count(), 4);
        let mut one = Group::new();
        one.put(3, &fresh(v(base.ts + 3000, 1, base.seq + 3)), &mut scratch);
        one.put(4, &fresh(v(base.ts + 4000, 1, base.seq + 4)), &mut scratch);
        let mut blob = Vec::new();
        one.encode_into(&mut blob);
        let mut first = Group::new();
        first.put(3, &fresh(v(base.ts + 3000, 1, base.seq + 3)), &mut scratch);
        let mut alone = Vec::new();
        first.encode_into(&mut alone);
        assert!(blob.len() - alone.len() <= 9, "a neighbour's insert costs {} bytes", blob.len() - alone.len());
        let other = fresh(v(base.ts + 5000, 2, 5));
        one.put(5, &other, &mut scratch);
        let mut three = Vec::new();
        one.encode_into(&mut three);
        let cost = three.len() - blob.len();
        assert!(cost <= 12, "another origin's insert with a seq far below the base costs {cost} bytes");
        assert_eq!(stored(&one).get(5), Ok(Some(other)));
    }

    #[test]
    fn a_group_started_by_a_state_without_versions_takes_the_next_version_as_base() {
        let base = v(1_790_000_000_000_000, 1, 70_000);
        let fill = |g: &mut Group, scratch: &mut Vec<u8>| {
            for i in 1..32u8 {
                g.put(i, &fresh(v(base.ts + 1000 * i64::from(i), 1, base.seq + u64::from(i))), scratch);
            }
        };
        let mut scratch = Vec::new();
        let mut plain = Group::new();
        fill(&mut plain, &mut scratch);
        let parked = RowState { parked: true, ..RowState::default() };
        let mut started = Group::new();
        started.put(0, &parked, &mut scratch);
        fill(&mut started, &mut scratch);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        plain.encode_into(&mut a);
        started.encode_into(&mut b);
        assert!(
            b.len() <= a.len() + 3,
            "{} bytes against {}: the parked key's group is relative too",
            b.len(),
            a.len()
        );
        let started = stored(&started);
        assert_eq!(started.get(0), Ok(Some(parked)));
        assert_eq!(started.get(31), Ok(Some(fresh(v(base.ts + 31_000, 1, base.seq + 31)))));
    }

    #[test]
    fn an_emptied_group_takes_a_new_base() {
        let mut g = Group::new();
        let mut scratch = Vec::new();
        g.put(1, &fresh(v(10, 1, 1)), &mut scratch);
        assert!(g.remove(1) && g.is_empty());
        let parked = RowState { parked: true, cols: Cols::new(), ..RowState::default() };
        g.put(2, &parked, &mut scratch);
        g.put(3, &fresh(v(99, 4, 9)), &mut scratch);
        let g = stored(&g);
        assert_eq!(g.get(2), Ok(Some(parked)));
        assert_eq!(g.get(3), Ok(Some(fresh(v(99, 4, 9)))));
    }

    #[test]
    fn bytes_ferry_did_not_write_are_refused_not_a_panic() {
        let mut g = Group::new();
        let mut scratch = Vec::new();
        g.put(1, &fresh(v(10, 1, 1)), &mut scratch);
        g.put(2, &fresh(v(11, 1, 2)), &mut scratch);
        let mut blob = Vec::new();
        g.encode_into(&mut blob);
        for cut in 0..blob.len() {
            if let Some(short) = Group::parse(&blob[..cut]) {
                // A cut on a record boundary is a well-formed smaller group.
                let _ = short.get(1);
            }
        }
        assert_eq!(Group::parse(&[]), None, "no base");
        let at = blob.len() - g.recs.len();
        let mut swapped = blob.clone();
        swapped[at] = 3; // slot 1 becomes 3, before slot 2
        assert_eq!(Group::parse(&swapped), None, "slots out of order");
        let mut wide = blob.clone();
        wide[at] = 40;
        assert_eq!(Group::parse(&wide), None, "a slot past the group");
        let mut flags = blob.clone();
        flags[at + 1] = 0x40;
        assert_eq!(Group::parse(&flags), None, "unknown flags");
        let mut long = blob.clone();
        long[at + 2] = 0x7f;
        assert_eq!(Group::parse(&long), None, "a length past the end");
        let mut bad_state = blob;
        let len = bad_state[at + 2] as usize;
        bad_state[at + 3 + len - 1] = 0x80; // the record's last byte: a varint cut short
        let g = Group::parse(&bad_state).expect("record boundaries are intact");
        assert_eq!(g.get(1), Err(()), "an undecodable state is an error");
    }

    proptest::proptest! {
        /// A ledger edited by hand or damaged gives errors, never a panic,
        /// whatever the bytes.
        #[test]
        fn any_bytes_parse_or_are_refused_without_a_panic(blob in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), slot in 0u8..32) {
            if let Some(mut g) = Group::parse(&blob) {
                let _ = g.get(slot);
                let _ = g.flags().count();
                let mut scratch = Vec::new();
                g.put(slot, &fresh(v(1, 1, 1)), &mut scratch);
                proptest::prop_assert_eq!(g.get(slot), Ok(Some(fresh(v(1, 1, 1)))));
                g.remove(slot);
                let mut out = Vec::new();
                g.encode_into(&mut out);
            }
        }
    }
}
