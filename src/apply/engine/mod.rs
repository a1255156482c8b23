//! Carrying merge decisions out: for each entry, ask [`super::merge`] what
//! happens given the ledger's state of its row, then run the statements
//! that do it, record conflicts, park, hold or quarantine, and count the
//! entry's one outcome. No rule is decided here: where the database answers
//! something the merge needs to know (the row was there after all, a
//! constraint refused the write), the engine asks the merge module again.
//!
//! Submodules: [`table`] (what a target table looks like), [`physical`]
//! (the statements on the app's tables), [`held`] (rows kept out of their
//! table by a constraint, and settling them at the end of a run), [`local`]
//! (a tracked target's own edits taking part in the merge).

mod held;
mod local;
mod physical;
mod table;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use smallvec::SmallVec;

use super::ledger::{self, RowState, Ver};
use super::merge::{self, Conflict, ConflictKind, Decision, Incoming, Lost, Outcome, Write};
use super::session::{self, DbError, ErrorKind, Session};
use crate::args;
use crate::journal::{Entry, Op, Row};
use crate::value::Value;
pub use physical::{Refusal, Written};
pub use table::{load_server_tables, load_tables, TableInfo};

/// Conflict and quarantine kinds not decided by the merge (see `docs/APPLY.md`).
pub const CONSTRAINT: &str = "constraint";
pub const FOREIGN_KEY: &str = "foreign_key";
pub const UNIQUE: &str = "unique";
pub const KEY: &str = "key";
pub const FORK: &str = "fork";
pub const SCHEMA: &str = "schema";

/// A failure while applying: the bundle is refused (bad input), or the run
/// stops (the database failed).
#[derive(Debug)]
pub enum Fail {
    Refused(String),
    /// Refuses the segment being applied (the bundle's others still apply
    /// when it has its own savepoint; else the bundle is refused).
    Segment(String),
    Db(DbError),
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Db(e)
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Db(e.into())
    }
}

/// Whether a database error means the run cannot go on (the disk, the
/// file, memory, a lock), rather than that one bundle's data cannot be
/// written (which refuses that bundle only).
pub fn is_fatal(e: &DbError) -> bool {
    e.kind() == ErrorKind::Fatal
}

/// What happened to entries: each entry that reached apply is counted once
/// in `received` and once in exactly one of `applied`, `superseded`,
/// `parked`, `quarantined` or `skipped`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Entries read from bundles (duplicates included).
    pub received: u64,
    /// Entries whose writes are in the database (some columns may have lost
    /// to newer writes).
    pub applied: u64,
    /// Entries whose every value lost to newer writes (recorded as conflicts
    /// when another origin's write won).
    pub superseded: u64,
    /// Entries waiting: updates for a row that has not arrived (or is held),
    /// and entries dated more than a day ahead of this computer's clock.
    pub parked: u64,
    /// Entries the database refused, or whose row is held back, kept with
    /// their reason.
    pub quarantined: u64,
    /// Entries skipped because they were applied before.
    pub skipped: u64,
    /// Conflict records written.
    pub conflicts: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.received += o.received;
        self.applied += o.applied;
        self.superseded += o.superseded;
        self.parked += o.parked;
        self.quarantined += o.quarantined;
        self.skipped += o.skipped;
        self.conflicts += o.conflicts;
    }

    fn bucket(&mut self, o: Outcome) -> &mut u64 {
        match o {
            Outcome::Applied => &mut self.applied,
            Outcome::Superseded => &mut self.superseded,
            Outcome::Parked => &mut self.parked,
            Outcome::Quarantined => &mut self.quarantined,
        }
    }

    /// Whether every received entry has exactly one outcome.
    pub fn adds_up(&self) -> bool {
        self.received == self.applied + self.superseded + self.parked + self.quarantined + self.skipped
    }
}

/// What a run changed about entries counted before (in this run or an
/// earlier one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    /// Parked entries that took effect now (their row arrived, or their time came).
    pub unparked: u64,
    /// Rows moved out of their table and held (a missing parent, a unique
    /// value an older row claims).
    pub held: u64,
    /// Held rows back in their table.
    pub released: u64,
}

/// Changes to one origin's outcome counts.
#[derive(Debug, Clone, Copy, Default)]
struct Delta {
    received: i64,
    applied: i64,
    superseded: i64,
    parked: i64,
    quarantined: i64,
    skipped: i64,
}

impl Delta {
    fn bucket(&mut self, o: Outcome) -> &mut i64 {
        match o {
            Outcome::Applied => &mut self.applied,
            Outcome::Superseded => &mut self.superseded,
            Outcome::Parked => &mut self.parked,
            Outcome::Quarantined => &mut self.quarantined,
        }
    }
}

/// Local origin ids → node ids, and the order of versions (which compares
/// node ids as text, so every database orders alike).
#[derive(Default)]
pub struct Origins(HashMap<u32, String>);

impl Origins {
    pub fn name(&self, id: u32) -> &str {
        self.0.get(&id).map_or("?", String::as_str)
    }
}

impl merge::Order for Origins {
    fn cmp(&self, a: Ver, b: Ver) -> std::cmp::Ordering {
        a.ts.cmp(&b.ts).then_with(|| self.name(a.origin).cmp(self.name(b.origin))).then(a.seq.cmp(&b.seq))
    }
}

/// The state of one apply run over one open transaction.
pub struct Engine<'c> {
    pub conn: &'c dyn Session,
    pub tables: HashMap<String, Rc<TableInfo>>,
    /// Tables ferry must never write (see [`crate::schema::unwritable_tables`]), with why.
    pub unwritable: HashMap<String, &'static str>,
    pub origins: Origins,
    /// Node ids → the names this node's trust store gives them, for messages.
    pub names: HashMap<String, String>,
    /// Outcomes of the entries of the bundle being applied.
    pub counts: Counts,
    /// Changes to earlier outcomes during this run.
    pub events: Events,
    /// Per origin, changes to the outcome counts of `_ferry_origins` not yet
    /// written (an outcome moved from one count to another lowers one).
    deltas: HashMap<u32, Delta>,
    now: String,
    now_ts: i64,
    sql: physical::SqlTexts<'c>,
    rows: ledger::Rows<'c>,
    /// Tables written in this run (their foreign keys are checked at the end).
    dirty: HashSet<String>,
    /// The target's own capture, when it is tracked.
    pub local: Option<local::Local>,
    /// The newest entry time applied in this run.
    pub newest: Option<i64>,
    /// The table the last entry wrote (see [`Engine::table`]).
    last_table: Option<Rc<TableInfo>>,
    /// Id block → the origin whose rows were seen in it first
    /// (`_ferry_blocks`; see [`Engine::claim_block`]).
    blocks: HashMap<i64, u32>,
}

/// One write being carried out.
struct Ctx<'e> {
    e: &'e Entry,
    line: &'e [u8],
    v: Ver,
    t: Rc<TableInfo>,
    key_vals: Vec<Value>,
    /// The key as the ledger stores it (see [`ledger_key`]).
    lkey: Value,
    /// Non-key fields: (ledger number, column, value).
    fields: SmallVec<[(u32, &'e str, &'e Value); 8]>,
    cols: SmallVec<[u32; 8]>,
    /// A tracked target's own edit, already in its tables.
    local: bool,
}

impl<'e> Ctx<'e> {
    fn new(e: &'e Entry, line: &'e [u8], v: Ver, t: Rc<TableInfo>, key_vals: Vec<Value>) -> Ctx<'e> {
        let mut fields: SmallVec<[(u32, &'e str, &'e Value); 8]> = SmallVec::new();
        for (c, val) in e.fields.iter().flat_map(|f| f.0.iter()) {
            if !t.is_key(c) {
                let no = t.no(c);
                if no != table::UNNUMBERED {
                    fields.push((no, c.as_str(), val));
                }
            }
        }
        let cols = fields.iter().map(|f| f.0).collect();
        Ctx { e, line, v, lkey: ledger_key(&key_vals), t, key_vals, fields, cols, local: false }
    }

    fn incoming(&self) -> Incoming<'_> {
        Incoming { v: self.v, cols: &self.cols }
    }

    /// The key as text for people (a JSON array of the key values).
    fn key(&self) -> String {
        key_text(&self.key_vals)
    }

    /// The incoming fields among `cols` (all of them when `cols` is empty).
    fn fields_of<'a>(&'a self, cols: &'a [u32]) -> impl Iterator<Item = &'a (u32, &'e str, &'e Value)> + Clone + 'a {
        self.fields.iter().filter(move |f| cols.is_empty() || cols.contains(&f.0))
    }

    fn fields_row(&self, cols: &[u32]) -> Row {
        Row(self.fields_of(cols).map(|(_, c, v)| ((*c).to_owned(), (*v).clone())).collect())
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

/// How an entry names its row.
enum Keyed {
    Key(Vec<Value>),
    /// An update whose fields change key columns: the row moves.
    Rekey {
        old: Vec<Value>,
        new: Vec<Value>,
    },
    /// A legacy insert without a key: the target assigns one.
    Assign,
}

/// The row an entry names, or why it names none properly (the entry is
/// then quarantined).
fn resolve_key(t: &TableInfo, e: &Entry) -> Result<Keyed, String> {
    for c in e.pk.columns() {
        if !t.is_key(c) {
            return Err(format!(
                "\"pk\" names column {c:?}, which is not part of the key of table {:?} (its key: {})",
                t.name,
                t.key.join(", ")
            ));
        }
    }
    let from_fields = |k: &str| e.fields.as_ref().and_then(|f| f.get(k));
    let mut key = Vec::with_capacity(t.key.len());
    for (k, aff) in t.key.iter().zip(&t.key_affinity) {
        let v = match (e.pk.get(k), e.op) {
            (Some(v), _) => v,
            (None, Op::Insert) if e.pk.is_empty() => match from_fields(k) {
                Some(v) => v,
                None if t.integer_key && t.key.len() == 1 => return Ok(Keyed::Assign),
                None => return Err(format!("no value for key column {k:?}")),
            },
            (None, _) => return Err(format!("no value for key column {k:?}")),
        };
        if *v == Value::Null {
            return Err(format!("key column {k:?} is null"));
        }
        key.push(aff.key_value(v));
    }
    // Fields that name key columns (rare: a key change, or an insert
    // listing its key twice) must agree with the key or move the row.
    if !t.key.iter().any(|k| from_fields(k).is_some()) {
        return Ok(Keyed::Key(key));
    }
    let mut new = key.clone();
    for (i, (k, aff)) in t.key.iter().zip(&t.key_affinity).enumerate() {
        if let Some(v) = from_fields(k) {
            if *v == Value::Null {
                return Err(format!("fields set key column {k:?} to null"));
            }
            new[i] = aff.key_value(v);
        }
    }
    if new == key {
        return Ok(Keyed::Key(key));
    }
    match e.op {
        Op::Update => Ok(Keyed::Rekey { old: key, new }),
        _ => Err(format!(
            "its fields give the key {} but its \"pk\" gives {}: an insert cannot change its key",
            key_text(&new),
            key_text(&key)
        )),
    }
}

impl<'c> Engine<'c> {
    /// An engine over `conn`'s open transaction, judging entries' dates by `now`.
    pub fn new(conn: &'c dyn Session, now: crate::journal::Timestamp) -> session::Result<Engine<'c>> {
        let (mut tables, unwritable, local) = match conn.sqlite() {
            Some(c) => (load_tables(c)?, crate::schema::unwritable_tables(c)?, local::Local::read(c)?),
            None => (table::load_server_tables(conn)?, HashMap::new(), None),
        };
        let mut numbers = ledger::column_numbers(conn)?;
        for t in tables.values_mut() {
            // A column the table no longer has is gone with its versions
            // (and must not be read back when a delete parks survivors).
            t.set_numbers(numbers.remove(&t.name).unwrap_or_default());
            if let Some(c) = t.columns.iter().find(|c| t.no(c) == table::UNNUMBERED) {
                return Err(DbError::Ledger(format!(
                    "{}.{c} has no number in _ferry_columns (the ledger was not prepared)",
                    t.name
                )));
            }
        }
        let mut eng = Engine {
            conn,
            tables: tables.into_iter().map(|(k, v)| (k, Rc::new(v))).collect(),
            unwritable,
            origins: Origins::default(),
            names: HashMap::new(),
            counts: Counts::default(),
            events: Events::default(),
            deltas: HashMap::new(),
            now: now.to_rfc3339(),
            now_ts: now.0,
            sql: physical::SqlTexts::default(),
            rows: ledger::Rows::new(conn)?,
            dirty: HashSet::new(),
            local,
            newest: None,
            last_table: None,
            blocks: HashMap::new(),
        };
        eng.reload_origins()?;
        Ok(eng)
    }

    /// Starts savepoint `name`. What the engine holds in memory (the row
    /// ledger's cached groups, counts) is written first, so a rollback to it
    /// undoes exactly what came after.
    pub fn savepoint(&mut self, name: &str) -> session::Result<()> {
        self.flush()?;
        self.conn.savepoint(name)
    }

    /// Ends savepoint `name`, keeping what it holds.
    pub fn release(&mut self, name: &str) -> session::Result<()> {
        self.flush()?;
        self.conn.release(name)
    }

    /// Undoes everything since savepoint `name` (which stays open), what
    /// the engine holds in memory with it.
    pub fn rollback_to(&mut self, name: &str) -> session::Result<()> {
        self.rows.discard();
        self.deltas.clear();
        self.conn.rollback_to(name)?;
        self.reload_origins()
    }

    fn flush(&mut self) -> session::Result<()> {
        self.rows.flush()?;
        for (id, c) in self.deltas.drain() {
            self.conn.execute(
                "UPDATE _ferry_origins SET n_received = n_received + ?2, n_applied = n_applied + ?3,
                 n_superseded = n_superseded + ?4, n_parked = n_parked + ?5,
                 n_quarantined = n_quarantined + ?6, n_skipped = n_skipped + ?7 WHERE id = ?1",
                args![id, c.received, c.applied, c.superseded, c.parked, c.quarantined, c.skipped],
            )?;
        }
        Ok(())
    }

    /// The tables written in this run whose key is a single integer (their
    /// sequences are raised above the ids applied).
    pub fn written_tables(&self) -> Vec<Rc<TableInfo>> {
        let mut out: Vec<Rc<TableInfo>> =
            self.dirty.iter().filter_map(|t| self.tables.get(t)).filter(|t| t.integer_key).cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Settles held rows and writes what the engine still holds in memory;
    /// the last step before commit.
    pub fn finish(mut self) -> Result<Events, Fail> {
        self.settle()?;
        self.flush()?;
        if let Some(newest) = self.newest {
            if let Some(c) = self.conn.sqlite() {
                local::raise_clock_floor(c, newest)?;
            }
        }
        Ok(self.events)
    }

    /// Re-reads the origin and id block tables (after a savepoint rollback
    /// undid registrations).
    pub fn reload_origins(&mut self) -> session::Result<()> {
        self.blocks.clear();
        for r in self.conn.query("SELECT block, origin FROM _ferry_blocks", &[])? {
            self.blocks.insert(r.get(0)?, r.get(1)?);
        }
        self.origins.0.clear();
        for r in self.conn.query("SELECT id, node FROM _ferry_origins", &[])? {
            self.origins.0.insert(r.get(0)?, r.get(1)?);
        }
        Ok(())
    }

    /// The local id of `node`, registering it on first sight.
    pub fn origin_id(&mut self, node: &str) -> session::Result<u32> {
        if let Some((id, _)) = self.origins.0.iter().find(|(_, n)| n.as_str() == node) {
            return Ok(*id);
        }
        let add = self.conn.dialect().pick(
            "INSERT OR IGNORE INTO _ferry_origins (node) VALUES (?1)",
            "INSERT INTO _ferry_origins (node) VALUES (?1) ON CONFLICT DO NOTHING",
            "INSERT IGNORE INTO _ferry_origins (node) VALUES (?1)",
        );
        self.conn.execute(add, args![node])?;
        let id: u32 = self.conn.query_one("SELECT id FROM _ferry_origins WHERE node = ?1", args![node])?.get(0)?;
        self.origins.0.insert(id, node.to_owned());
        Ok(id)
    }

    fn delta(&mut self, origin: u32) -> &mut Delta {
        self.deltas.entry(origin).or_default()
    }

    /// The target table `name` (entries of one bundle mostly name a few
    /// tables in runs, so the last one is kept at hand).
    fn table(&mut self, name: &str) -> Option<Rc<TableInfo>> {
        if let Some(t) = self.last_table.as_ref().filter(|t| t.name == name) {
            return Some(t.clone());
        }
        let t = self.tables.get(name).cloned()?;
        // A table entries name is written in this run: its foreign keys are
        // checked at the end.
        self.dirty.insert(t.name.clone());
        self.last_table = Some(t.clone());
        Some(t)
    }

    /// Whether rows of `origin` were seen in some id block.
    pub fn has_block(&self, origin: u32) -> bool {
        self.blocks.values().any(|o| *o == origin)
    }

    /// Two computers given the same id block number their rows alike, and
    /// their rows would overwrite each other here. The first origin seen
    /// inserting rows in a block (ids from `block × 2^32`; block 0, ids
    /// below 2^32, is nobody's) has it; another origin's insert there refuses
    /// its segment, before anything of it is written.
    fn claim_block(&mut self, origin: u32, t: &TableInfo, key: &[Value]) -> Result<(), Fail> {
        let [Value::Integer(id)] = key else { return Ok(()) };
        if !t.integer_key || *id < (1 << 32) {
            return Ok(());
        }
        let block = id >> 32;
        match self.blocks.get(&block) {
            Some(o) if *o == origin => Ok(()),
            Some(o) => Err(Fail::Segment(format!(
                "{} and {} both number their rows in id block {block} (this one's row {id} of {:?}): the two \
                 computers were given the same id block, and their rows would overwrite each other. Nothing of \
                 this part was applied. On {}, run `ferry node reissue APP.sqlite3 --name {}b --id-block N \
                 --from 1` (N: a block no other computer uses; its rows get new ids there), then trust the key its \
                 `ferry key export` prints here and on every computer that receives from it",
                self.person(*o),
                self.person(origin),
                t.name,
                self.person(origin),
                self.person(origin),
            ))),
            None => {
                self.conn.execute("INSERT INTO _ferry_blocks (block, origin) VALUES (?1, ?2)", args![block, origin])?;
                self.blocks.insert(block, origin);
                Ok(())
            }
        }
    }

    /// An origin for people: its trusted name, else its node id.
    pub(crate) fn person(&self, origin: u32) -> String {
        let id = self.origins.name(origin);
        self.names.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }

    /// Counts entries of `origin` skipped as duplicates.
    pub fn skipped(&mut self, origin: u32, n: u64) {
        self.counts.received += n;
        self.counts.skipped += n;
        let d = self.delta(origin);
        d.received += n as i64;
        d.skipped += n as i64;
    }

    /// Counts entries of `origin` that arrived in a forked segment: they are
    /// quarantined with it.
    pub fn forked(&mut self, origin: u32, n: u64) {
        self.counts.received += n;
        self.counts.quarantined += n;
        let d = self.delta(origin);
        d.received += n as i64;
        d.quarantined += n as i64;
    }

    /// An entry counted as `from` earlier now has outcome `to`.
    fn moved(&mut self, origin: u32, from: Outcome, to: Outcome) {
        if from == to {
            return;
        }
        let d = self.delta(origin);
        *d.bucket(from) -= 1;
        *d.bucket(to) += 1;
        if from == Outcome::Parked && to != Outcome::Parked {
            self.events.unparked += 1;
        }
    }

    /// Why an entry does not fit the target's tables (a table or columns it
    /// lacks: the two databases' apps differ in version), `None` when it fits.
    fn misfit(&mut self, e: &Entry) -> Option<String> {
        let Some(t) = self.table(&e.table) else {
            return Some(format!(
                "this database has no table {:?}: the app here is older or newer than the one that wrote the \
                 entry. Update this database (for Django: `manage.py migrate`), then `ferry bundle apply --db DB \
                 --retry-quarantined`",
                e.table
            ));
        };
        let missing: Vec<&str> =
            e.pk.columns().chain(e.fields.iter().flat_map(|f| f.columns())).filter(|c| !t.has_column(c)).collect();
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "table {:?} here has no column{} {}: the app here is older or newer than the one that wrote the entry. \
             Update this database (for Django: `manage.py migrate`), then `ferry bundle apply --db DB \
             --retry-quarantined`",
            e.table,
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ))
    }

    /// Applies one entry from `origin` and counts its outcome. An entry that
    /// does not fit the target's tables is quarantined, with the columns it
    /// misses, while the rest applies.
    pub fn apply(&mut self, origin: u32, e: &Entry, line: &[u8]) -> Result<(), Fail> {
        let outcome = match self.misfit(e) {
            Some(why) => {
                self.quarantine(origin, e, line, None, SCHEMA, &why)?;
                Outcome::Quarantined
            }
            None => self.apply_entry(origin, e, line, false)?,
        };
        self.count(origin, outcome);
        Ok(())
    }

    /// Applies an entry counted before (waiting, or quarantined) once more;
    /// one that still cannot apply is quarantined with today's reason.
    fn apply_again(&mut self, origin: u32, e: &Entry, line: &[u8]) -> Result<Outcome, Fail> {
        if let Some(why) = self.misfit(e) {
            self.quarantine(origin, e, line, None, SCHEMA, &why)?;
            return Ok(Outcome::Quarantined);
        }
        match self.apply_entry(origin, e, line, false) {
            Err(Fail::Segment(why) | Fail::Refused(why)) => {
                self.quarantine(origin, e, line, None, CONSTRAINT, &why)?;
                Ok(Outcome::Quarantined)
            }
            r => r,
        }
    }

    /// Tries every quarantined entry again, oldest first: the ones that fit
    /// now take their outcome; the others stay, with today's reason.
    pub fn retry_quarantined(&mut self) -> Result<(), Fail> {
        let all: Vec<(i64, String, String)> = self
            .conn
            .query("SELECT id, origin, entry FROM _ferry_quarantine ORDER BY id", &[])?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .collect::<session::Result<_>>()?;
        for (id, origin, line) in all {
            let Ok(e) = Entry::parse(line.as_bytes()) else { continue };
            let oid = self.origin_id(&origin)?;
            self.conn.execute("DELETE FROM _ferry_quarantine WHERE id = ?1", args![id])?;
            let outcome = self.apply_again(oid, &e, line.as_bytes())?;
            self.counts.received += 1;
            *self.counts.bucket(outcome) += 1;
            self.moved(oid, Outcome::Quarantined, outcome);
        }
        Ok(())
    }

    /// Counts an entry of `origin` received, with its outcome.
    fn count(&mut self, origin: u32, outcome: Outcome) {
        self.counts.received += 1;
        *self.counts.bucket(outcome) += 1;
        let d = self.delta(origin);
        d.received += 1;
        *d.bucket(outcome) += 1;
    }

    fn apply_entry(&mut self, origin: u32, e: &Entry, line: &[u8], local: bool) -> Result<Outcome, Fail> {
        if !local && merge::is_future(e.ts.0, self.now_ts) {
            self.wait(origin, e, line)?;
            return Ok(Outcome::Parked);
        }
        let t = self.table(&e.table).ok_or_else(|| Fail::Refused(format!("unknown table {:?}", e.table)))?;
        if !local && !t.types.is_empty() {
            self.check_types(origin, &t, e)?;
        }
        let v = Ver { ts: e.ts.0, origin, seq: e.seq };
        if !local {
            self.newest = Some(self.newest.map_or(v.ts, |n| n.max(v.ts)));
        }
        let keyed = match resolve_key(&t, e) {
            Ok(k) => k,
            Err(reason) => {
                self.quarantine(origin, e, line, None, KEY, &reason)?;
                return Ok(Outcome::Quarantined);
            }
        };
        let key_vals = match keyed {
            Keyed::Assign => return self.insert_assigned(origin, e, line, &t),
            Keyed::Rekey { old, new } => return self.rekey(origin, e, line, &t, old, new, local),
            Keyed::Key(k) => k,
        };
        if !local {
            self.check_block(&t, e, &key_vals)?;
            if e.op == Op::Insert {
                self.claim_block(origin, &t, &key_vals)?;
            }
        }
        let mut cx = Ctx::new(e, line, v, t, key_vals);
        cx.local = local;
        match e.op {
            Op::Insert => self.insert(&cx),
            Op::Update => self.update(&cx),
            Op::Delete => self.delete(&cx),
        }
    }

    fn insert(&mut self, cx: &Ctx) -> Result<Outcome, Fail> {
        let tname = cx.t.name.as_str();
        if !cx.local {
            // Fast path: a key the ledger has never seen (most inserts). Claim
            // it in the ledger first; if it was there after all, decide fully.
            let fresh = merge::insert(None, &cx.incoming(), &self.origins).state;
            if self.rows.insert_new_row(tname, &cx.lkey, &fresh)? {
                return match self.insert_physical(cx)? {
                    Written::Done(_) => Ok(Outcome::Applied),
                    Written::Refused(r) => {
                        let (outcome, state) = self.insert_refused(cx, None, fresh, r)?;
                        self.rows.save_row(tname, &cx.lkey, &state)?;
                        Ok(outcome)
                    }
                };
            }
        }
        let st = self.rows.load_row(tname, &cx.lkey)?;
        let st = match (cx.local, st) {
            (true, Some(st)) if st.held => Some(self.drop_held_for_local(cx, st)?),
            (_, st) => st,
        };
        let d = merge::insert(st.as_ref(), &cx.incoming(), &self.origins);
        let (outcome, state) = self.carry_out(cx, st, d)?;
        self.rows.save_row(tname, &cx.lkey, &state)?;
        Ok(outcome)
    }

    fn update(&mut self, cx: &Ctx) -> Result<Outcome, Fail> {
        let st = self.rows.load_row(&cx.t.name, &cx.lkey)?;
        let d = merge::update(st.as_ref(), &cx.incoming(), &self.origins);
        let (outcome, state) = self.carry_out(cx, st, d)?;
        self.rows.save_row(&cx.t.name, &cx.lkey, &state)?;
        Ok(outcome)
    }

    fn delete(&mut self, cx: &Ctx) -> Result<Outcome, Fail> {
        let st = self.rows.load_row(&cx.t.name, &cx.lkey)?;
        let d = merge::delete(st.as_ref(), &cx.incoming(), &self.origins);
        let (outcome, state) = self.carry_out(cx, st, d)?;
        self.rows.save_row(&cx.t.name, &cx.lkey, &state)?;
        Ok(outcome)
    }

    /// Carries out a decision for `cx`'s row (whose state was `before`):
    /// the outcome and the state to record. Nothing is saved to the ledger
    /// here (the caller does, once).
    fn carry_out(&mut self, cx: &Ctx, before: Option<RowState>, d: Decision) -> Result<(Outcome, RowState), Fail> {
        let Decision { mut outcome, write, mut state, conflicts, drop_parked_before } = d;
        let held = before.as_ref().is_some_and(|b| b.held);
        // Values about to be overwritten are read first, for the conflict records.
        let mut existing: SmallVec<[Option<Row>; 2]> = SmallVec::new();
        for c in &conflicts {
            existing.push(match &c.lost {
                Lost::Existing(cols) if !cx.local => self.current_values(cx, held, cols)?,
                _ => None,
            });
        }
        match write {
            Write::Nothing => {}
            Write::InsertRow { replay_parked } => {
                if !cx.local {
                    match self.insert_physical(cx)? {
                        Written::Done(_) => {}
                        Written::Refused(Refusal::Key) => {
                            // The row is in the table though the ledger has it
                            // absent: it was made here outside ferry.
                            let mut d = merge::insert_over_unknown_row(&cx.incoming(), &self.origins);
                            d.state.del = state.del;
                            d.state.parked = state.parked;
                            let (outcome, mut state) = self.carry_out(cx, Some(RowState::default()), d)?;
                            if state.parked {
                                self.replay_parked(&cx.t.clone(), &cx.lkey, &cx.key_vals, &mut state)?;
                            }
                            return Ok((outcome, state));
                        }
                        Written::Refused(r) => {
                            let (o, s) = self.insert_refused(cx, before.clone(), state, r)?;
                            outcome = o;
                            state = s;
                        }
                    }
                }
                if replay_parked {
                    self.replay_parked(&cx.t.clone(), &cx.lkey, &cx.key_vals, &mut state)?;
                }
            }
            Write::SetColumns(cols) if held && !cx.local => {
                self.edit_held_copy(&cx.t.name, &cx.lkey, cx.fields_of(&cols).map(|f| (f.1, f.2)))?;
            }
            Write::SetColumns(cols) => {
                if !cx.local {
                    let fields: SmallVec<[&(u32, &str, &Value); 8]> = cx.fields_of(&cols).collect();
                    let w = self.sql.update(
                        self.conn,
                        &cx.t,
                        &cx.key_vals,
                        fields.iter().map(|f| f.1),
                        fields.iter().map(|f| f.2),
                    )?;
                    match w {
                        Written::Done(n) if n > 0 => {}
                        Written::Done(_) => {
                            // The ledger has the row present, the table has it
                            // not: deleted here outside ferry. The write waits.
                            let before = before.unwrap_or_default();
                            let d = merge::update_row_vanished(&before);
                            self.park(cx, Some("its row was deleted in this database outside ferry"))?;
                            return Ok((d.outcome, d.state));
                        }
                        Written::Refused(Refusal::Unique(msg)) => {
                            let (o, s) =
                                self.update_clash(cx, &cols, before.clone().unwrap_or_default(), state, &msg)?;
                            outcome = o;
                            state = s;
                        }
                        Written::Refused(Refusal::Key | Refusal::Other(_)) => {
                            let reason = match w {
                                Written::Refused(Refusal::Other(m)) => m,
                                _ => "the database refused the write".into(),
                            };
                            self.quarantine_cx(cx, CONSTRAINT, &reason)?;
                            return Ok((Outcome::Quarantined, before.unwrap_or_default()));
                        }
                    }
                }
            }
            Write::Park => {
                let reason = match before.as_ref().and_then(|b| b.del) {
                    Some(d) => format!(
                        "its row was deleted by {} (entry {}); it applies if the row is inserted again",
                        self.person(d.origin),
                        d.seq
                    ),
                    None if held => "its row is held back".into(),
                    None => "its row has not arrived yet".into(),
                };
                self.park(cx, Some(&reason))?
            }
            Write::Probe => {
                if cx.local {
                    let d = merge::update_found(&cx.incoming());
                    return Ok((d.outcome, d.state));
                }
                let w = if cx.fields.is_empty() {
                    Written::Done(usize::from(physical::exists(self.conn, &cx.t, &cx.key_vals)?))
                } else {
                    self.sql.update(
                        self.conn,
                        &cx.t,
                        &cx.key_vals,
                        cx.fields.iter().map(|f| f.1),
                        cx.fields.iter().map(|f| f.2),
                    )?
                };
                let d = match w {
                    Written::Done(n) if n > 0 => merge::update_found(&cx.incoming()),
                    Written::Done(_) => {
                        self.park(cx, Some("its row has not arrived yet"))?;
                        merge::update_not_found()
                    }
                    Written::Refused(Refusal::Key | Refusal::Unique(_) | Refusal::Other(_)) => {
                        let reason = match w {
                            Written::Refused(Refusal::Other(m) | Refusal::Unique(m)) => m,
                            _ => "the database refused the write".into(),
                        };
                        self.quarantine_cx(cx, CONSTRAINT, &reason)?;
                        return Ok((Outcome::Quarantined, RowState::default()));
                    }
                };
                outcome = d.outcome;
                state = d.state;
            }
            Write::DeleteRow { survivors } => {
                if !cx.local {
                    if !survivors.is_empty() {
                        let all: SmallVec<[u32; 8]> = survivors.iter().flat_map(|(_, c)| c.iter().copied()).collect();
                        let values = self.current_values(cx, held, &all)?.unwrap_or_default();
                        for (v, cols) in &survivors {
                            let fields: Vec<(String, Value)> = cols
                                .iter()
                                .filter_map(|no| cx.t.name_of(*no))
                                .filter_map(|c| values.get(c).map(|val| (c.to_owned(), val.clone())))
                                .collect();
                            let reason = format!(
                                "its row was deleted by {} (entry {}) before this newer value came; it applies if \
                                 the row is inserted again",
                                self.person(cx.v.origin),
                                cx.v.seq
                            );
                            self.park_fields(&cx.t.name, &cx.lkey, *v, &fields, false, Some(&reason))?;
                        }
                    }
                    if held {
                        self.release_held_copy(&cx.t.name, &cx.lkey, Outcome::Superseded)?;
                    } else {
                        self.sql.delete(self.conn, &cx.t, &cx.key_vals)?;
                    }
                }
            }
            Write::ResetColumns(cols) => {
                if !cx.local {
                    let names: SmallVec<[&str; 8]> = cols.iter().filter_map(|no| cx.t.name_of(*no)).collect();
                    let defaults: Vec<Value> =
                        names.iter().map(|c| cx.t.defaults.get(*c).cloned().unwrap_or(Value::Null)).collect();
                    if held {
                        self.edit_held_copy(&cx.t.name, &cx.lkey, names.iter().copied().zip(defaults.iter()))?;
                    } else if let Written::Refused(r) =
                        self.sql.update(self.conn, &cx.t, &cx.key_vals, names.iter().copied(), defaults.iter())?
                    {
                        let why = match r {
                            Refusal::Other(m) | Refusal::Unique(m) => m,
                            Refusal::Key => "the database refused the defaults".into(),
                        };
                        state = self.move_to_held(&cx.t, &cx.key_vals, &cx.lkey, state, CONSTRAINT, &why, None)?;
                    }
                }
            }
        }
        for (c, existing) in conflicts.iter().zip(existing) {
            self.record_conflict(cx, c, existing)?;
        }
        if let Some(del) = drop_parked_before {
            self.drop_parked_under(&cx.t.name, &cx.lkey, &cx.key(), del)?;
            state.parked = self.has_parked(&cx.t.name, &cx.lkey)?;
        }
        Ok((outcome, state))
    }

    /// The current values of `cols` of `cx`'s row, from its table or, for a
    /// held row, from `_ferry_held`.
    fn current_values(&self, cx: &Ctx, held: bool, cols: &[u32]) -> Result<Option<Row>, Fail> {
        let names: SmallVec<[&str; 8]> = cols.iter().filter_map(|no| cx.t.name_of(*no)).collect();
        if held {
            let row = self.held_row(&cx.t.name, &cx.lkey)?;
            return Ok(row.map(|r| Row(r.0.into_iter().filter(|(c, _)| names.contains(&c.as_str())).collect())));
        }
        let vals = physical::read(self.conn, &cx.t, &cx.key_vals, names.iter().copied())?;
        Ok(vals.map(|vals| Row(names.iter().map(|c| (*c).to_owned()).zip(vals).collect())))
    }

    fn insert_physical(&self, cx: &Ctx) -> Result<Written, Fail> {
        let cols = cx.t.key.iter().map(String::as_str).chain(cx.fields.iter().map(|f| f.1));
        let vals = cx.key_vals.iter().chain(cx.fields.iter().map(|f| f.2));
        self.sql.insert(self.conn, &cx.t, cols, vals)
    }

    /// The row of `cx` as an insert would make it: key, fields, defaults.
    fn row_of_insert(&self, cx: &Ctx) -> Row {
        let mut row = Row::default();
        for (k, v) in cx.t.key.iter().zip(&cx.key_vals) {
            row.0.push((k.clone(), v.clone()));
        }
        for c in &cx.t.columns {
            if cx.t.is_key(c) {
                continue;
            }
            let v = match cx.fields.iter().find(|f| f.1 == c) {
                Some(f) => f.2.clone(),
                None => cx.t.defaults.get(c).cloned().unwrap_or(Value::Null),
            };
            row.0.push((c.clone(), v));
        }
        row
    }

    /// A legacy insert without a key: the target assigns one (each target
    /// its own, so such rows match across targets only by their values).
    fn insert_assigned(&mut self, origin: u32, e: &Entry, line: &[u8], t: &Rc<TableInfo>) -> Result<Outcome, Fail> {
        let cx = Ctx::new(e, line, Ver { ts: e.ts.0, origin, seq: e.seq }, t.clone(), Vec::new());
        let w = self.sql.insert(self.conn, t, cx.fields.iter().map(|f| f.1), cx.fields.iter().map(|f| f.2))?;
        match w {
            Written::Done(_) => {
                let key = vec![Value::Integer(self.conn.last_insert_id()?)];
                let cx = Ctx { lkey: ledger_key(&key), key_vals: key, ..cx };
                let state = merge::insert(None, &cx.incoming(), &self.origins).state;
                self.rows.save_row(&t.name, &cx.lkey, &state)?;
                Ok(Outcome::Applied)
            }
            Written::Refused(r) => {
                let reason = match r {
                    Refusal::Key => "the database refused the key it assigned".into(),
                    Refusal::Unique(m) | Refusal::Other(m) => m,
                };
                self.quarantine(origin, e, line, None, CONSTRAINT, &reason)?;
                Ok(Outcome::Quarantined)
            }
        }
    }

    /// An update that changes key columns: the row moves. It is carried out
    /// as a delete of the old key and an insert of the new one (the row's
    /// values as this target holds them, with the update's fields), both at
    /// the update's version. (Capture journals a key change as exactly that
    /// pair; this form comes from older journals.)
    #[allow(clippy::too_many_arguments)]
    fn rekey(
        &mut self,
        origin: u32,
        e: &Entry,
        line: &[u8],
        t: &Rc<TableInfo>,
        old: Vec<Value>,
        new: Vec<Value>,
        local: bool,
    ) -> Result<Outcome, Fail> {
        if !local {
            self.check_block(t, e, &new)?;
            self.claim_block(origin, t, &new)?;
        }
        let old_lkey = ledger_key(&old);
        let st_old = self.rows.load_row(&t.name, &old_lkey)?;
        let mut values: Row = match &st_old {
            Some(st) if st.held => self.held_row(&t.name, &old_lkey)?.unwrap_or_default(),
            _ => physical::read_row(self.conn, t, &old)?.unwrap_or_default(),
        };
        values.0.retain(|(c, _)| !t.is_key(c));
        for (c, v) in e.fields.iter().flat_map(|f| f.0.iter()) {
            if t.is_key(c) {
                continue;
            }
            match values.0.iter_mut().find(|(x, _)| x == c) {
                Some(slot) => slot.1 = v.clone(),
                None => values.0.push((c.clone(), v.clone())),
            }
        }
        let v = Ver { ts: e.ts.0, origin, seq: e.seq };
        let gone = Entry { op: Op::Delete, fields: None, ..e.clone() };
        let mut cx = Ctx::new(&gone, line, v, t.clone(), old);
        cx.local = local;
        self.delete(&cx)?;
        let moved = Entry {
            op: Op::Insert,
            pk: Row(t.key.iter().cloned().zip(new.iter().cloned()).collect()),
            fields: Some(values),
            ..e.clone()
        };
        let mut cx = Ctx::new(&moved, line, v, t.clone(), new);
        cx.local = local;
        self.insert(&cx)
    }

    /// A tracked target refuses a row with an id above its own id block in
    /// a table it captures: its own next rows would be numbered inside the
    /// other node's block (SQLite hands out max(id) + 1).
    fn check_block(&self, t: &TableInfo, e: &Entry, key: &[Value]) -> Result<(), Fail> {
        let Some(local) = &self.local else { return Ok(()) };
        let (Some(block), [Value::Integer(id)]) = (local.block, key) else { return Ok(()) };
        if e.op == Op::Delete || !t.integer_key || !local.tracked.contains(&t.name) {
            return Ok(());
        }
        let ceiling = (i64::from(block) + 1) << 32;
        if *id < ceiling {
            return Ok(());
        }
        Err(Fail::Refused(format!(
            "seq {}: table {:?} would receive row id {id}, which lies in id block {}, above this node's own block \
             {block}; rows entered here afterwards would be numbered inside that other block and collide with \
             its computer's rows. Servers need id blocks above every laptop's: give this node a higher block \
             (`ferry node set-block N`, then `ferry track` again), or stop capturing {:?} here \
             (`ferry track --exclude {}`); then apply again",
            e.seq,
            t.name,
            id >> 32,
            t.name,
            t.name
        )))
    }

    /// On a server, every value of an entry must fit its column exactly
    /// ([`crate::apply::types::fits`]); one that does not refuses the
    /// bundle, naming origin, seq, table, column and value (nothing is
    /// rounded, truncated or coerced).
    fn check_types(&self, origin: u32, t: &TableInfo, e: &Entry) -> Result<(), Fail> {
        let values = e.pk.0.iter().chain(e.fields.iter().flat_map(|f| f.0.iter()));
        for (c, v) in values {
            let Some(ty) = t.types.get(c) else { continue };
            if let Err(crate::apply::types::Misfit(why)) = crate::apply::types::fits(v, ty) {
                return Err(Fail::Refused(format!(
                    "{}'s entry {} (origin {}, seq {}): table {:?} column {c:?}: {why}",
                    self.person(origin),
                    e.seq,
                    self.origins.name(origin),
                    e.seq,
                    t.name
                )));
            }
        }
        Ok(())
    }

    /// Keeps an entry dated too far ahead of this computer's clock until
    /// that clock reaches it (see [`merge::is_future`]).
    fn wait(&mut self, origin: u32, e: &Entry, line: &[u8]) -> Result<(), Fail> {
        let name = self.origins.name(origin).to_owned();
        let sql = self.conn.dialect().pick(
            "INSERT OR IGNORE INTO _ferry_waiting (origin, seq, ts, entry, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            "INSERT INTO _ferry_waiting (origin, seq, ts, entry, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            "INSERT IGNORE INTO _ferry_waiting (origin, seq, ts, entry, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        );
        self.conn.execute(sql, args![name, e.seq as i64, e.ts.0, String::from_utf8_lossy(line), self.now])?;
        Ok(())
    }

    /// Applies the waiting entries whose time has come, oldest first; the
    /// first step of a run.
    pub fn release_waiting(&mut self) -> Result<(), Fail> {
        let limit = self.now_ts.saturating_add(merge::FUTURE_SLACK_MICROS);
        let due: Vec<(String, i64, String)> = self
            .conn
            .query(
                "SELECT origin, seq, entry FROM _ferry_waiting WHERE ts <= ?1 ORDER BY ts, origin, seq",
                args![limit],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .collect::<session::Result<_>>()?;
        for (origin, seq, line) in due {
            self.conn.execute("DELETE FROM _ferry_waiting WHERE origin = ?1 AND seq = ?2", args![origin, seq])?;
            let oid = self.origin_id(&origin)?;
            let Ok(e) = Entry::parse(line.as_bytes()) else { continue };
            let outcome = self.apply_again(oid, &e, line.as_bytes())?;
            self.moved(oid, Outcome::Parked, outcome);
        }
        Ok(())
    }

    /// Parks `cx`'s update (counted as a parked entry).
    fn park(&mut self, cx: &Ctx, reason: Option<&str>) -> Result<(), Fail> {
        let fields: Vec<(String, Value)> = cx.fields.iter().map(|f| (f.1.to_owned(), f.2.clone())).collect();
        self.park_fields(&cx.t.name, &cx.lkey, cx.v, &fields, true, reason)
    }

    /// Parks fields written at version `v` (merging with what is parked
    /// there). `counted`: the parked row stands for an entry counted as
    /// parked (a delete's surviving values are not).
    fn park_fields(
        &mut self,
        tname: &str,
        key: &Value,
        v: Ver,
        fields: &[(String, Value)],
        counted: bool,
        reason: Option<&str>,
    ) -> Result<(), Fail> {
        let origin = self.origins.name(v.origin).to_owned();
        let existing: Option<String> = self
            .conn
            .query_opt(
                "SELECT fields FROM _ferry_parked WHERE tbl = ?1 AND key = ?2 AND ts = ?3 AND origin = ?4 AND seq = ?5",
                args![tname, key, v.ts, origin, v.seq as i64],
            )?
            .map(|r| r.get(0))
            .transpose()?;
        let mut row: Row = existing.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        for (c, val) in fields {
            match row.0.iter_mut().find(|(x, _)| x == c) {
                Some(slot) => slot.1 = val.clone(),
                None => row.0.push((c.clone(), val.clone())),
            }
        }
        let text = serde_json::to_string(&row).unwrap_or_default();
        let sql = self.conn.dialect().pick(
            "INSERT INTO _ferry_parked (tbl, key, ts, origin, seq, fields, counted, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (tbl, key, ts, origin, seq) DO UPDATE SET fields = excluded.fields,
             counted = max(counted, excluded.counted), reason = coalesce(excluded.reason, reason)",
            "INSERT INTO _ferry_parked (tbl, key, ts, origin, seq, fields, counted, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (tbl, key, ts, origin, seq) DO UPDATE SET fields = excluded.fields,
             counted = greatest(_ferry_parked.counted, excluded.counted),
             reason = coalesce(excluded.reason, _ferry_parked.reason)",
            "INSERT INTO _ferry_parked (tbl, \"key\", ts, origin, seq, fields, counted, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON DUPLICATE KEY UPDATE fields = VALUES(fields), counted = greatest(counted, VALUES(counted)),
             reason = coalesce(VALUES(reason), reason)",
        );
        self.conn.execute(sql, args![tname, key, v.ts, origin, v.seq as i64, text, counted, reason])?;
        Ok(())
    }

    fn has_parked(&self, tname: &str, key: &Value) -> session::Result<bool> {
        let found = self
            .conn
            .query_opt("SELECT 1 FROM _ferry_parked WHERE tbl = ?1 AND key = ?2 LIMIT 1", args![tname, key])?;
        Ok(found.is_some())
    }

    /// The parked writes of a key, oldest first: (version, origin, fields, counted).
    #[allow(clippy::type_complexity)]
    fn take_parked(&mut self, tname: &str, key: &Value) -> Result<Vec<(Ver, String, Row, bool)>, Fail> {
        let parked: Vec<(i64, String, i64, String, bool)> = self
            .conn
            .query(
                "SELECT ts, origin, seq, fields, counted FROM _ferry_parked WHERE tbl = ?1 AND key = ?2
                 ORDER BY ts, origin, seq",
                args![tname, key],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .collect::<session::Result<_>>()?;
        self.conn.execute("DELETE FROM _ferry_parked WHERE tbl = ?1 AND key = ?2", args![tname, key])?;
        let mut out = Vec::with_capacity(parked.len());
        for (ts, origin, seq, fields, counted) in parked {
            let oid = self.origin_id(&origin)?;
            let row: Row = serde_json::from_str(&fields).unwrap_or_default();
            out.push((Ver { ts, origin: oid, seq: seq as u64 }, origin, row, counted));
        }
        Ok(out)
    }

    /// Replays the writes parked for a row that has just become present,
    /// oldest first, each decided like the update it is.
    fn replay_parked(
        &mut self,
        t: &Rc<TableInfo>,
        lkey: &Value,
        key_vals: &[Value],
        st: &mut RowState,
    ) -> Result<(), Fail> {
        st.parked = false;
        for (v, _, row, counted) in self.take_parked(&t.name, lkey)? {
            let entry = Entry {
                seq: v.seq,
                ts: crate::journal::Timestamp(v.ts),
                op: Op::Update,
                table: t.name.clone(),
                pk: Row(t.key.iter().cloned().zip(key_vals.iter().cloned()).collect()),
                fields: Some(row),
            };
            let line = entry.to_line();
            let cx = Ctx::new(&entry, &line, v, t.clone(), key_vals.to_vec());
            let d = merge::update(Some(st), &cx.incoming(), &self.origins);
            let (outcome, state) = self.carry_out(&cx, Some(st.clone()), d)?;
            *st = state;
            if counted {
                self.moved(v.origin, Outcome::Parked, outcome);
            }
        }
        Ok(())
    }

    /// Drops the parked writes of a key older than a new tombstone `del`:
    /// they can never apply. Each lost value is recorded.
    fn drop_parked_under(&mut self, tname: &str, key: &Value, key_text: &str, del: Ver) -> Result<(), Fail> {
        for (v, origin, row, counted) in self.take_parked(tname, key)? {
            match merge::parked_under_delete(v, del, &self.origins) {
                None => {
                    let fields: Vec<(String, Value)> = row.0;
                    self.park_fields(tname, key, v, &fields, counted, None)?;
                }
                Some(conflict) => {
                    if let Some(c) = conflict {
                        let value = serde_json::to_string(&row).ok();
                        let detail = detail(&c, false);
                        self.conflict_raw(
                            c.kind.as_str(),
                            tname,
                            key_text,
                            None,
                            c.loser,
                            value,
                            Some(c.winner),
                            &detail,
                        )?;
                    }
                    if counted {
                        let _ = origin;
                        self.moved(v.origin, Outcome::Parked, Outcome::Superseded);
                    }
                }
            }
        }
        Ok(())
    }

    /// Records a conflict decided by the merge, with the loser's values.
    fn record_conflict(&mut self, cx: &Ctx, c: &Conflict, existing: Option<Row>) -> Result<(), Fail> {
        let (cols, mine) = match &c.lost {
            Lost::Incoming(cols) => (cols.clone(), true),
            Lost::Existing(cols) => (cols.clone(), false),
        };
        let value = if mine {
            if cx.fields.is_empty() {
                None
            } else {
                serde_json::to_string(&cx.fields_row(&cols)).ok()
            }
        } else {
            existing.and_then(|r| serde_json::to_string(&r).ok())
        };
        let col = match cols.as_slice() {
            [one] => cx.t.name_of(*one).map(str::to_owned),
            _ => None,
        };
        let detail = detail(c, cx.local);
        self.conflict_raw(
            c.kind.as_str(),
            &cx.t.name.clone(),
            &cx.key(),
            col.as_deref(),
            c.loser,
            value,
            Some(c.winner),
            &detail,
        )
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
        let lo = loser.map(|v| self.origins.name(v.origin).to_owned());
        let wo = winner.map(|v| self.origins.name(v.origin).to_owned());
        self.conn.execute(
            "INSERT INTO _ferry_conflicts (kind, tbl, key, col, loser_origin, loser_seq, loser_ts, loser_value,
             winner_origin, winner_seq, winner_ts, detail, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            args![
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
            ],
        )?;
        self.counts.conflicts += 1;
        Ok(())
    }

    fn quarantine_cx(&mut self, cx: &Ctx, kind: &str, reason: &str) -> Result<(), Fail> {
        self.quarantine(cx.v.origin, cx.e, cx.line, Some(&cx.key()), kind, reason)
    }

    /// Keeps a refused entry with its reason in `_ferry_quarantine`.
    pub fn quarantine(
        &mut self,
        origin: u32,
        e: &Entry,
        line: &[u8],
        key: Option<&str>,
        kind: &str,
        reason: &str,
    ) -> Result<(), Fail> {
        let name = self.origins.name(origin).to_owned();
        self.conn.execute(
            "INSERT INTO _ferry_quarantine (origin, seq, kind, tbl, reason, entry, recorded_at, key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![name, e.seq as i64, kind, e.table, reason, String::from_utf8_lossy(line), self.now, key],
        )?;
        Ok(())
    }
}

/// A sentence for a conflict record.
fn detail(c: &Conflict, local: bool) -> String {
    let clock = c.loser.is_some_and(|l| l.origin == c.winner.origin && l.seq > c.winner.seq);
    if clock {
        return "written later by the same origin but stamped earlier (its clock went back): the earlier-stamped \
                value was kept"
            .into();
    }
    let incoming = matches!(c.lost, Lost::Incoming(_));
    let s = match (c.kind, incoming, c.loser.is_none()) {
        (ConflictKind::RowExists, _, true) => {
            "insert of a key whose row was made in this database outside ferry: the row's values were replaced"
        }
        (ConflictKind::RowExists, true, _) => {
            "insert of a key another origin inserted later: the later insert's values won"
        }
        (ConflictKind::RowExists, false, _) => {
            "insert of a key another origin inserted earlier (two computers gave out the same id?): the earlier \
             insert's values were replaced"
        }
        (ConflictKind::Overwritten, _, true) => "value made in this database outside ferry, replaced by a write",
        (ConflictKind::Overwritten, true, _) => "value older than a write from another origin already applied",
        (ConflictKind::Overwritten, false, _) => "value replaced by a later write from another origin",
        (ConflictKind::RowMissing, true, _) => "write older than a delete of its row by another origin",
        (ConflictKind::RowMissing, false, _) => {
            "value written before a delete that arrived late; the row was inserted again after the delete"
        }
    };
    if local {
        format!("{s} (a local edit of this database)")
    } else {
        s.to_owned()
    }
}
