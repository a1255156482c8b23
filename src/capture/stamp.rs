//! Entry times.
//!
//! Inside one journal the order of entries is the truth, so an entry is
//! never stamped before the one ahead of it, nor before the clock floor a
//! server's `bundle apply` set (just past the newest entry it applied there,
//! so the server's own next edit comes after what it has seen). A previous
//! time or a floor more than a day ahead of the clock is ignored: it is a
//! wrong date, and following it would push every later entry into the
//! future.
//!
//! The capture triggers record SQLite's clock as it is (`julianday('now')`,
//! the cheapest thing a trigger can do: every table read a trigger makes
//! costs about as much per row as the journal insert itself). The promised
//! times are worked out when entries are read, in journal order, by
//! [`Stamper`]: a pure function of the recorded times and the floors, so
//! every read gives every entry the same time. Floors are recorded in
//! `_ferry_floors` with the last seq before them (a floor applies to the
//! entries captured after it was set). A reader that starts inside the
//! journal needs the stamped time of the entry before its first: `bundle
//! create` keeps it beside its watermark (`_ferry_control.bundled_ts`), a
//! server's fold of its own edits in its ledger.
//!
//! Journals made by capture format 2 recorded the promised times in the
//! triggers; stamping them again changes nothing.

use rusqlite::{Connection, OptionalExtension};

/// The floors table (see the module docs).
pub(crate) const FLOORS_SQL: &str = "CREATE TABLE IF NOT EXISTS _ferry_floors (
    after_seq INTEGER PRIMARY KEY,
    floor REAL NOT NULL
);";

/// One Julian day: how far ahead of the clock a previous time or floor may
/// lie and still be followed.
const SLACK_DAYS: f64 = 1.0;

/// Gives entries, read in journal order, the times capture promises.
#[derive(Debug, Clone)]
pub struct Stamper {
    prev: f64,
    floors: Vec<(u64, f64)>,
    next_floor: usize,
    floor: f64,
}

impl Stamper {
    /// A stamper for entries following one stamped `prev` (0 before the
    /// first entry), with the floors recorded in `conn`'s database.
    pub(crate) fn new(conn: &Connection, prev: f64) -> rusqlite::Result<Stamper> {
        let floors = if has_floors(conn)? {
            let mut st = conn.prepare("SELECT after_seq, floor FROM _ferry_floors ORDER BY after_seq")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, f64>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Stamper { prev, floors, next_floor: 0, floor: 0.0 })
    }

    /// The time of entry `seq`, recorded at `raw` (a Julian day number).
    /// Calls must come in increasing `seq` order.
    pub(crate) fn stamp(&mut self, seq: u64, raw: f64) -> f64 {
        while let Some(&(after, floor)) = self.floors.get(self.next_floor) {
            if after >= seq {
                break;
            }
            self.floor = self.floor.max(floor);
            self.next_floor += 1;
        }
        let mut ts = raw;
        if self.prev <= raw + SLACK_DAYS {
            ts = ts.max(self.prev);
        }
        if self.floor <= raw + SLACK_DAYS {
            ts = ts.max(self.floor);
        }
        self.prev = ts;
        ts
    }

    /// Starts again after an entry stamped `prev` (before the first entry
    /// is stamped).
    pub(crate) fn restart(&mut self, prev: f64) {
        self.prev = prev;
    }

    /// The time given to the last entry stamped (or the starting `prev`).
    pub(crate) fn last(&self) -> f64 {
        self.prev
    }
}

fn has_floors(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = '_ferry_floors'", [], |r| {
        r.get(0)
    })
}

/// Records `floor` (a Julian day number) for the entries captured from now
/// on: those after the journal's last seq.
pub(crate) fn record_floor(conn: &Connection, floor: f64) -> rusqlite::Result<()> {
    conn.execute_batch(FLOORS_SQL)?;
    conn.execute(
        "INSERT INTO _ferry_floors (after_seq, floor) VALUES ((SELECT coalesce(max(seq), 0) FROM _ferry_journal), ?1)
         ON CONFLICT (after_seq) DO UPDATE SET floor = max(floor, excluded.floor)",
        [floor],
    )?;
    Ok(())
}

/// The stamped time of entry `seq` when no reader kept it: its recorded
/// time (exact for journals of capture format 2, which recorded stamped
/// times; otherwise off only if that entry had been moved by the clock).
pub(crate) fn recorded_time(conn: &Connection, seq: u64) -> rusqlite::Result<f64> {
    if seq == 0 {
        return Ok(0.0);
    }
    Ok(conn
        .query_row("SELECT ts FROM _ferry_journal WHERE seq = ?1", [seq as i64], |r| r.get(0))
        .optional()?
        .unwrap_or(0.0))
}

/// Writes every entry's stamped time into the journal (in chunks, memory
/// flat), so that the entries keep their times when the ones before them
/// are dropped (`ferry node reissue`). Needs the floors table (call within
/// the transaction that drops them).
pub(crate) fn settle_times(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(FLOORS_SQL)?;
    let mut stamper = Stamper::new(conn, 0.0)?;
    let mut next = 1i64;
    let mut read = conn.prepare("SELECT seq, ts FROM _ferry_journal WHERE seq >= ?1 ORDER BY seq LIMIT 4096")?;
    let mut write = conn.prepare("UPDATE _ferry_journal SET ts = ?2 WHERE seq = ?1")?;
    loop {
        let chunk: Vec<(i64, f64)> =
            read.query_map([next], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let Some(&(last, _)) = chunk.last() else { return Ok(()) };
        for (seq, raw) in chunk {
            let ts = stamper.stamp(seq.max(0) as u64, raw);
            if ts != raw {
                write.execute(rusqlite::params![seq, ts])?;
            }
        }
        next = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::Stamper;

    fn stamper(floors: Vec<(u64, f64)>) -> Stamper {
        Stamper { prev: 0.0, floors, next_floor: 0, floor: 0.0 }
    }

    #[test]
    fn an_entry_is_never_stamped_before_the_one_ahead_of_it() {
        let mut s = stamper(Vec::new());
        assert_eq!(s.stamp(1, 100.0), 100.0);
        assert_eq!(s.stamp(2, 99.5), 100.0, "the clock went back half a day");
        assert_eq!(s.stamp(3, 100.2), 100.2);
    }

    #[test]
    fn a_previous_time_more_than_a_day_ahead_is_a_wrong_date_and_ignored() {
        let mut s = stamper(Vec::new());
        s.stamp(1, 500.0);
        assert_eq!(s.stamp(2, 100.0), 100.0);
        assert_eq!(s.stamp(3, 100.1), 100.1, "and the entries after follow the clock again");
    }

    #[test]
    fn a_floor_applies_to_the_entries_captured_after_it() {
        let mut s = stamper(vec![(2, 200.5)]);
        assert_eq!(s.stamp(1, 200.0), 200.0);
        assert_eq!(s.stamp(2, 200.1), 200.1, "captured before the floor was set");
        assert_eq!(s.stamp(3, 200.2), 200.5);
        assert_eq!(s.stamp(4, 300.0), 300.0);
    }

    #[test]
    fn a_floor_more_than_a_day_ahead_is_ignored() {
        let mut s = stamper(vec![(0, 900.0)]);
        assert_eq!(s.stamp(1, 100.0), 100.0);
    }

    #[test]
    fn floors_before_the_first_entry_read_still_count() {
        let mut s = stamper(vec![(3, 50.0), (7, 60.0)]);
        assert_eq!(s.stamp(10, 59.5), 60.0);
    }
}
