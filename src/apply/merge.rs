//! The merge rule, in one place: given what the ledger knows about a row
//! (its [`RowState`]) and one incoming write, what happens. Pure: plain data
//! in, a [`Decision`] out; no SQL, no I/O. The engine
//! ([`super::engine`]) only carries decisions out, and the rules below are
//! the ones `docs/APPLY.md` states (each rule there names the function here
//! that implements it).
//!
//! Every write has a version `(timestamp, origin, seq)` ([`Ver`]), ordered
//! by an [`Order`]. Per row key, whatever the arrival order, the target then
//! holds (the *row-state invariants*):
//!
//! 1. the row is present iff some insert is newer than the newest delete;
//! 2. each column holds the value of the newest write (insert or update) to
//!    it that is newer than the newest delete, else the column's default;
//! 3. an update or insert older than the newest delete changes nothing, and
//!    an update newer than it waits (is *parked*) until an insert brings the
//!    row back;
//! 4. every write whose value is lost to another origin's write is recorded
//!    as a conflict holding the lost value.
//!
//! A row that is present but cannot stand in its table (a missing parent, a
//! unique value an older row claims, a NOT NULL or CHECK it breaks) is
//! *held*: present to the rules above (writes to it merge as usual), kept
//! aside by the engine until it can stand. Which of two rows keeps a
//! clashing unique value is decided by [`keeps_unique`].

use std::cmp::Ordering;

use smallvec::SmallVec;

use super::ledger::{Cols, RowState, Ver};

/// The total order of versions: timestamp, then origin node id (as text, so
/// every database orders alike), then seq.
pub trait Order {
    fn cmp(&self, a: Ver, b: Ver) -> Ordering;

    /// Whether `a` is newer than `b` (anything is newer than nothing).
    fn newer(&self, a: Ver, b: Option<Ver>) -> bool {
        b.is_none_or(|b| self.cmp(a, b) == Ordering::Greater)
    }
}

/// Entries stamped more than this far (microseconds: one day) ahead of the
/// applying computer's clock wait until that clock reaches them (see
/// [`is_future`]).
pub const FUTURE_SLACK_MICROS: i64 = 24 * 3600 * 1_000_000;

/// Whether an entry stamped `ts` is implausibly far in the future for a
/// computer whose clock reads `now`: such an entry would win every later
/// conflict, so it is not merged until `now` reaches `ts - slack` (it waits,
/// counted as parked, and `status --db` shows it).
pub fn is_future(ts: i64, now: i64) -> bool {
    ts > now.saturating_add(FUTURE_SLACK_MICROS)
}

/// The one outcome of an entry that reached the merge (entries skipped as
/// duplicates never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its writes are in the database (some columns may have lost).
    Applied,
    /// Every value it carried lost to newer writes (recorded as conflicts
    /// when another origin's write won).
    Superseded,
    /// Waiting for its row (kept in `_ferry_parked`).
    Parked,
    /// Refused by the database; kept with its reason.
    Quarantined,
}

/// What kind of conflict a record is (see `docs/APPLY.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// A value replaced by, or older than, another write to the same column.
    Overwritten,
    /// Two inserts of one key (or an insert of a key made outside ferry).
    RowExists,
    /// A write that lost to a delete.
    RowMissing,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::Overwritten => "overwritten",
            ConflictKind::RowExists => "row_exists",
            ConflictKind::RowMissing => "row_missing",
        }
    }
}

/// Which values a conflict record keeps as the loser's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The incoming entry's values of these columns (its whole `fields`
    /// when empty).
    Incoming(Columns),
    /// The values these columns hold now, read before they are overwritten.
    Existing(Columns),
}

/// Column numbers (see [`super::ledger::column_numbers`]).
pub type Columns = SmallVec<[u32; 8]>;

/// A conflict to record: `loser` (`None`: a row made outside ferry) lost
/// `lost` to `winner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kind: ConflictKind,
    pub loser: Option<Ver>,
    pub winner: Ver,
    pub lost: Lost,
}

/// What to do to the row in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Nothing,
    /// Insert the row (key and every incoming field; other columns take
    /// their defaults), then replay the updates parked for it when
    /// `replay_parked`.
    InsertRow {
        replay_parked: bool,
    },
    /// Set these incoming columns.
    SetColumns(Columns),
    /// Keep the incoming update in `_ferry_parked` until its row is present.
    Park,
    /// Find out whether the row exists outside the ledger's knowledge (an
    /// update of a key the ledger never saw): write the incoming columns if
    /// it does ([`update_found`]), park it if not ([`update_not_found`]).
    Probe,
    /// Delete the row. Columns written after the delete survive it: their
    /// values are parked, one parked write per version (`survivors`).
    DeleteRow {
        survivors: SmallVec<[(Ver, Columns); 1]>,
    },
    /// The row was inserted again after this delete: these columns, written
    /// before the delete, go back to their defaults.
    ResetColumns(Columns),
}

/// The decision for one write.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub write: Write,
    /// The ledger state once the write is done.
    pub state: RowState,
    pub conflicts: SmallVec<[Conflict; 2]>,
    /// Parked writes older than this tombstone can never apply: drop them
    /// (see [`parked_under_delete`]).
    pub drop_parked_before: Option<Ver>,
}

impl Decision {
    fn new(outcome: Outcome, write: Write, state: RowState) -> Decision {
        Decision { outcome, write, state, conflicts: SmallVec::new(), drop_parked_before: None }
    }
}

/// An incoming write: its version and the (non-key) columns it sets.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub v: Ver,
    pub cols: &'a [u32],
}

/// Whether losing `loser` to `winner` is worth a conflict record: always
/// across origins; within one origin only when the later entry (higher seq)
/// lost, which means its clock went backwards (an origin's own older write
/// arriving late and losing to its newer one is what applying in order
/// would have done anyway).
pub fn worth_recording(loser: Option<Ver>, winner: Ver) -> bool {
    match loser {
        None => true,
        Some(l) => l.origin != winner.origin || l.seq > winner.seq,
    }
}

/// Adds `col` to the conflict between `loser` and `winner`, making one
/// record per pair.
fn lose(out: &mut SmallVec<[Conflict; 2]>, kind: ConflictKind, loser: Option<Ver>, winner: Ver, col: u32, mine: bool) {
    if !worth_recording(loser, winner) {
        return;
    }
    let found = out.iter_mut().find(|c| c.loser == loser && c.winner == winner && c.kind == kind);
    match found {
        Some(Conflict { lost: Lost::Incoming(cols) | Lost::Existing(cols), .. }) => cols.push(col),
        None => {
            let cols: Columns = std::iter::once(col).collect();
            let lost = if mine { Lost::Incoming(cols) } else { Lost::Existing(cols) };
            out.push(Conflict { kind, loser, winner, lost });
        }
    }
}

/// Last writer wins, column by column, for a write into a present row:
/// the incoming columns that win, and the conflicts (existing values
/// overwritten, incoming values older than what is there).
fn last_writer_wins(
    st: &RowState,
    w: &Incoming,
    kind: ConflictKind,
    o: &impl Order,
) -> (Columns, SmallVec<[Conflict; 2]>) {
    let mut winners = Columns::new();
    let mut conflicts = SmallVec::new();
    for &c in w.cols {
        match st.col(c) {
            // No version: a value ferry never wrote (a default, or a row made
            // outside ferry): the write wins, and a row made outside ferry
            // loses its value (recorded, as `None`).
            None => {
                if st.ins.is_none() && st.present {
                    lose(&mut conflicts, kind, None, w.v, c, false);
                }
                winners.push(c);
            }
            Some(cur) => match o.cmp(w.v, cur) {
                Ordering::Greater => {
                    lose(&mut conflicts, kind, Some(cur), w.v, c, false);
                    winners.push(c);
                }
                Ordering::Less => lose(&mut conflicts, kind, Some(w.v), cur, c, true),
                Ordering::Equal => {}
            },
        }
    }
    (winners, conflicts)
}

/// The newest delete, when it is newer than `v`: `v` lost to it.
fn deleted_after(st: &RowState, v: Ver, o: &impl Order) -> Option<Ver> {
    st.del.filter(|d| o.cmp(v, *d) == Ordering::Less)
}

fn max_ver(a: Option<Ver>, b: Ver, o: &impl Order) -> Option<Ver> {
    Some(if o.newer(b, a) { b } else { a.unwrap_or(b) })
}

/// An insert. `st` is `None` for a key the ledger has never seen: the row
/// is inserted; should it exist already (made outside ferry), the engine
/// asks [`insert_over_unknown_row`].
pub fn insert(st: Option<&RowState>, w: &Incoming, o: &impl Order) -> Decision {
    let fresh = |st: RowState| RowState {
        present: true,
        held: false,
        ins: max_ver(st.ins, w.v, o),
        cols: w.cols.iter().map(|&c| (c, w.v)).collect(),
        ..st
    };
    let Some(st) = st else {
        return Decision::new(Outcome::Applied, Write::InsertRow { replay_parked: false }, fresh(RowState::default()));
    };
    if let Some(d) = deleted_after(st, w.v, o) {
        // Older than the tombstone: the row was deleted after this insert.
        let state = RowState { ins: max_ver(st.ins, w.v, o), ..st.clone() };
        let mut dec = Decision::new(Outcome::Superseded, Write::Nothing, state);
        if worth_recording(Some(w.v), d) {
            dec.conflicts.push(Conflict {
                kind: ConflictKind::RowMissing,
                loser: Some(w.v),
                winner: d,
                lost: Lost::Incoming(Columns::new()),
            });
        }
        return dec;
    }
    if st.present {
        return merge_into_present(st, w, ConflictKind::RowExists, o, true);
    }
    // Absent, and newer than the newest delete: the row comes (back).
    Decision::new(Outcome::Applied, Write::InsertRow { replay_parked: st.parked }, fresh(st.clone()))
}

/// An insert of a key the ledger had never seen, whose row turned out to be
/// in the table already (made outside ferry): its values lose to the
/// insert's, and that is recorded.
pub fn insert_over_unknown_row(w: &Incoming, o: &impl Order) -> Decision {
    let st = RowState { present: true, ..RowState::default() };
    merge_into_present(&st, w, ConflictKind::RowExists, o, true)
}

/// An insert or update into a present (or held) row: last writer wins per
/// column.
fn merge_into_present(st: &RowState, w: &Incoming, kind: ConflictKind, o: &impl Order, is_insert: bool) -> Decision {
    let (winners, conflicts) = last_writer_wins(st, w, kind, o);
    let mut state = st.clone();
    if is_insert {
        state.ins = max_ver(st.ins, w.v, o);
    }
    let outcome = if winners.is_empty() && !w.cols.is_empty() { Outcome::Superseded } else { Outcome::Applied };
    let write = if winners.is_empty() { Write::Nothing } else { Write::SetColumns(winners.clone()) };
    for &c in &winners {
        state.set_col(c, w.v);
    }
    Decision { outcome, write, state, conflicts, drop_parked_before: None }
}

/// An update. `st` is `None` for a key the ledger has never seen: the row
/// may have been made outside ferry, or may still be on its way ([`Write::Probe`]).
pub fn update(st: Option<&RowState>, w: &Incoming, o: &impl Order) -> Decision {
    let Some(st) = st else {
        return Decision::new(Outcome::Applied, Write::Probe, RowState::default());
    };
    if let Some(d) = deleted_after(st, w.v, o) {
        let mut dec = Decision::new(Outcome::Superseded, Write::Nothing, st.clone());
        if worth_recording(Some(w.v), d) {
            dec.conflicts.push(Conflict {
                kind: ConflictKind::RowMissing,
                loser: Some(w.v),
                winner: d,
                lost: Lost::Incoming(Columns::new()),
            });
        }
        return dec;
    }
    if !st.present {
        // Newer than any delete: it waits for an insert to bring the row back.
        let state = RowState { parked: true, ..st.clone() };
        return Decision::new(Outcome::Parked, Write::Park, state);
    }
    merge_into_present(st, w, ConflictKind::Overwritten, o, false)
}

/// A probed update found its row (made outside ferry): it is written.
pub fn update_found(w: &Incoming) -> Decision {
    let state = RowState { present: true, cols: w.cols.iter().map(|&c| (c, w.v)).collect(), ..RowState::default() };
    Decision::new(Outcome::Applied, Write::SetColumns(w.cols.iter().copied().collect()), state)
}

/// A probed update found no row: it waits for one.
pub fn update_not_found() -> Decision {
    Decision::new(Outcome::Parked, Write::Park, RowState { parked: true, ..RowState::default() })
}

/// An update of a row the ledger holds as present but that is gone from the
/// table (deleted at the target outside ferry): the ledger learns the row
/// is absent and the update waits for it, so nothing is lost.
pub fn update_row_vanished(st: &RowState) -> Decision {
    let state = RowState { present: false, held: false, parked: true, cols: Cols::new(), ..st.clone() };
    Decision::new(Outcome::Parked, Write::Park, state)
}

/// A delete.
pub fn delete(st: Option<&RowState>, w: &Incoming, o: &impl Order) -> Decision {
    let Some(st) = st else {
        // A row made outside ferry, or one still to come: a tombstone either way.
        let state = RowState { del: Some(w.v), ..RowState::default() };
        return Decision::new(Outcome::Applied, Write::DeleteRow { survivors: SmallVec::new() }, state);
    };
    if !o.newer(w.v, st.del) {
        // An older delete than the tombstone: already done.
        return Decision::new(Outcome::Applied, Write::Nothing, st.clone());
    }
    let mut state = RowState { del: Some(w.v), ..st.clone() };
    let mut dec = if st.present && st.ins.is_none_or(|i| o.cmp(i, w.v) == Ordering::Less) {
        // The delete ends the row's current life. Columns written after it
        // survive as parked writes (a later insert brings them back).
        let mut survivors: SmallVec<[(Ver, Columns); 1]> = SmallVec::new();
        for &(c, v) in &st.cols {
            if o.cmp(v, w.v) == Ordering::Greater {
                match survivors.iter_mut().find(|(sv, _)| *sv == v) {
                    Some((_, cols)) => cols.push(c),
                    None => survivors.push((v, std::iter::once(c).collect())),
                }
            }
        }
        state.present = false;
        state.held = false;
        state.cols = Cols::new();
        state.parked |= !survivors.is_empty();
        Decision::new(Outcome::Applied, Write::DeleteRow { survivors }, state)
    } else if st.present {
        // Inserted again after this delete: only what was written before
        // the delete is gone (back to the defaults).
        let mut stale = Columns::new();
        let mut conflicts = SmallVec::new();
        for &(c, v) in &st.cols {
            if o.cmp(v, w.v) == Ordering::Less {
                stale.push(c);
                lose(&mut conflicts, ConflictKind::RowMissing, Some(v), w.v, c, false);
            }
        }
        state.cols.retain(|(_, v)| o.cmp(*v, w.v) != Ordering::Less);
        let write = if stale.is_empty() { Write::Nothing } else { Write::ResetColumns(stale) };
        let mut dec = Decision::new(Outcome::Applied, write, state);
        dec.conflicts = conflicts;
        dec
    } else {
        Decision::new(Outcome::Applied, Write::Nothing, state)
    };
    if st.parked {
        dec.drop_parked_before = Some(w.v);
    }
    dec
}

/// A parked write at version `p` under a new tombstone `del`: `None` when it
/// stays parked (it is newer), else the conflict that records its loss (if
/// worth recording).
pub fn parked_under_delete(p: Ver, del: Ver, o: &impl Order) -> Option<Option<Conflict>> {
    if o.cmp(p, del) == Ordering::Greater {
        return None;
    }
    Some(worth_recording(Some(p), del).then(|| Conflict {
        kind: ConflictKind::RowMissing,
        loser: Some(p),
        winner: del,
        lost: Lost::Incoming(Columns::new()),
    }))
}

/// The claim a row lays to its values of a unique index: the newest version
/// among those columns (`None`: values ferry never wrote, such as a row made
/// outside ferry, which are older than any write).
pub fn claim(st: &RowState, cols: &[u32], o: &impl Order) -> Option<Ver> {
    let mut out: Option<Ver> = None;
    for &c in cols {
        match st.col(c).or(st.ins) {
            Some(v) if o.newer(v, out) => out = Some(v),
            _ => {}
        }
    }
    out
}

/// Two rows want the same value of a unique index: whether the row already
/// in the table (claim `existing`) keeps it against a row that wants it
/// (claim `wanting`). The older claim keeps the value; the other row is held
/// until the value is free. So the row that got it first in time order has
/// it, whatever order the bundles arrived in.
pub fn keeps_unique(existing: Option<Ver>, wanting: Option<Ver>, o: &impl Order) -> bool {
    match (existing, wanting) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(w)) => o.cmp(e, w) != Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions compare by timestamp, then origin id, then seq (origins are
    /// their own names here).
    struct ByNumber;
    impl Order for ByNumber {
        fn cmp(&self, a: Ver, b: Ver) -> Ordering {
            (a.ts, a.origin, a.seq).cmp(&(b.ts, b.origin, b.seq))
        }
    }

    fn v(ts: i64, origin: u32, seq: u64) -> Ver {
        Ver { ts, origin, seq }
    }

    fn present(ins: Ver, cols: &[(u32, Ver)]) -> RowState {
        RowState { present: true, ins: Some(ins), cols: cols.iter().copied().collect(), ..RowState::default() }
    }

    #[test]
    fn a_new_key_is_inserted() {
        let d = insert(None, &Incoming { v: v(1, 1, 1), cols: &[0, 1] }, &ByNumber);
        assert_eq!(d.outcome, Outcome::Applied);
        assert_eq!(d.write, Write::InsertRow { replay_parked: false });
        assert_eq!(d.state.cols.len(), 2);
    }

    #[test]
    fn two_inserts_of_one_key_keep_the_losers_values() {
        let st = present(v(5, 1, 1), &[(0, v(5, 1, 1)), (1, v(5, 1, 1))]);
        // A newer insert from origin 2 overwrites both: origin 1's values are the lost ones.
        let d = insert(Some(&st), &Incoming { v: v(9, 2, 1), cols: &[0, 1] }, &ByNumber);
        assert_eq!(d.write, Write::SetColumns([0, 1].into_iter().collect()));
        assert_eq!(d.conflicts.len(), 1);
        let c = &d.conflicts[0];
        assert_eq!((c.kind, c.loser, c.winner), (ConflictKind::RowExists, Some(v(5, 1, 1)), v(9, 2, 1)));
        assert_eq!(c.lost, Lost::Existing([0, 1].into_iter().collect()));
        // An older insert loses its own values.
        let d = insert(Some(&st), &Incoming { v: v(2, 2, 1), cols: &[0, 1] }, &ByNumber);
        assert_eq!(d.outcome, Outcome::Superseded);
        assert_eq!(d.conflicts[0].lost, Lost::Incoming([0, 1].into_iter().collect()));
        assert_eq!(d.conflicts[0].loser, Some(v(2, 2, 1)));
    }

    #[test]
    fn an_origins_own_later_write_losing_is_recorded_as_a_clock_problem() {
        assert!(!worth_recording(Some(v(1, 1, 1)), v(2, 1, 2)), "older write of the same origin");
        assert!(worth_recording(Some(v(1, 1, 5)), v(2, 1, 2)), "later seq stamped earlier");
        assert!(worth_recording(Some(v(1, 1, 1)), v(2, 2, 1)));
    }

    #[test]
    fn updates_wait_for_absent_rows_and_lose_to_newer_deletes() {
        let deleted = RowState { del: Some(v(5, 1, 2)), ins: Some(v(1, 1, 1)), ..RowState::default() };
        let older = update(Some(&deleted), &Incoming { v: v(3, 2, 1), cols: &[0] }, &ByNumber);
        assert_eq!(older.outcome, Outcome::Superseded);
        assert_eq!(older.conflicts[0].kind, ConflictKind::RowMissing);
        let newer = update(Some(&deleted), &Incoming { v: v(7, 2, 1), cols: &[0] }, &ByNumber);
        assert_eq!((newer.outcome, &newer.write), (Outcome::Parked, &Write::Park));
        assert!(newer.conflicts.is_empty(), "a parked write has lost nothing");
        assert_eq!(update(None, &Incoming { v: v(7, 2, 1), cols: &[0] }, &ByNumber).write, Write::Probe);
    }

    #[test]
    fn a_delete_parks_what_was_written_after_it() {
        let st = present(v(1, 1, 1), &[(0, v(1, 1, 1)), (1, v(9, 2, 4))]);
        let d = delete(Some(&st), &Incoming { v: v(5, 3, 1), cols: &[] }, &ByNumber);
        let Write::DeleteRow { survivors } = &d.write else { panic!("{:?}", d.write) };
        assert_eq!(survivors.as_slice(), &[(v(9, 2, 4), [1].into_iter().collect::<Columns>())]);
        assert!(!d.state.present && d.state.parked);
    }

    #[test]
    fn a_late_delete_resets_only_older_columns_of_a_reinserted_row() {
        let st = present(v(8, 1, 3), &[(0, v(8, 1, 3)), (1, v(2, 2, 1))]);
        let d = delete(Some(&st), &Incoming { v: v(5, 3, 1), cols: &[] }, &ByNumber);
        assert_eq!(d.write, Write::ResetColumns([1].into_iter().collect()));
        assert_eq!(d.conflicts[0].loser, Some(v(2, 2, 1)), "the reset value is recorded");
        assert!(d.state.present);
    }

    #[test]
    fn held_rows_merge_like_present_ones() {
        let st = RowState { held: true, ..present(v(1, 1, 1), &[(0, v(1, 1, 1))]) };
        let d = update(Some(&st), &Incoming { v: v(3, 2, 1), cols: &[0] }, &ByNumber);
        assert_eq!((d.outcome, d.write), (Outcome::Applied, Write::SetColumns([0].into_iter().collect())));
        assert!(d.state.held, "still held: the engine writes the held copy");
        assert_eq!(d.state.col(0), Some(v(3, 2, 1)));
    }

    #[test]
    fn the_older_claim_keeps_a_unique_value() {
        assert!(keeps_unique(Some(v(1, 1, 1)), Some(v(2, 2, 1)), &ByNumber));
        assert!(!keeps_unique(Some(v(3, 1, 1)), Some(v(2, 2, 1)), &ByNumber));
        assert!(keeps_unique(None, Some(v(2, 2, 1)), &ByNumber), "a row made outside ferry keeps its value");
    }

    #[test]
    fn future_is_more_than_a_day_ahead() {
        let now = 1_000_000_000_000;
        assert!(!is_future(now + FUTURE_SLACK_MICROS, now));
        assert!(is_future(now + FUTURE_SLACK_MICROS + 1, now));
        assert!(!is_future(i64::MIN, now));
        assert!(!is_future(i64::MAX, i64::MAX));
    }
}
