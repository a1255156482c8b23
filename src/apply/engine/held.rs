//! Held rows: rows the merge says are present but that cannot stand in
//! their table right now, kept in `_ferry_held` (the whole row as JSON) and
//! put back as soon as they can:
//!
//! - a row whose parent row is missing (checked at the end of a run, so a
//!   child may arrive before its parent anywhere within one run);
//! - a row that wants a value of a unique index an older write claims
//!   (which of the two keeps it is [`merge::keeps_unique`]'s rule);
//! - a new row the database refuses (NOT NULL, CHECK, a type).
//!
//! Ferry turns the database's own foreign-key actions off while applying
//! (origins journal what their cascades did), so whether a row stands
//! depends only on what is in the database at the end, never on arrival
//! order. [`Engine::settle`] puts held rows back and holds orphans, until
//! nothing changes.

use std::rc::Rc;

use smallvec::SmallVec;

use super::physical::{self, Refusal, Written};
use super::table::TableInfo;
use super::{key_text, ledger_key, Ctx, Engine, Fail, CONSTRAINT, FOREIGN_KEY, UNIQUE};
use crate::apply::ledger::RowState;
use crate::apply::merge::{self, Outcome};
use crate::apply::session::{self, Param};
use crate::args;
use crate::journal::Row;
use crate::schema::quote;
use crate::value::Value;

/// Settling stops after this many rounds even if rows still change hands
/// (only a cycle of foreign keys and unique values could need more).
const SETTLE_ROUNDS: usize = 64;

/// Who keeps a unique value a row wants.
enum Holder {
    /// This row (key values) holds it with a newer claim: it must give it up.
    Evict(Vec<Value>, String),
    /// The value stays where it is; the wanting row is held, for this reason.
    Keeps(String),
}

impl<'c> Engine<'c> {
    /// An insert the database refused: the row is held (or, for a unique
    /// value a newer row holds, that row is).
    pub(super) fn insert_refused(
        &mut self,
        cx: &Ctx,
        before: Option<RowState>,
        state: RowState,
        r: Refusal,
    ) -> Result<(Outcome, RowState), Fail> {
        let msg = match r {
            Refusal::Key => {
                // Made here outside ferry, though the ledger did not know it.
                let mut d = merge::insert_over_unknown_row(&cx.incoming(), &self.origins);
                if let Some(b) = &before {
                    d.state.del = b.del;
                    d.state.parked = b.parked;
                }
                return self.carry_out(cx, Some(RowState { present: true, ..RowState::default() }), d);
            }
            Refusal::Unique(m) => m,
            Refusal::Other(m) => {
                let state = self.hold_new(cx, state, CONSTRAINT, &m)?;
                return Ok((Outcome::Quarantined, state));
            }
        };
        let row = self.row_of_insert(cx);
        match self.make_room(&cx.t, &cx.key_vals, &row, &state, &msg, |eng| eng.insert_physical(cx))? {
            None => Ok((Outcome::Applied, state)),
            Some((kind, reason)) => {
                let state = self.hold_new(cx, state, kind, &reason)?;
                Ok((Outcome::Quarantined, state))
            }
        }
    }

    /// An update the database refused for a unique value: the older claim
    /// keeps it. If that is this row's, the other row is held and the update
    /// written; else this row is held with the update in it.
    pub(super) fn update_clash(
        &mut self,
        cx: &Ctx,
        cols: &[u32],
        before: RowState,
        state: RowState,
        msg: &str,
    ) -> Result<(Outcome, RowState), Fail> {
        let mut row = physical::read_row(self.conn, &cx.t, &cx.key_vals)?.unwrap_or_default();
        for (_, c, v) in cx.fields_of(cols) {
            if let Some(slot) = row.0.iter_mut().find(|(x, _)| x == c) {
                slot.1 = (*v).clone();
            }
        }
        let write = |eng: &mut Engine<'c>| {
            let fields: SmallVec<[_; 8]> = cx.fields_of(cols).collect();
            eng.sql.update(eng.conn, &cx.t, &cx.key_vals, fields.iter().map(|f| f.1), fields.iter().map(|f| f.2))
        };
        match self.make_room(&cx.t, &cx.key_vals, &row, &state, msg, write)? {
            None => Ok((Outcome::Applied, state)),
            Some((kind, reason)) => {
                let _ = before;
                physical::delete(self.conn, &cx.t, &cx.key_vals)?;
                self.put_held(&cx.t.name, &cx.lkey, &row, kind, &reason, Some((cx.v.origin, cx.e.seq)))?;
                self.events.held += 1;
                Ok((Outcome::Quarantined, RowState { held: true, ..state }))
            }
        }
    }

    /// Finds who holds the unique values `row` wants; while that is a row
    /// with a newer claim, holds it and runs `write` again. `None` once
    /// `write` succeeded; else the kind and reason to hold `row` for.
    fn make_room(
        &mut self,
        t: &Rc<TableInfo>,
        key_vals: &[Value],
        row: &Row,
        claimant: &RowState,
        msg: &str,
        mut write: impl FnMut(&mut Engine<'c>) -> Result<Written, Fail>,
    ) -> Result<Option<(&'static str, String)>, Fail> {
        let mut msg = msg.to_owned();
        for _ in 0..=t.uniques.len() {
            match self.unique_holder(t, key_vals, row, claimant, &msg)? {
                Holder::Keeps(reason) => return Ok(Some((UNIQUE, reason))),
                Holder::Evict(other, reason) => {
                    let lkey = ledger_key(&other);
                    let st = self.rows.load_row(&t.name, &lkey)?.unwrap_or_default();
                    let st = self.move_to_held(t, &other, &lkey, st, UNIQUE, &reason, None)?;
                    self.rows.save_row(&t.name, &lkey, &st)?;
                    self.events.held += 1;
                }
            }
            match write(self)? {
                Written::Done(_) => return Ok(None),
                Written::Refused(Refusal::Unique(m)) => msg = m,
                Written::Refused(Refusal::Other(m)) => return Ok(Some((CONSTRAINT, m))),
                Written::Refused(Refusal::Key) => {
                    return Ok(Some((CONSTRAINT, "a row with this key was made in this database outside ferry".into())))
                }
            }
        }
        Ok(Some((UNIQUE, msg)))
    }

    /// Which row holds a unique value `row` (keyed `key_vals`, its ledger
    /// state `claimant`) wants, and whether it keeps it.
    fn unique_holder(
        &mut self,
        t: &TableInfo,
        key_vals: &[Value],
        row: &Row,
        claimant: &RowState,
        msg: &str,
    ) -> Result<Holder, Fail> {
        for idx in &t.uniques {
            let vals: Option<Vec<Value>> =
                idx.columns.iter().map(|c| row.get(c).filter(|v| **v != Value::Null).cloned()).collect();
            let Some(vals) = vals else { continue };
            // A unique index has at most one row with these values.
            if let Some(other) = physical::find_by(self.conn, t, &idx.columns, &vals, key_vals)?.into_iter().next() {
                let nos: SmallVec<[u32; 4]> = idx.columns.iter().map(|c| t.no(c)).collect();
                let theirs = self.rows.load_row(&t.name, &ledger_key(&other))?;
                let their_claim = theirs.as_ref().and_then(|s| merge::claim(s, &nos, &self.origins));
                let my_claim = merge::claim(claimant, &nos, &self.origins);
                let what = format!("{} {}", idx.columns.join(", "), key_text(&vals));
                if merge::keeps_unique(their_claim, my_claim, &self.origins) {
                    let by = match their_claim {
                        Some(v) => format!("{}'s entry {}", self.person(v.origin), v.seq),
                        None => "a row made in this database outside ferry".into(),
                    };
                    return Ok(Holder::Keeps(format!(
                        "its {what} is taken by row {} of {:?}, which had it first ({by}); held until that value is free",
                        key_text(&other),
                        t.name
                    )));
                }
                let by = my_claim.map(|v| format!("{}'s entry {}", self.person(v.origin), v.seq)).unwrap_or_default();
                return Ok(Holder::Evict(
                    other,
                    format!(
                        "its {what} was had first by row {} of {:?} ({by}); held until that value is free",
                        key_text(key_vals),
                        t.name
                    ),
                ));
            }
        }
        Ok(Holder::Keeps(format!("the database refused it: {msg}")))
    }

    /// Holds a row that was never in its table (an insert the database
    /// refused), counting the entry as quarantined.
    fn hold_new(&mut self, cx: &Ctx, state: RowState, kind: &str, reason: &str) -> Result<RowState, Fail> {
        let row = self.row_of_insert(cx);
        self.put_held(&cx.t.name, &cx.lkey, &row, kind, reason, Some((cx.v.origin, cx.e.seq)))?;
        Ok(RowState { held: true, ..state })
    }

    /// Moves a row from its table to `_ferry_held`. `entry`: the entry
    /// counted as quarantined because of it (none for a row that was
    /// applied and is held later).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn move_to_held(
        &mut self,
        t: &TableInfo,
        key_vals: &[Value],
        lkey: &Value,
        st: RowState,
        kind: &str,
        reason: &str,
        entry: Option<(u32, u64)>,
    ) -> Result<RowState, Fail> {
        let Some(row) = physical::read_row(self.conn, t, key_vals)? else { return Ok(st) };
        physical::delete(self.conn, t, key_vals)?;
        self.put_held(&t.name, lkey, &row, kind, reason, entry)?;
        self.dirty.insert(t.name.clone());
        Ok(RowState { held: true, ..st })
    }

    fn put_held(
        &mut self,
        tname: &str,
        lkey: &Value,
        row: &Row,
        kind: &str,
        reason: &str,
        entry: Option<(u32, u64)>,
    ) -> Result<(), Fail> {
        let text = serde_json::to_string(row).unwrap_or_default();
        let origin = entry.map(|(o, _)| self.origins.name(o).to_owned());
        let sql = self.conn.dialect().pick(
            "INSERT OR REPLACE INTO _ferry_held (tbl, key, row, kind, reason, origin, seq, since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            "INSERT INTO _ferry_held (tbl, key, row, kind, reason, origin, seq, since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (tbl, key) DO UPDATE SET row = excluded.row, kind = excluded.kind, reason = excluded.reason,
             origin = excluded.origin, seq = excluded.seq, since = excluded.since",
            "REPLACE INTO _ferry_held (tbl, \"key\", row, kind, reason, origin, seq, since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        );
        self.conn
            .execute(sql, args![tname, lkey, text, kind, reason, origin, entry.map(|(_, s)| s as i64), self.now])?;
        Ok(())
    }

    /// The held copy of a row.
    pub(super) fn held_row(&self, tname: &str, lkey: &Value) -> Result<Option<Row>, Fail> {
        let text: Option<String> = self
            .conn
            .query_opt("SELECT row FROM _ferry_held WHERE tbl = ?1 AND key = ?2", args![tname, lkey])?
            .map(|r| r.get(0))
            .transpose()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Changes columns of a held copy.
    pub(super) fn edit_held_copy<'a>(
        &mut self,
        tname: &str,
        lkey: &Value,
        set: impl Iterator<Item = (&'a str, &'a Value)>,
    ) -> Result<(), Fail> {
        let Some(mut row) = self.held_row(tname, lkey)? else { return Ok(()) };
        for (c, v) in set {
            if let Some(slot) = row.0.iter_mut().find(|(x, _)| x == c) {
                slot.1 = v.clone();
            }
        }
        self.conn.execute(
            "UPDATE _ferry_held SET row = ?3 WHERE tbl = ?1 AND key = ?2",
            args![tname, lkey, serde_json::to_string(&row).unwrap_or_default()],
        )?;
        Ok(())
    }

    /// Removes a held copy; the entry it was counted for (if any) now has
    /// outcome `to`.
    pub(super) fn release_held_copy(&mut self, tname: &str, lkey: &Value, to: Outcome) -> Result<(), Fail> {
        let entry: Option<(Option<String>, Option<i64>)> = self
            .conn
            .query_opt("SELECT origin, seq FROM _ferry_held WHERE tbl = ?1 AND key = ?2", args![tname, lkey])?
            .map(|r| Ok::<_, session::DbError>((r.get(0)?, r.get(1)?)))
            .transpose()?;
        self.conn.execute("DELETE FROM _ferry_held WHERE tbl = ?1 AND key = ?2", args![tname, lkey])?;
        if let Some((Some(origin), Some(_))) = entry {
            let oid = self.origin_id(&origin)?;
            self.moved(oid, Outcome::Quarantined, to);
        }
        Ok(())
    }

    /// A tracked target's own insert of a key whose row ferry holds: the
    /// local row is in the table now, and the held copy gives way to it.
    pub(super) fn drop_held_for_local(&mut self, cx: &Ctx, st: RowState) -> Result<RowState, Fail> {
        self.release_held_copy(&cx.t.name, &cx.lkey, Outcome::Superseded)?;
        Ok(RowState { held: false, present: false, cols: Default::default(), ..st })
    }

    /// Puts held rows back and holds rows whose parent is missing, until
    /// nothing changes; the end of every run.
    pub(super) fn settle(&mut self) -> Result<(), Fail> {
        for _ in 0..SETTLE_ROUNDS {
            let released = self.release_held()?;
            let held = self.hold_orphans()?;
            if !released && !held {
                break;
            }
        }
        Ok(())
    }

    /// Tries every held row once; whether any went back.
    fn release_held(&mut self) -> Result<bool, Fail> {
        let held: Vec<(String, Value, String)> = self
            .conn
            .query("SELECT tbl, key, row FROM _ferry_held ORDER BY since, tbl, key", &[])?
            .iter()
            .map(|r| Ok((r.get(0)?, crate::apply::ledger::key_from_db(r.value(1)), r.get(2)?)))
            .collect::<session::Result<_>>()?;
        let mut any = false;
        for (tname, lkey, text) in held {
            let Some(t) = self.tables.get(&tname).cloned() else { continue };
            let Ok(row) = serde_json::from_str::<Row>(&text) else { continue };
            let key_vals: Vec<Value> = t.key.iter().map(|k| row.get(k).cloned().unwrap_or(Value::Null)).collect();
            let Some(mut st) = self.rows.load_row(&tname, &lkey)?.filter(|s| s.held && s.present) else {
                // The ledger no longer holds it (a delete came): nothing to put back.
                self.release_held_copy(&tname, &lkey, Outcome::Superseded)?;
                continue;
            };
            if let Some(why) = self.missing_parent(&t, &row)? {
                self.conn.execute(
                    "UPDATE _ferry_held SET kind = ?3, reason = ?4 WHERE tbl = ?1 AND key = ?2",
                    args![tname, lkey, FOREIGN_KEY, why],
                )?;
                continue;
            }
            let insert = |eng: &mut Engine<'c>| {
                let cols = row.0.iter().map(|(c, _)| c.as_str());
                eng.sql.insert(eng.conn, &t, cols, row.0.iter().map(|(_, v)| v))
            };
            let outcome = match insert(self)? {
                Written::Done(_) => None,
                Written::Refused(Refusal::Unique(m)) => self.make_room(&t, &key_vals, &row, &st, &m, insert)?,
                Written::Refused(Refusal::Other(m)) => Some((CONSTRAINT, m)),
                Written::Refused(Refusal::Key) => {
                    Some((CONSTRAINT, "a row with this key was made in this database outside ferry".into()))
                }
            };
            match outcome {
                None => {
                    self.release_held_copy(&tname, &lkey, Outcome::Applied)?;
                    st.held = false;
                    if st.parked {
                        self.replay_parked(&t, &lkey, &key_vals, &mut st)?;
                    }
                    self.rows.save_row(&tname, &lkey, &st)?;
                    self.dirty.insert(tname.clone());
                    self.events.released += 1;
                    any = true;
                }
                Some((kind, reason)) => {
                    self.conn.execute(
                        "UPDATE _ferry_held SET kind = ?3, reason = ?4 WHERE tbl = ?1 AND key = ?2",
                        args![tname, lkey, kind, reason],
                    )?;
                }
            }
        }
        Ok(any)
    }

    /// The columns a foreign key references in its parent.
    fn parent_columns<'a>(&'a self, fk: &'a super::table::ForeignKey) -> Option<(Rc<TableInfo>, Vec<String>)> {
        let parent = self.tables.get(&fk.parent)?.clone();
        let cols = if fk.parent_columns.is_empty() { parent.key.clone() } else { fk.parent_columns.clone() };
        (cols.len() == fk.columns.len()).then_some((parent, cols))
    }

    /// Why `row` of `t` cannot stand: a parent row it references is missing.
    fn missing_parent(&self, t: &TableInfo, row: &Row) -> Result<Option<String>, Fail> {
        for fk in &t.foreign_keys {
            let vals: Option<Vec<Value>> =
                fk.columns.iter().map(|c| row.get(c).filter(|v| **v != Value::Null).cloned()).collect();
            let Some(vals) = vals else { continue };
            let Some((parent, pcols)) = self.parent_columns(fk) else { continue };
            let wheres: Vec<String> =
                pcols.iter().enumerate().map(|(i, c)| format!("{} = ?{}", TableInfo::sql_name(c), i + 1)).collect();
            let sql = format!("SELECT 1 FROM {} WHERE {} LIMIT 1", parent.quoted, wheres.join(" AND "));
            let params: Vec<Param> = vals.iter().map(Param::Value).collect();
            if self.conn.query_opt(&sql, &params)?.is_none() {
                return Ok(Some(orphan_reason(fk, &parent.name, &vals)));
            }
        }
        Ok(None)
    }

    /// Holds every row ferry wrote whose parent is missing, in the tables
    /// this run changed and their children; whether any was held. Rows ferry
    /// did not write are the app's own business and stay.
    fn hold_orphans(&mut self) -> Result<bool, Fail> {
        let mut any = false;
        let tables: Vec<Rc<TableInfo>> = self
            .tables
            .values()
            .filter(|t| {
                !t.foreign_keys.is_empty()
                    && (self.dirty.contains(&t.name) || t.foreign_keys.iter().any(|fk| self.dirty.contains(&fk.parent)))
            })
            .cloned()
            .collect();
        for t in tables {
            for fk in &t.foreign_keys {
                let Some((parent, pcols)) = self.parent_columns(fk) else { continue };
                let keys: Vec<String> = t.key.iter().map(|k| format!("c.{}", TableInfo::sql_name(k))).collect();
                let fks: Vec<String> = fk.columns.iter().map(|c| format!("c.{}", quote(c))).collect();
                let not_null: Vec<String> = fks.iter().map(|c| format!("{c} IS NOT NULL")).collect();
                let matches: Vec<String> =
                    pcols.iter().zip(&fks).map(|(p, c)| format!("p.{} = {c}", TableInfo::sql_name(p))).collect();
                let sql = format!(
                    "SELECT {}, {} FROM {} AS c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {})",
                    keys.join(", "),
                    fks.join(", "),
                    t.quoted,
                    not_null.join(" AND "),
                    parent.quoted,
                    matches.join(" AND ")
                );
                let (nk, nf) = (t.key.len(), fks.len());
                let orphans: Vec<(Vec<Value>, Vec<Value>)> = self
                    .conn
                    .query(&sql, &[])?
                    .into_iter()
                    .map(|mut r| {
                        let fks = r.0.split_off(nk.min(r.0.len()));
                        (r.0, fks.into_iter().take(nf).collect())
                    })
                    .collect();
                for (key_vals, vals) in orphans {
                    let lkey = ledger_key(&key_vals);
                    let Some(st) = self.rows.load_row(&t.name, &lkey)?.filter(|s| s.present && !s.held) else {
                        continue;
                    };
                    let why = orphan_reason(fk, &parent.name, &vals);
                    let st = self.move_to_held(&t, &key_vals, &lkey, st, FOREIGN_KEY, &why, None)?;
                    self.rows.save_row(&t.name, &lkey, &st)?;
                    self.events.held += 1;
                    any = true;
                }
            }
        }
        Ok(any)
    }
}

fn orphan_reason(fk: &super::table::ForeignKey, parent: &str, vals: &[Value]) -> String {
    format!(
        "its {} {} names a row of {parent:?} that is not here (yet); held until it arrives",
        fk.columns.join(", "),
        key_text(vals)
    )
}
