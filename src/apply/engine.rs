//! Applying one entry: the convergence rules of `docs/APPLY.md`.
//!
//! Per key, the ledger ([`super::ledger::RowState`]) keeps the newest insert
//! version, the newest delete version (the tombstone) and the version of every
//! column ferry wrote. The database then holds, whatever the arrival order:
//!
//! - the row is present iff some insert is newer than the newest delete;
//! - each column holds the value of the newest write (insert or update) to it
//!   that is newer than the newest delete; columns no such write set hold the
//!   table default.
//!
//! Updates for a row that is not present are parked and replayed when an
//! insert makes it present. Every write that loses to another origin's write
//! is recorded in `_ferry_conflicts`; entries the database refuses
//! (constraints) go to `_ferry_quarantine`.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension, Statement};

use super::ledger::{self, RowState, Ver};
use crate::journal::{Entry, Op, Row};
use crate::schema::{self, quote};
use crate::value::Value;

/// Conflict kinds (see `docs/APPLY.md`).
pub const ROW_MISSING: &str = "row_missing";
pub const ROW_EXISTS: &str = "row_exists";
pub const CONSTRAINT: &str = "constraint";
pub const FOREIGN_KEY: &str = "foreign_key";
pub const OVERWRITTEN: &str = "overwritten";

/// A failure while applying: the bundle is refused (bad input), or the run
/// stops (the database failed).
#[derive(Debug)]
pub enum Fail {
    Refused(String),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Db(e)
    }
}

/// A target table, from the local schema only.
pub struct TableInfo {
    pub name: String,
    pub quoted: String,
    /// Key columns in key order; `rowid` for tables without a declared key.
    pub key: Vec<String>,
    /// Their type affinities (see [`Affinity::key_value`]).
    key_affinity: Vec<Affinity>,
    pub columns: Vec<String>,
    /// Column → default value (NULL when none or not a constant).
    pub defaults: HashMap<String, Value>,
    /// `"k1" = ?1 AND "k2" = ?2`.
    pub key_where: String,
    /// `DELETE FROM "t" WHERE <key_where>`.
    delete_sql: String,
    /// Column → its number in ledger row states ([`ledger::column_numbers`];
    /// filled in by [`Engine::new`]).
    numbers: Vec<(String, u32)>,
}

/// The number of a column that has none (never happens once the ledger is
/// prepared: [`Engine::new`] checks every column of the target has one).
const UNNUMBERED: u32 = u32::MAX;

impl TableInfo {
    fn has_column(&self, c: &str) -> bool {
        self.columns.iter().any(|x| x == c) || (self.key.len() == 1 && self.key[0] == "rowid" && c == "rowid")
    }
    fn is_key(&self, c: &str) -> bool {
        self.key.iter().any(|k| k == c)
    }
    /// The ledger number of column `c`.
    fn no(&self, c: &str) -> u32 {
        self.numbers.iter().find(|(n, _)| n == c).map_or(UNNUMBERED, |(_, no)| *no)
    }
    /// The column with ledger number `no`, if the table still has it.
    fn name_of(&self, no: u32) -> Option<&str> {
        self.numbers.iter().find(|(_, x)| *x == no).map(|(n, _)| n.as_str())
    }
}

/// A column's type affinity, by SQLite's rules (section 3.1 of "Datatypes In
/// SQLite"), as far as keys need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Other,
}

impl Affinity {
    fn of(decl_type: &str) -> Affinity {
        let t = decl_type.to_ascii_uppercase();
        if t.contains("INT") {
            Affinity::Integer
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Affinity::Text
        } else {
            Affinity::Other
        }
    }

    /// The key value as the column stores it, so that one row is one ledger
    /// key: SQLite stores the integer 5 as the text '5' in a TEXT column, and
    /// the text '5' as the integer 5 in an INTEGER one.
    fn key_value(self, v: &Value) -> Value {
        match (self, v) {
            (Affinity::Text, Value::Integer(i)) => Value::Text(i.to_string()),
            (Affinity::Integer, Value::Text(s)) => match s.parse::<i64>() {
                Ok(i) if i.to_string() == *s => Value::Integer(i),
                _ => v.clone(),
            },
            _ => v.clone(),
        }
    }
}

/// Loads the target's tables (never ferry's or SQLite's own).
pub fn load_tables(conn: &Connection) -> rusqlite::Result<HashMap<String, TableInfo>> {
    let mut out = HashMap::new();
    for t in schema::tables(conn)? {
        let mut key: Vec<String> = t.pk_columns().iter().map(|c| c.name.clone()).collect();
        let mut key_affinity: Vec<Affinity> = t.pk_columns().iter().map(|c| Affinity::of(&c.decl_type)).collect();
        if key.is_empty() {
            key.push("rowid".into());
            key_affinity.push(Affinity::Integer);
        }
        let key_where = key
            .iter()
            .enumerate()
            .map(
                |(i, k)| {
                    if k == "rowid" {
                        format!("rowid = ?{}", i + 1)
                    } else {
                        format!("{} = ?{}", quote(k), i + 1)
                    }
                },
            )
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut defaults = HashMap::new();
        let mut stmt = conn.prepare("SELECT name, dflt_value FROM pragma_table_info(?1)")?;
        let rows: Vec<(String, Option<String>)> =
            stmt.query_map([&t.name], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (col, dflt) in rows {
            // The default expression is the local schema's own text; a
            // non-constant one (CURRENT_TIMESTAMP) would break convergence and
            // falls back to NULL.
            let v = match dflt {
                Some(expr) if !expr.to_ascii_uppercase().contains("CURRENT") => conn
                    .query_row(&format!("SELECT {expr}"), [], |r| r.get::<_, rusqlite::types::Value>(0))
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            };
            defaults.insert(col, v);
        }
        let delete_sql = format!("DELETE FROM {} WHERE {key_where}", quote(&t.name));
        out.insert(
            t.name.clone(),
            TableInfo {
                delete_sql,
                quoted: quote(&t.name),
                name: t.name.clone(),
                key,
                key_affinity,
                columns: t.columns.iter().map(|c| c.name.clone()).collect(),
                defaults,
                key_where,
                numbers: Vec::new(),
            },
        );
    }
    Ok(out)
}

/// Counts of what happened to entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Entries applied (including those whose writes all lost).
    pub applied: u64,
    /// Entries skipped because they were applied before.
    pub skipped: u64,
    /// Updates parked for a row that has not arrived.
    pub parked: u64,
    /// Conflicts recorded.
    pub conflicts: u64,
    /// Entries the database refused, kept in `_ferry_quarantine`.
    pub quarantined: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.applied += o.applied;
        self.skipped += o.skipped;
        self.parked += o.parked;
        self.conflicts += o.conflicts;
        self.quarantined += o.quarantined;
    }
}

/// The state of one apply run over one open transaction.
pub struct Engine<'c> {
    pub conn: &'c Connection,
    pub tables: HashMap<String, TableInfo>,
    /// Local origin id → node id text.
    pub origin_names: HashMap<u32, String>,
    pub counts: Counts,
    /// The node id of the segment being applied.
    pub current_origin: String,
    now: String,
    sql: SqlTexts<'c>,
    rows: ledger::Rows<'c>,
}

/// What a cached SQL text does (see [`SqlTexts`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SqlKind {
    Insert,
    Update,
}

/// Statements built once per table and column list: building their text
/// per entry (quoting, joining) cost more than running some of them.
#[derive(Default)]
struct SqlTexts<'c>(RefCell<HashMap<u64, Vec<SqlText<'c>>>>);

/// A prepared statement: kind, table, column list, statement. Held here
/// rather than in rusqlite's statement cache, whose lookups by SQL text
/// cost a tenth of the apply thread's time.
type SqlText<'c> = (SqlKind, String, Vec<String>, Statement<'c>);

/// At most this many texts are kept (a bundle could use many column lists).
const SQL_TEXTS_MAX: usize = 1024;

impl<'c> SqlTexts<'c> {
    /// Runs `f` on the statement for `kind`, `table` and `cols`, prepared
    /// from `build()` on first use.
    #[allow(clippy::too_many_arguments)]
    fn with<'a, T>(
        &self,
        conn: &'c Connection,
        kind: SqlKind,
        table: &str,
        cols: impl Iterator<Item = &'a str> + Clone,
        build: impl FnOnce() -> String,
        f: impl FnOnce(&mut Statement<'c>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut h = std::hash::DefaultHasher::new();
        (kind, table).hash(&mut h);
        for c in cols.clone() {
            c.hash(&mut h);
        }
        let hash = h.finish();
        let mut map = self.0.borrow_mut();
        if let Some(bucket) = map.get_mut(&hash) {
            if let Some(hit) = bucket
                .iter_mut()
                .find(|(k, t, cs, _)| *k == kind && t == table && cs.iter().map(String::as_str).eq(cols.clone()))
            {
                return f(&mut hit.3);
            }
        }
        if map.values().map(Vec::len).sum::<usize>() >= SQL_TEXTS_MAX {
            map.clear();
        }
        let mut stmt = conn.prepare(&build())?;
        let out = f(&mut stmt);
        map.entry(hash).or_default().push((kind, table.to_owned(), cols.map(str::to_owned).collect(), stmt));
        out
    }
}

/// One entry being applied, with its version.
struct Ctx<'e> {
    e: &'e Entry,
    line: &'e [u8],
    v: Ver,
    key_vals: Vec<Value>,
    /// The key as the ledger stores it (see [`ledger_key`]).
    lkey: Value,
}

impl Ctx<'_> {
    /// The key as text for people (a JSON array of the key values).
    fn key(&self) -> String {
        key_text(&self.key_vals)
    }
}

/// The key values as a JSON array (how conflicts show a key).
pub fn key_text(key_vals: &[Value]) -> String {
    serde_json::to_string(key_vals).unwrap_or_default()
}

/// The key as the ledger stores it: the integer itself for a single integer
/// key (compact and fast to compare), else the JSON array text.
pub fn ledger_key(key_vals: &[Value]) -> Value {
    match key_vals {
        [Value::Integer(i)] => Value::Integer(*i),
        _ => Value::Text(key_text(key_vals)),
    }
}

/// Whether a physical write was refused by a constraint.
enum Written {
    Done(usize),
    Refused(String),
}

fn written(r: rusqlite::Result<usize>) -> Result<Written, Fail> {
    match r {
        Ok(n) => Ok(Written::Done(n)),
        Err(rusqlite::Error::SqliteFailure(e, msg))
            if matches!(e.code, ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch) =>
        {
            Ok(Written::Refused(msg.unwrap_or_else(|| e.to_string())))
        }
        Err(e) => Err(Fail::Db(e)),
    }
}

impl<'c> Engine<'c> {
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Engine<'c>> {
        let mut tables = load_tables(conn)?;
        let mut numbers = ledger::column_numbers(conn)?;
        for t in tables.values_mut() {
            t.numbers = numbers.remove(&t.name).unwrap_or_default();
            // A column the table no longer has is gone with its versions
            // (and must not be read back when a delete parks survivors).
            let columns = &t.columns;
            t.numbers.retain(|(n, _)| columns.contains(n));
            if let Some(c) = t.columns.iter().find(|c| t.no(c) == UNNUMBERED) {
                return Err(rusqlite::Error::InvalidColumnName(format!(
                    "{}.{c} has no number in _ferry_columns (the ledger was not prepared)",
                    t.name
                )));
            }
        }
        let mut origin_names = HashMap::new();
        let mut stmt = conn.prepare("SELECT id, node FROM _ferry_origins")?;
        for r in stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))? {
            let (id, node) = r?;
            origin_names.insert(id, node);
        }
        Ok(Engine {
            conn,
            tables,
            origin_names,
            counts: Counts::default(),
            current_origin: String::new(),
            now: crate::journal::Timestamp::now().to_rfc3339(),
            sql: SqlTexts::default(),
            rows: ledger::Rows::new(conn)?,
        })
    }

    /// Starts savepoint `name`. The row ledger's cached groups are written
    /// first, so a rollback to it undoes exactly what came after.
    pub fn savepoint(&self, name: &str) -> rusqlite::Result<()> {
        self.rows.flush()?;
        self.conn.execute_batch(&format!("SAVEPOINT {name}"))
    }

    /// Ends savepoint `name`, keeping what it holds.
    pub fn release(&self, name: &str) -> rusqlite::Result<()> {
        self.rows.flush()?;
        self.conn.execute_batch(&format!("RELEASE {name}"))
    }

    /// Undoes everything since savepoint `name` (which stays open), what the
    /// row ledger holds in memory with it.
    pub fn rollback_to(&self, name: &str) -> rusqlite::Result<()> {
        self.rows.discard();
        self.conn.execute_batch(&format!("ROLLBACK TO {name}"))
    }

    /// Writes what the engine still holds in memory; the last step before commit.
    pub fn finish(self) -> rusqlite::Result<()> {
        self.rows.flush()
    }

    /// Re-reads the origin table (after a savepoint rollback undid registrations).
    pub fn reload_origins(&mut self) -> rusqlite::Result<()> {
        self.origin_names.clear();
        let mut stmt = self.conn.prepare("SELECT id, node FROM _ferry_origins")?;
        for r in stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))? {
            let (id, node) = r?;
            self.origin_names.insert(id, node);
        }
        Ok(())
    }

    /// Moves a row whose parent is missing out of its table: the row goes to
    /// `_ferry_quarantine` (kind `foreign_key`) with a conflict record, and
    /// the ledger marks it absent. Returns false when the table is not one
    /// ferry knows.
    pub fn quarantine_row_for_foreign_key(&mut self, table: &str, rowid: i64, parent: &str) -> Result<bool, Fail> {
        let Some(t) = self.tables.get(table) else { return Ok(false) };
        let names: Vec<String> = t.columns.iter().map(|c| quote(c)).collect();
        let sql = format!("SELECT {} FROM {} WHERE rowid = ?1", names.join(", "), t.quoted);
        let values: Vec<Value> = self.conn.query_row(&sql, [rowid], |r| {
            (0..names.len()).map(|i| r.get::<_, rusqlite::types::Value>(i).map(Value::from)).collect()
        })?;
        let row = Row(t.columns.iter().cloned().zip(values).collect());
        let key_vals: Vec<Value> = t
            .key
            .iter()
            .map(|k| if k == "rowid" { Value::Integer(rowid) } else { row.get(k).cloned().unwrap_or(Value::Null) })
            .collect();
        let key = key_text(&key_vals);
        let lkey = ledger_key(&key_vals);
        let tname = t.name.clone();
        let quoted = t.quoted.clone();
        let row_json = serde_json::to_string(&row).unwrap_or_default();
        let mut st = self.rows.load_row(&tname, &lkey)?.unwrap_or_default();
        let detail = format!("row references a missing row in {parent:?}; moved to quarantine");
        self.conflict_raw(FOREIGN_KEY, &tname, &key, None, st.ins, Some(row_json.clone()), None, &detail)?;
        let origin = st.ins.map(|v| self.name(v.origin).to_owned()).unwrap_or_default();
        self.conn
            .prepare_cached(
                "INSERT INTO _ferry_quarantine (origin, seq, kind, tbl, reason, entry, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![origin, st.ins.map(|v| v.seq as i64), FOREIGN_KEY, tname, detail, row_json, self.now])?;
        self.counts.quarantined += 1;
        self.conn.execute(&format!("DELETE FROM {quoted} WHERE rowid = ?1"), [rowid])?;
        st.present = false;
        st.cols.clear();
        self.rows.save_row(&tname, &lkey, &st)?;
        Ok(true)
    }

    /// The local id of `node`, registering it on first sight.
    pub fn origin_id(&mut self, node: &str) -> rusqlite::Result<u32> {
        if let Some((id, _)) = self.origin_names.iter().find(|(_, n)| n.as_str() == node) {
            return Ok(*id);
        }
        self.conn.execute("INSERT OR IGNORE INTO _ferry_origins (node) VALUES (?1)", [node])?;
        let id: u32 = self.conn.query_row("SELECT id FROM _ferry_origins WHERE node = ?1", [node], |r| r.get(0))?;
        self.origin_names.insert(id, node.to_owned());
        Ok(id)
    }

    fn name(&self, origin: u32) -> &str {
        self.origin_names.get(&origin).map_or("?", String::as_str)
    }

    /// The total order of versions: timestamp, then origin node id, then seq.
    fn cmp(&self, a: Ver, b: Ver) -> Ordering {
        a.ts.cmp(&b.ts).then_with(|| self.name(a.origin).cmp(self.name(b.origin))).then(a.seq.cmp(&b.seq))
    }

    fn newer(&self, a: Ver, b: Option<Ver>) -> bool {
        b.map_or(true, |b| self.cmp(a, b) == Ordering::Greater)
    }

    /// Checks an entry's table and columns against the target schema.
    pub fn check(&self, origin: &str, e: &Entry) -> Result<(), Fail> {
        let refuse = |what: String| {
            Fail::Refused(format!(
                "origin {origin} seq {}: {what} (the target's schema differs; migrate it first)",
                e.seq
            ))
        };
        let Some(t) = self.tables.get(&e.table) else {
            return Err(refuse(format!("table {:?} does not exist in the target", e.table)));
        };
        for c in e.pk.columns().chain(e.fields.iter().flat_map(|f| f.columns())) {
            if !t.has_column(c) {
                return Err(refuse(format!("table {:?} has no column {c:?}", e.table)));
            }
        }
        Ok(())
    }

    /// Applies one checked entry from `origin`.
    pub fn apply(&mut self, origin: u32, e: &Entry, line: &[u8]) -> Result<(), Fail> {
        let v = Ver { ts: e.ts.0, origin, seq: e.seq };
        let t = self.tables.get(&e.table).ok_or_else(|| Fail::Refused(format!("unknown table {:?}", e.table)))?;
        let mut key_vals = Vec::with_capacity(t.key.len());
        for (k, affinity) in t.key.iter().zip(&t.key_affinity) {
            match e.pk.get(k).or_else(|| e.fields.as_ref().and_then(|f| f.get(k))) {
                Some(Value::Null) | None => {
                    let reason = format!("no value for key column {k:?}");
                    return self.quarantine(e, line, CONSTRAINT, &reason);
                }
                Some(val) => key_vals.push(affinity.key_value(val)),
            }
        }
        let lkey = ledger_key(&key_vals);
        let cx = Ctx { e, line, v, key_vals, lkey };
        self.counts.applied += 1;
        match e.op {
            Op::Insert => self.insert(&cx),
            Op::Update => self.update(&cx),
            Op::Delete => self.delete(&cx),
        }
    }

    fn table(&self, name: &str) -> &TableInfo {
        // Entries are checked before they are applied.
        &self.tables[name]
    }

    /// The column versions of a row this insert creates.
    fn fresh_cols(&self, cx: &Ctx) -> ledger::Cols {
        let t = self.table(&cx.e.table);
        self.fields(cx).iter().map(|(c, _)| (t.no(c), cx.v)).collect()
    }

    /// Non-key fields of an entry.
    fn fields<'e>(&self, cx: &Ctx<'e>) -> Vec<&'e (String, Value)> {
        let t = self.table(&cx.e.table);
        cx.e.fields.iter().flat_map(|f| f.0.iter()).filter(|(c, _)| !t.is_key(c)).collect()
    }

    fn insert(&mut self, cx: &Ctx) -> Result<(), Fail> {
        let tname = cx.e.table.as_str();
        // Fast path: a key the ledger has never seen (most inserts). Claim it
        // in the ledger first; if it was there after all, take the full path.
        let fresh = RowState { present: true, ins: Some(cx.v), del: None, cols: self.fresh_cols(cx), parked: false };
        if self.rows.insert_new_row(tname, &cx.lkey, &fresh)? {
            return match self.physical_insert(cx)? {
                Written::Done(1) => Ok(()),
                Written::Done(_) => {
                    let st = RowState { present: true, ..RowState::default() };
                    self.insert_into_present(cx, st, true)
                }
                Written::Refused(m) => {
                    self.rows.forget_row(tname, &cx.lkey)?;
                    self.quarantine(cx.e, cx.line, CONSTRAINT, &m)
                }
            };
        }
        match self.rows.load_row(tname, &cx.lkey)? {
            Some(st) if st.present => self.insert_into_present(cx, st, false),
            Some(mut st) => {
                if let Some(d) = st.del.filter(|d| self.cmp(cx.v, *d) == Ordering::Less) {
                    // Older than the tombstone: the row was deleted after this insert.
                    self.lost_to_delete(cx, d, None, "insert older than a delete by another origin")?;
                    if self.newer(cx.v, st.ins) {
                        st.ins = Some(cx.v);
                        self.rows.save_row(tname, &cx.lkey, &st)?;
                    }
                    return Ok(());
                }
                match self.physical_insert(cx)? {
                    Written::Done(1) => {
                        st.present = true;
                        if self.newer(cx.v, st.ins) {
                            st.ins = Some(cx.v);
                        }
                        st.cols = self.fresh_cols(cx);
                        if st.parked {
                            self.replay_parked(tname, &cx.lkey, &cx.key_vals, &mut st)?;
                        }
                        self.rows.save_row(tname, &cx.lkey, &st)?;
                        Ok(())
                    }
                    Written::Done(_) => {
                        st.present = true;
                        self.insert_into_present(cx, st, true)
                    }
                    Written::Refused(m) => self.quarantine(cx.e, cx.line, CONSTRAINT, &m),
                }
            }
            None => match self.physical_insert(cx)? {
                Written::Done(1) => {
                    let st = RowState {
                        present: true,
                        ins: Some(cx.v),
                        del: None,
                        cols: self.fresh_cols(cx),
                        parked: false,
                    };
                    self.rows.save_row(tname, &cx.lkey, &st)?;
                    Ok(())
                }
                Written::Done(_) => {
                    let st = RowState { present: true, ..RowState::default() };
                    self.insert_into_present(cx, st, true)
                }
                Written::Refused(m) => self.quarantine(cx.e, cx.line, CONSTRAINT, &m),
            },
        }
    }

    /// An insert for a key that is already there: a `row_exists` conflict
    /// when the row came from another origin (or from outside ferry); the
    /// fields then merge by last-writer-wins like an update's.
    fn insert_into_present(&mut self, cx: &Ctx, mut st: RowState, local: bool) -> Result<(), Fail> {
        if let Some(d) = st.del.filter(|d| self.cmp(cx.v, *d) == Ordering::Less) {
            self.lost_to_delete(cx, d, None, "insert older than a delete by another origin")?;
            return Ok(());
        }
        let creator = st.ins;
        if local || creator.is_some_and(|c| c.origin != cx.v.origin) {
            let detail = if local {
                "insert of a key that already exists in the target (not written by ferry)"
            } else {
                "insert of a key that another origin inserted too (integer key collision?)"
            };
            let value = serde_json::to_string(&cx.e.fields).ok();
            self.conflict(ROW_EXISTS, cx, None, value, creator, detail)?;
        }
        if self.newer(cx.v, st.ins) {
            st.ins = Some(cx.v);
        }
        let fields = self.fields(cx);
        match self.write_fields(cx, &mut st, &fields, false)? {
            Some(reason) => self.quarantine(cx.e, cx.line, CONSTRAINT, &reason),
            None => Ok(self.rows.save_row(&cx.e.table, &cx.lkey, &st)?),
        }
    }

    fn update(&mut self, cx: &Ctx) -> Result<(), Fail> {
        let tname = cx.e.table.as_str();
        let fields = self.fields(cx);
        match self.rows.load_row(tname, &cx.lkey)? {
            None => {
                // Never seen: a row from outside ferry, or one still to come.
                let mut st = RowState::default();
                let probe = self.physical_update(cx, &fields)?;
                match probe {
                    Written::Done(0) => {
                        self.park(cx, &fields, &mut st)?;
                    }
                    Written::Done(_) => {
                        st.present = true;
                        let t = self.table(tname);
                        for (c, _) in &fields {
                            st.set_col(t.no(c), cx.v);
                        }
                    }
                    Written::Refused(m) => return self.quarantine(cx.e, cx.line, CONSTRAINT, &m),
                }
                self.rows.save_row(tname, &cx.lkey, &st)?;
                Ok(())
            }
            Some(mut st) => {
                if let Some(d) = st.del.filter(|d| self.cmp(cx.v, *d) == Ordering::Less) {
                    self.lost_to_delete(
                        cx,
                        d,
                        serde_json::to_string(&cx.e.fields).ok(),
                        "update older than a delete by another origin",
                    )?;
                    return Ok(());
                }
                if !st.present {
                    if let Some(d) = st.del {
                        let value = serde_json::to_string(&cx.e.fields).ok();
                        let why = "update of a row another origin deleted; parked until the row is inserted again";
                        self.lost_to_delete(cx, d, value, why)?;
                    }
                    self.park(cx, &fields, &mut st)?;
                    self.rows.save_row(tname, &cx.lkey, &st)?;
                    return Ok(());
                }
                match self.write_fields(cx, &mut st, &fields, true)? {
                    Some(reason) => self.quarantine(cx.e, cx.line, CONSTRAINT, &reason),
                    None => Ok(self.rows.save_row(tname, &cx.lkey, &st)?),
                }
            }
        }
    }

    fn delete(&mut self, cx: &Ctx) -> Result<(), Fail> {
        let conn = self.conn;
        let tname = cx.e.table.as_str();
        let t = self.table(tname);
        let mut st = match self.rows.load_row(tname, &cx.lkey)? {
            Some(st) => st,
            None => {
                // A row from outside ferry, or one not yet arrived: tombstone either way.
                conn.prepare_cached(&t.delete_sql)?.execute(params_from_iter(cx.key_vals.iter()))?;
                let st = RowState { del: Some(cx.v), ..RowState::default() };
                self.rows.save_row(tname, &cx.lkey, &st)?;
                return Ok(());
            }
        };
        if !self.newer(cx.v, st.del) {
            return Ok(()); // an older delete than the tombstone: nothing to do
        }
        st.del = Some(cx.v);
        if st.present {
            if st.ins.map_or(true, |i| self.cmp(i, cx.v) == Ordering::Less) {
                // The delete ends the row's current life. Writes newer than
                // the delete survive as parked updates (a later insert revives them).
                let survivors = self.columns_versioned(tname, &st, Ordering::Greater, cx.v);
                if !survivors.is_empty() {
                    let values = self.read_columns(tname, &cx.key_vals, survivors.iter().map(|(c, _)| c.as_str()))?;
                    let mut by_ver: Vec<(Ver, Vec<(String, Value)>)> = Vec::new();
                    for ((c, v), val) in survivors.iter().zip(values) {
                        match by_ver.iter_mut().find(|(bv, _)| bv == v) {
                            Some((_, f)) => f.push((c.clone(), val)),
                            None => by_ver.push((*v, vec![(c.clone(), val)])),
                        }
                    }
                    for (v, fields) in by_ver {
                        if v.origin != cx.v.origin {
                            let value = serde_json::to_string(&Row(fields.clone())).ok();
                            self.conflict_raw(
                                ROW_MISSING,
                                tname,
                                &cx.key(),
                                None,
                                Some(v),
                                value,
                                Some(cx.v),
                                "update newer than a delete by another origin; parked until the row is inserted again",
                            )?;
                        }
                        self.park_fields(tname, &cx.lkey, v, &fields)?;
                    }
                    st.parked = true;
                }
                let t = self.table(tname);
                conn.prepare_cached(&t.delete_sql)?.execute(params_from_iter(cx.key_vals.iter()))?;
                st.present = false;
                st.cols.clear();
            } else {
                // The row was inserted again after this delete: only values
                // written before the delete are gone (back to the default).
                let stale = self.columns_versioned(tname, &st, Ordering::Less, cx.v);
                let t = self.table(tname);
                if !stale.is_empty() {
                    let n = cx.key_vals.len();
                    let sets: Vec<String> =
                        stale.iter().enumerate().map(|(i, (c, _))| format!("{} = ?{}", quote(c), n + i + 1)).collect();
                    let sql = format!("UPDATE {} SET {} WHERE {}", t.quoted, sets.join(", "), t.key_where);
                    let defaults: Vec<Value> =
                        stale.iter().map(|(c, _)| t.defaults.get(c).cloned().unwrap_or(Value::Null)).collect();
                    let r =
                        conn.prepare_cached(&sql)?.execute(params_from_iter(cx.key_vals.iter().chain(defaults.iter())));
                    if let Written::Refused(m) = written(r)? {
                        return self.quarantine(cx.e, cx.line, CONSTRAINT, &m);
                    }
                    st.cols.retain(|(_, v)| self.cmp(*v, cx.v) != Ordering::Less);
                }
            }
        } else if st.parked {
            // Parked updates older than the tombstone can never apply.
            let mut stmt =
                conn.prepare_cached("SELECT ts, origin, seq, fields FROM _ferry_parked WHERE tbl = ?1 AND key = ?2")?;
            let parked: Vec<(i64, String, i64, String)> = stmt
                .query_map(params![tname, cx.lkey], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let mut left = 0;
            for (ts, origin, seq, fields) in parked {
                let oid = self.origin_id(&origin)?;
                let v = Ver { ts, origin: oid, seq: seq as u64 };
                if self.cmp(v, cx.v) == Ordering::Less {
                    if oid != cx.v.origin {
                        self.conflict_raw(
                            ROW_MISSING,
                            tname,
                            &cx.key(),
                            None,
                            Some(v),
                            Some(fields),
                            Some(cx.v),
                            "parked update older than a delete by another origin",
                        )?;
                    }
                    conn.prepare_cached(
                        "DELETE FROM _ferry_parked WHERE tbl = ?1 AND key = ?2 AND ts = ?3 AND origin = ?4 AND seq = ?5",
                    )?
                    .execute(params![tname, cx.lkey, ts, origin, seq])?;
                } else {
                    left += 1;
                }
            }
            st.parked = left > 0;
        }
        self.rows.save_row(tname, &cx.lkey, &st)?;
        Ok(())
    }

    /// The columns of `st` (by name, with their versions) whose version
    /// compares to `v` as `ord`. A column the table no longer has is gone
    /// with its values and is left out.
    fn columns_versioned(&self, tname: &str, st: &RowState, ord: Ordering, v: Ver) -> Vec<(String, Ver)> {
        let t = self.table(tname);
        st.cols
            .iter()
            .filter(|(_, cv)| self.cmp(*cv, v) == ord)
            .filter_map(|(no, cv)| Some((t.name_of(*no)?.to_owned(), *cv)))
            .collect()
    }

    /// Writes the fields that win by last-writer-wins. Returns the reason
    /// when the database refused the write.
    fn write_fields(
        &mut self,
        cx: &Ctx,
        st: &mut RowState,
        fields: &[&(String, Value)],
        record: bool,
    ) -> Result<Option<String>, Fail> {
        let mut winners: Vec<&(String, Value)> = Vec::with_capacity(fields.len());
        let mut won: smallvec::SmallVec<[u32; 8]> = smallvec::SmallVec::new();
        let numbers: smallvec::SmallVec<[u32; 8]> = {
            let t = self.table(&cx.e.table);
            fields.iter().map(|f| t.no(&f.0)).collect()
        };
        for (f, &no) in fields.iter().zip(&numbers) {
            let (c, val) = (&f.0, &f.1);
            match st.col(no) {
                None => {
                    winners.push(f);
                    won.push(no);
                }
                Some(cur) => match self.cmp(cx.v, cur) {
                    Ordering::Greater => {
                        if record && cur.origin != cx.v.origin {
                            let old = self.read_columns(&cx.e.table, &cx.key_vals, std::iter::once(c.as_str()))?;
                            let old = old.first().and_then(|v| serde_json::to_string(v).ok());
                            self.conflict_raw(
                                OVERWRITTEN,
                                &cx.e.table,
                                &cx.key(),
                                Some(c),
                                Some(cur),
                                old,
                                Some(cx.v),
                                "value replaced by a later write from another origin",
                            )?;
                        }
                        winners.push(f);
                        won.push(no);
                    }
                    Ordering::Less => {
                        if record && cur.origin != cx.v.origin {
                            let value = serde_json::to_string(val).ok();
                            self.conflict_raw(
                                OVERWRITTEN,
                                &cx.e.table,
                                &cx.key(),
                                Some(c),
                                Some(cx.v),
                                value,
                                Some(cur),
                                "value older than a write from another origin already applied",
                            )?;
                        }
                    }
                    Ordering::Equal => {}
                },
            }
        }
        if winners.is_empty() {
            return Ok(None);
        }
        match self.physical_update(cx, &winners)? {
            Written::Refused(m) => Ok(Some(m)),
            Written::Done(_) => {
                for no in won {
                    st.set_col(no, cx.v);
                }
                Ok(None)
            }
        }
    }

    fn physical_insert(&self, cx: &Ctx) -> Result<Written, Fail> {
        let t = self.table(&cx.e.table);
        let fields = self.fields(cx);
        let cols = t.key.iter().map(String::as_str).chain(fields.iter().map(|f| f.0.as_str()));
        let vals = cx.key_vals.iter().chain(fields.iter().map(|f| &f.1));
        let names_of = cols.clone();
        let build = || {
            let names: Vec<String> = names_of.map(|c| if c == "rowid" { "rowid".into() } else { quote(c) }).collect();
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                t.quoted,
                names.join(", "),
                marks.join(", ")
            )
        };
        let r = self
            .sql
            .with(self.conn, SqlKind::Insert, &t.name, cols.clone(), build, |s| s.execute(params_from_iter(vals)));
        written(r)
    }

    fn physical_update(&self, cx: &Ctx, fields: &[&(String, Value)]) -> Result<Written, Fail> {
        let t = self.table(&cx.e.table);
        if fields.is_empty() {
            // Only key columns: whether the row exists is all there is to learn.
            let sql = format!("SELECT count(*) FROM {} WHERE {}", t.quoted, t.key_where);
            let n: i64 =
                self.conn.prepare_cached(&sql)?.query_row(params_from_iter(cx.key_vals.iter()), |r| r.get(0))?;
            return Ok(Written::Done(n as usize));
        }
        let n = cx.key_vals.len();
        let build = || {
            let sets: Vec<String> =
                fields.iter().enumerate().map(|(i, (c, _))| format!("{} = ?{}", quote(c), n + i + 1)).collect();
            format!("UPDATE {} SET {} WHERE {}", t.quoted, sets.join(", "), t.key_where)
        };
        let vals = cx.key_vals.iter().chain(fields.iter().map(|(_, v)| v));
        let r = self.sql.with(self.conn, SqlKind::Update, &t.name, fields.iter().map(|f| f.0.as_str()), build, |s| {
            s.execute(params_from_iter(vals))
        });
        written(r)
    }

    fn read_columns<'a>(
        &self,
        tname: &str,
        key_vals: &[Value],
        cols: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<Value>, Fail> {
        let t = self.table(tname);
        let names: Vec<String> = cols.map(quote).collect();
        let sql = format!("SELECT {} FROM {} WHERE {}", names.join(", "), t.quoted, t.key_where);
        let n = names.len();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        // No row (the ledger believed it present): there is nothing to read.
        let out = stmt
            .query_row(params_from_iter(key_vals.iter()), |r| {
                (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i).map(Value::from)).collect::<Result<Vec<_>, _>>()
            })
            .optional()?;
        Ok(out.unwrap_or_default())
    }

    fn park(&mut self, cx: &Ctx, fields: &[&(String, Value)], st: &mut RowState) -> Result<(), Fail> {
        let fields: Vec<(String, Value)> = fields.iter().map(|f| (*f).clone()).collect();
        self.park_fields(&cx.e.table, &cx.lkey, cx.v, &fields)?;
        st.parked = true;
        self.counts.parked += 1;
        Ok(())
    }

    /// Parks fields written at version `v` (merging with what is parked there).
    fn park_fields(&mut self, tname: &str, key: &Value, v: Ver, fields: &[(String, Value)]) -> Result<(), Fail> {
        let origin = self.name(v.origin).to_owned();
        let existing: Option<String> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT fields FROM _ferry_parked WHERE tbl = ?1 AND key = ?2 AND ts = ?3 AND origin = ?4 AND seq = ?5",
            )?;
            let mut rows = stmt.query(params![tname, key, v.ts, origin, v.seq as i64])?;
            match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            }
        };
        let mut row: Row = existing.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        for (c, val) in fields {
            match row.0.iter_mut().find(|(x, _)| x == c) {
                Some(slot) => slot.1 = val.clone(),
                None => row.0.push((c.clone(), val.clone())),
            }
        }
        let text = serde_json::to_string(&row).unwrap_or_default();
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO _ferry_parked VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![tname, key, v.ts, origin, v.seq as i64, text])?;
        Ok(())
    }

    /// Replays the updates parked for a row that has just become present.
    fn replay_parked(&mut self, tname: &str, lkey: &Value, key_vals: &[Value], st: &mut RowState) -> Result<(), Fail> {
        let parked: Vec<(i64, String, i64, String)> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT ts, origin, seq, fields FROM _ferry_parked WHERE tbl = ?1 AND key = ?2 ORDER BY ts, origin, seq",
            )?;
            let rows = stmt.query_map(params![tname, lkey], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        self.conn
            .prepare_cached("DELETE FROM _ferry_parked WHERE tbl = ?1 AND key = ?2")?
            .execute(params![tname, lkey])?;
        st.parked = false;
        for (ts, origin, seq, fields) in parked {
            let oid = self.origin_id(&origin)?;
            let row: Row = serde_json::from_str(&fields).unwrap_or_default();
            let entry = Entry {
                seq: seq as u64,
                ts: crate::journal::Timestamp(ts),
                op: Op::Update,
                table: tname.to_owned(),
                pk: Row::default(),
                fields: Some(row),
            };
            let line = entry.to_line();
            let cx = Ctx {
                e: &entry,
                line: &line,
                v: Ver { ts, origin: oid, seq: seq as u64 },
                key_vals: key_vals.to_vec(),
                lkey: lkey.clone(),
            };
            let fields = self.fields(&cx);
            if let Some(reason) = self.write_fields(&cx, st, &fields, true)? {
                let e = Entry { pk: Row::default(), ..entry.clone() };
                self.quarantine_as(&origin, &e, &line, CONSTRAINT, &reason)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn conflict_raw(
        &mut self,
        kind: &str,
        tname: &str,
        key: &str,
        col: Option<&str>,
        loser: Option<Ver>,
        loser_value: Option<String>,
        winner: Option<Ver>,
        detail: &str,
    ) -> Result<(), Fail> {
        let lo = loser.map(|v| self.name(v.origin).to_owned());
        let wo = winner.map(|v| self.name(v.origin).to_owned());
        self.conn
            .prepare_cached(
                "INSERT INTO _ferry_conflicts (kind, tbl, key, col, loser_origin, loser_seq, loser_ts, loser_value,
                 winner_origin, winner_seq, winner_ts, detail, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                kind,
                tname,
                key,
                col,
                lo,
                loser.map(|v| v.seq as i64),
                loser.map(|v| v.ts),
                loser_value,
                wo,
                winner.map(|v| v.seq as i64),
                winner.map(|v| v.ts),
                detail,
                self.now
            ])?;
        self.counts.conflicts += 1;
        Ok(())
    }

    fn conflict(
        &mut self,
        kind: &str,
        cx: &Ctx,
        col: Option<&str>,
        value: Option<String>,
        winner: Option<Ver>,
        detail: &str,
    ) -> Result<(), Fail> {
        self.conflict_raw(kind, &cx.e.table, &cx.key(), col, Some(cx.v), value, winner, detail)
    }

    /// Records that this entry lost to another origin's delete `d` (a row
    /// missing conflict); a delete by the entry's own origin is no conflict.
    fn lost_to_delete(&mut self, cx: &Ctx, d: Ver, value: Option<String>, detail: &str) -> Result<(), Fail> {
        if d.origin == cx.v.origin {
            return Ok(());
        }
        self.conflict(ROW_MISSING, cx, None, value, Some(d), detail)
    }

    fn quarantine(&mut self, e: &Entry, line: &[u8], kind: &str, reason: &str) -> Result<(), Fail> {
        let origin = self.current_origin.clone();
        self.quarantine_as(&origin, e, line, kind, reason)
    }

    pub fn quarantine_as(
        &mut self,
        origin: &str,
        e: &Entry,
        line: &[u8],
        kind: &str,
        reason: &str,
    ) -> Result<(), Fail> {
        self.conn
            .prepare_cached(
                "INSERT INTO _ferry_quarantine (origin, seq, kind, tbl, reason, entry, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![origin, e.seq as i64, kind, e.table, reason, String::from_utf8_lossy(line), self.now])?;
        self.counts.quarantined += 1;
        Ok(())
    }
}
