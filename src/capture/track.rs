//! Installing, refreshing, checking and removing capture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::{is_tracked, open_db, sql_err, CaptureError, CAPTURE_FORMAT};
use crate::node::Node;
use crate::schema::{self, quote, Table};

/// Django tables left out unless named with `--tables`: per-computer
/// bookkeeping (sessions, applied migrations, the admin's log) and rows whose
/// integer ids are made independently on every computer by `migrate`
/// (content types, permissions, and the two link tables that point at
/// permissions).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "django_session",
    "django_migrations",
    "django_admin_log",
    "django_content_type",
    "auth_permission",
    "auth_group_permissions",
    "auth_user_user_permissions",
];

/// Which tables `track` captures. `None` keeps the previous choice (or the
/// default, all tables except [`DEFAULT_EXCLUDES`], on first tracking).
#[derive(Debug, Clone, Default)]
pub struct TrackOptions {
    /// Only these tables (default excludes do not apply to tables named here).
    pub tables: Option<Vec<String>>,
    /// Leave these out (in addition to the default excludes when `tables` is `None`).
    pub exclude: Option<Vec<String>>,
    /// Journal the rows these tables held before tracking (all tracked
    /// tables when empty), so they reach the servers (see
    /// `super::existing`).
    pub include_existing: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Selection {
    tables: Option<Vec<String>>,
    exclude: Vec<String>,
}

/// What `track` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrackReport {
    pub db: String,
    pub origin: String,
    /// Whether capture was already installed (and was refreshed).
    pub refreshed: bool,
    pub tables: Vec<String>,
    pub excluded: Vec<String>,
    pub id_block: Option<u32>,
    /// AUTOINCREMENT tables whose `sqlite_sequence` was raised into this node's block, with the new value.
    pub sequences_raised: BTreeMap<String, i64>,
    pub warnings: Vec<String>,
    pub fingerprint: String,
    /// Per table, rows ferry has not journalled: they were there before
    /// tracking, and other nodes may not have them.
    pub existing: BTreeMap<String, u64>,
    /// Rows journalled now by `include_existing`, per table.
    pub included: BTreeMap<String, super::existing::Included>,
    /// Writes made while capture was off (after a migration), found and
    /// journalled now, per table.
    pub recovered: BTreeMap<String, super::existing::Recovered>,
    /// Tables whose capture was off but whose missed writes cannot be found
    /// (the journal was pruned).
    pub unchecked: Vec<String>,
}

/// Capture status of a database (`ferry track --status`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub db: String,
    pub tracked: bool,
    pub origin: Option<String>,
    pub tables: Vec<String>,
    /// Why capture is stale (empty when it is current).
    pub stale: Vec<String>,
    /// The last captured seq (0 when none).
    pub last_seq: u64,
    /// The last bundled seq (0 when none).
    pub bundled_seq: u64,
    /// Problems that make capture unsafe although it is current (ids above
    /// this node's block).
    pub problems: Vec<String>,
    /// What a refresh (`ferry track`) would improve.
    pub notes: Vec<String>,
    /// Per table, rows that were there before tracking and were never
    /// journalled (`ferry track --include-existing` sends them).
    pub existing: BTreeMap<String, u64>,
}

const CONTROL_SQL: &str = "
CREATE TABLE IF NOT EXISTS _ferry_control (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    applying INTEGER NOT NULL DEFAULT 0,
    format INTEGER NOT NULL,
    origin TEXT NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT '',
    selection TEXT NOT NULL DEFAULT '{}',
    tracked_at INTEGER NOT NULL DEFAULT 0,
    bundled_seq INTEGER NOT NULL DEFAULT 0,
    bundled_chain BLOB NOT NULL DEFAULT (zeroblob(32)),
    id_block INTEGER,
    clock_floor REAL NOT NULL DEFAULT 0,
    bundled_ts REAL
);
CREATE TABLE IF NOT EXISTS _ferry_tables (
    tid INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    columns TEXT NOT NULL,
    pk TEXT NOT NULL,
    tracked INTEGER NOT NULL,
    current INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry_journal (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    op INTEGER NOT NULL,
    tid INTEGER NOT NULL,
    mask TEXT
);
";

/// When a change is recorded: SQLite's clock as a Julian day number
/// (millisecond resolution; the cheapest form to compute per row; readers
/// convert with [`julian_to_micros`]). The time the entry carries is worked
/// out when it is read, in journal order (see [`super::stamp`]).
pub(crate) const TS_SQL: &str = "julianday('now')";

/// A `julianday('now')` value (SQLite computes it as integer milliseconds /
/// 86,400,000) as microseconds since the Unix epoch, rounded to the millisecond
/// it came from.
pub(crate) fn julian_to_micros(jd: f64) -> i64 {
    ((jd - 2_440_587.5) * 86_400_000.0).round() as i64 * 1000
}
/// The inverse of [`julian_to_micros`]: microseconds since the Unix epoch as
/// a Julian day number (exact to some 50 µs, far below capture's millisecond
/// steps).
pub(crate) fn micros_to_julian(us: i64) -> f64 {
    us as f64 / 86_400_000_000.0 + 2_440_587.5
}
const WHEN_SQL: &str = "(SELECT applying FROM _ferry_control) = 0";

/// One table layout as recorded in `_ferry_tables`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub name: String,
    pub columns: Vec<String>,
    /// Indexes into `columns`, in key order.
    pub pk: Vec<usize>,
    pub tracked: bool,
}

impl Layout {
    fn of(t: &Table, tracked: bool) -> Layout {
        let pk = t.pk_columns().iter().filter_map(|c| t.columns.iter().position(|x| x.name == c.name)).collect();
        Layout { name: t.name.clone(), columns: t.columns.iter().map(|c| c.name.clone()).collect(), pk, tracked }
    }
}

/// Installs capture into `db` for `node`, or refreshes it after a schema change.
pub fn track(node: &Node, db: &Path, opts: &TrackOptions) -> Result<TrackReport, CaptureError> {
    let p = db.display().to_string();
    let err = sql_err(&p);
    let mut conn = open_db(db)?;
    // Renumbering rows (--include-existing) updates references itself.
    conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(&err)?;
    // WAL lets `bundle create` read while the app writes. The mode is
    // persistent in the database file; every SQLite since 3.7 opens it.
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(&err)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
    let refreshed = is_tracked(&tx).map_err(&err)?;
    tx.execute_batch(CONTROL_SQL).map_err(&err)?;
    tx.execute_batch(super::stamp::FLOORS_SQL).map_err(&err)?;
    ensure_control_columns(&tx).map_err(&err)?;
    let origin = node.id().as_str().to_owned();
    let existing: Option<(String, i64, String)> = tx
        .query_row("SELECT origin, format, selection FROM _ferry_control WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(&err)?;
    let stored: Selection = match &existing {
        Some((o, _, _)) if *o != origin => {
            return Err(CaptureError::OtherOrigin { path: p.clone(), tracked_by: o.clone(), this: origin })
        }
        Some((_, f, _)) if *f > CAPTURE_FORMAT => return Err(CaptureError::NewerFormat { path: p.clone(), found: *f }),
        Some((_, _, s)) => serde_json::from_str(s).unwrap_or_default(),
        None => {
            tx.execute(
                "INSERT INTO _ferry_control (id, format, origin) VALUES (1, ?1, ?2)",
                params![CAPTURE_FORMAT, origin],
            )
            .map_err(&err)?;
            Selection::default()
        }
    };
    let selection = if opts.tables.is_some() || opts.exclude.is_some() {
        Selection { tables: opts.tables.clone(), exclude: opts.exclude.clone().unwrap_or_default() }
    } else {
        stored
    };

    let live = schema::tables(&tx).map_err(&err)?;
    let names: BTreeSet<&str> = live.iter().map(|t| t.name.as_str()).collect();
    // Names given now must exist; stored names may have been dropped by a migration since.
    for n in opts.tables.iter().flatten().chain(opts.exclude.iter().flatten()) {
        if !names.contains(n.as_str()) {
            return Err(CaptureError::NoSuchTable(n.clone()));
        }
    }
    let wanted = |t: &Table| -> bool {
        let excluded = selection.exclude.contains(&t.name);
        match &selection.tables {
            Some(list) => list.contains(&t.name) && !excluded,
            None => !excluded && !DEFAULT_EXCLUDES.contains(&t.name.as_str()),
        }
    };
    // Virtual tables (FTS, R*Tree…) cannot carry triggers, and their shadow
    // tables are SQLite's internals: neither is captured.
    let special: Vec<String> = {
        let mut st = tx
            .prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type IN ('virtual', 'shadow')")
            .map_err(&err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)?
    };
    let (tracked, excluded): (Vec<&Table>, Vec<&Table>) =
        live.iter().partition(|t| wanted(t) && !special.contains(&t.name));

    let no_pk: Vec<String> = tracked.iter().filter(|t| t.pk_columns().is_empty()).map(|t| t.name.clone()).collect();
    if !no_pk.is_empty() {
        return Err(CaptureError::NoPrimaryKey(no_pk));
    }
    let autoinc: Vec<String> = tracked.iter().filter(|t| t.autoincrement).map(|t| t.name.clone()).collect();
    let mut warnings: Vec<String> = live
        .iter()
        .filter(|t| special.contains(&t.name) && wanted(t))
        .map(|t| format!("{}: virtual table or its internal storage, not tracked", t.name))
        .collect();
    let mut sequences_raised = BTreeMap::new();
    match node.info.id_block {
        None if !autoinc.is_empty() => return Err(CaptureError::NoIdBlock(autoinc)),
        None => {}
        Some(block) => {
            let floor = i64::from(block) << 32;
            let ceiling = (i64::from(block) + 1) << 32;
            for name in &autoinc {
                let seq: Option<i64> = tx
                    .query_row("SELECT seq FROM sqlite_sequence WHERE name = ?1", [name], |r| r.get(0))
                    .optional()
                    .map_err(&err)?;
                match seq {
                    Some(s) if s >= ceiling => warnings.push(format!(
                        "{name}: ids already reach {s}, beyond this node's block {block} ({floor}..{ceiling}); new rows continue from there"
                    )),
                    Some(s) if s >= floor => {}
                    Some(_) => {
                        tx.execute("UPDATE sqlite_sequence SET seq = ?1 WHERE name = ?2", params![floor, name])
                            .map_err(&err)?;
                        sequences_raised.insert(name.clone(), floor);
                    }
                    None => {
                        tx.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)", params![name, floor])
                            .map_err(&err)?;
                        sequences_raised.insert(name.clone(), floor);
                    }
                }
            }
        }
    }
    if let Some(block) = node.info.id_block {
        warnings.extend(ids_above_block(&tx, tracked.iter().copied(), block).map_err(&err)?);
    }
    for t in &tracked {
        let pk = t.pk_columns();
        let integer_key = pk.len() == 1 && pk[0].decl_type.eq_ignore_ascii_case("integer");
        if integer_key && !t.autoincrement {
            warnings.push(format!(
                "{}: integer key without AUTOINCREMENT; SQLite reuses max(id)+1, so ids made on different computers may collide",
                t.name
            ));
        }
    }

    // What capture looked like before this refresh: the tables it tracked,
    // and those whose capture had gone stale (writes to them since may have
    // been missed, and are looked for below).
    tx.execute_batch(super::existing::BASELINE_SQL).map_err(&err)?;
    let tracked_before: BTreeSet<String> =
        current_layouts(&tx).map_err(&err)?.into_iter().filter(|(_, l)| l.tracked).map(|(_, l)| l.name).collect();
    let stale_before = stale_tables(&tx).map_err(&err)?;

    // Drop every capture trigger; the tracked set is recreated below.
    let triggers: Vec<String> = {
        let mut st = tx
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE '\\_ferry%' ESCAPE '\\'")
            .map_err(&err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)?
    };
    for t in triggers {
        tx.execute_batch(&format!("DROP TRIGGER {}", quote(&t))).map_err(&err)?;
    }

    // Record layouts: reuse an identical current one, else add a new tid.
    let current = current_layouts(&tx).map_err(&err)?;
    tx.execute("UPDATE _ferry_tables SET current = 0", []).map_err(&err)?;
    let (mut max_k, mut max_v) = (0usize, 0usize);
    let mut new_layouts: BTreeMap<String, (i64, Layout)> = BTreeMap::new();
    for t in &live {
        let is_tracked = tracked.iter().any(|x| x.name == t.name);
        let layout = Layout::of(t, is_tracked);
        let columns = serde_json::to_string(&layout.columns).unwrap_or_default();
        let pk = serde_json::to_string(&layout.pk).unwrap_or_default();
        let reuse = current
            .iter()
            .find(|(_, l)| l.name == layout.name && l.columns == layout.columns && l.pk == layout.pk)
            .map(|(tid, _)| *tid);
        let tid = match reuse {
            Some(tid) => {
                tx.execute(
                    "UPDATE _ferry_tables SET current = 1, tracked = ?2 WHERE tid = ?1",
                    params![tid, is_tracked],
                )
                .map_err(&err)?;
                tid
            }
            None => {
                tx.execute(
                    "INSERT INTO _ferry_tables (name, columns, pk, tracked, current) VALUES (?1, ?2, ?3, ?4, 1)",
                    params![layout.name, columns, pk, is_tracked],
                )
                .map_err(&err)?;
                tx.last_insert_rowid()
            }
        };
        if is_tracked {
            max_k = max_k.max(layout.pk.len());
            max_v = max_v.max(layout.columns.len());
            ensure_journal_columns(&tx, max_k, max_v).map_err(&err)?;
            tx.execute_batch(&trigger_sql(tid, &layout)).map_err(&err)?;
            new_layouts.insert(t.name.clone(), (tid, layout));
        }
    }

    // Writes made while capture was off are journalled now; rows a table
    // held before it was tracked are recorded (see `super::existing`).
    let mut recovered = BTreeMap::new();
    let mut unchecked = Vec::new();
    for t in &tracked {
        let Some((tid, layout)) = new_layouts.get(&t.name) else { continue };
        if !tracked_before.contains(&t.name) {
            super::existing::record_baseline(&tx, t).map_err(&err)?;
        } else if stale_before.contains(&t.name) {
            match super::existing::reconcile(&tx, &p, t, *tid, layout)? {
                Some(r) if r.inserted + r.updated + r.deleted > 0 => {
                    recovered.insert(t.name.clone(), r);
                }
                Some(_) => {}
                None => unchecked.push(t.name.clone()),
            }
        }
    }
    let mut included = BTreeMap::new();
    if let Some(which) = &opts.include_existing {
        let chosen: Vec<&Table> =
            tracked.iter().copied().filter(|t| which.is_empty() || which.contains(&t.name)).collect();
        let all_layouts = layouts(&tx, "").map_err(&err)?;
        let mut map = super::renumber::Renumber::begin(&tx).map_err(&err)?;
        let mut moved: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        if let Some(block) = node.info.id_block {
            for t in &chosen {
                let ids = super::existing::baseline_ids_below_blocks(&tx, t).map_err(&err)?;
                map.renumber(&tx, t, &ids, block).map_err(&err)?;
                moved.insert(t.name.clone(), ids);
            }
        }
        tx.execute("UPDATE _ferry_control SET applying = 1 WHERE id = 1", []).map_err(&err)?;
        map.apply(&tx, &live, &all_layouts).map_err(&err)?;
        tx.execute("UPDATE _ferry_control SET applying = 0 WHERE id = 1", []).map_err(&err)?;
        for t in &chosen {
            let Some((tid, layout)) = new_layouts.get(&t.name) else { continue };
            let new_ids: std::collections::HashMap<i64, i64> = {
                let mut stmt = tx.prepare("SELECT old, new FROM temp._ferry_renumber WHERE tbl = ?1").map_err(&err)?;
                let rows = stmt.query_map([&t.name], |r| Ok((r.get(0)?, r.get(1)?))).map_err(&err)?;
                rows.collect::<Result<_, _>>().map_err(&err)?
            };
            let rows = super::existing::journal_baseline(&tx, t, *tid, layout, &new_ids).map_err(&err)?;
            if rows > 0 {
                let renumbered = moved.get(&t.name).map_or(0, |v| v.len() as u64);
                included.insert(t.name.clone(), super::existing::Included { rows, renumbered });
            }
        }
        map.end(&tx).map_err(&err)?;
    }
    let existing = super::existing::baseline_counts(&tx).map_err(&err)?;

    // The clock floor a server's apply set holds for what is captured from
    // now on (triggers of format 2 read it themselves; format 3 stamps by
    // the floors recorded).
    let floor: f64 =
        tx.query_row("SELECT clock_floor FROM _ferry_control WHERE id = 1", [], |r| r.get(0)).map_err(&err)?;
    if floor > 0.0 {
        super::stamp::record_floor(&tx, floor).map_err(&err)?;
    }

    let fingerprint = schema::fingerprint(&tx).map_err(&err)?;
    let sel = serde_json::to_string(&selection).unwrap_or_default();
    tx.execute(
        "UPDATE _ferry_control SET fingerprint = ?1, selection = ?2, tracked_at = ?3, format = ?4, id_block = ?5
         WHERE id = 1",
        params![fingerprint, sel, crate::journal::Timestamp::now().0, CAPTURE_FORMAT, node.info.id_block],
    )
    .map_err(&err)?;
    crate::crashpoint::hit("track: capture installed, not yet committed");
    tx.commit().map_err(&err)?;
    Ok(TrackReport {
        db: p,
        origin,
        refreshed,
        tables: tracked.iter().map(|t| t.name.clone()).collect(),
        excluded: excluded.iter().map(|t| t.name.clone()).collect(),
        id_block: node.info.id_block,
        sequences_raised,
        warnings,
        fingerprint,
        existing,
        included,
        recovered,
        unchecked,
    })
}

/// Tracked tables whose capture is stale: columns or key changed, or a
/// trigger lost (see [`stale_reasons`]).
fn stale_tables(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    let known = current_layouts(conn)?;
    let mut out = BTreeSet::new();
    for t in schema::tables(conn)? {
        if let Some((_, l)) = known.iter().find(|(_, l)| l.name == t.name && l.tracked) {
            let now = Layout::of(&t, true);
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 AND name IN (?2, ?3, ?4)",
                params![
                    t.name,
                    trigger_name("ins", &t.name),
                    trigger_name("upd", &t.name),
                    trigger_name("del", &t.name)
                ],
                |r| r.get(0),
            )?;
            if now.columns != l.columns || now.pk != l.pk || n != 3 {
                out.insert(t.name.clone());
            }
        }
    }
    Ok(out)
}

/// Problems of tracked tables with integer keys holding ids above this
/// node's `block`: SQLite gives a new row max(id) + 1, so the next row
/// entered here would be numbered inside another node's block and collide
/// with that computer's rows.
fn ids_above_block<'a>(
    conn: &Connection,
    tables: impl Iterator<Item = &'a Table>,
    block: u32,
) -> rusqlite::Result<Vec<String>> {
    let ceiling = (i64::from(block) + 1) << 32;
    let mut out = Vec::new();
    for t in tables {
        let pk = t.pk_columns();
        if pk.len() != 1 || !pk[0].decl_type.eq_ignore_ascii_case("integer") {
            continue;
        }
        let max: Option<i64> =
            conn.query_row(&format!("SELECT max({}) FROM {}", quote(&pk[0].name), quote(&t.name)), [], |r| r.get(0))?;
        if let Some(max) = max.filter(|m| *m >= ceiling) {
            out.push(format!(
                "table {} holds row ids up to {max}, in id block {}, above this node's block {block}: the next row \
                 entered here would be numbered inside that block and collide with its computer's rows. Give this \
                 node a block above every other (`ferry node set-block N`, then `ferry track` again), or leave {} \
                 out of capture (`ferry track --exclude {}`)",
                t.name,
                max >> 32,
                t.name,
                t.name
            ));
        }
    }
    Ok(out)
}

/// The current layouts by tid.
pub(crate) fn current_layouts(conn: &Connection) -> rusqlite::Result<Vec<(i64, Layout)>> {
    layouts(conn, "WHERE current = 1")
}

/// Every layout ever recorded, by tid (journal rows refer to them).
pub(crate) fn layouts(conn: &Connection, filter: &str) -> rusqlite::Result<Vec<(i64, Layout)>> {
    let mut st = conn.prepare(&format!("SELECT tid, name, columns, pk, tracked FROM _ferry_tables {filter}"))?;
    let rows = st.query_map([], |r| {
        let columns: String = r.get(2)?;
        let pk: String = r.get(3)?;
        let bad =
            |e: serde_json::Error| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into());
        Ok((
            r.get(0)?,
            Layout {
                name: r.get(1)?,
                columns: serde_json::from_str(&columns).map_err(bad)?,
                pk: serde_json::from_str(&pk).map_err(bad)?,
                tracked: r.get(4)?,
            },
        ))
    })?;
    rows.collect()
}

/// Adds the `_ferry_control` columns a capture made by an older ferry lacks.
pub(crate) fn ensure_control_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (column, decl) in [("id_block", "INTEGER"), ("clock_floor", "REAL NOT NULL DEFAULT 0"), ("bundled_ts", "REAL")]
    {
        let has: bool = conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('_ferry_control') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE _ferry_control ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}

/// Adds `k`/`v` columns (no declared type: values are stored exactly) up to the counts given.
fn ensure_journal_columns(conn: &Connection, k: usize, v: usize) -> rusqlite::Result<()> {
    let mut st = conn.prepare("SELECT name FROM pragma_table_info('_ferry_journal')")?;
    let have: BTreeSet<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for (prefix, n) in [("k", k), ("v", v)] {
        for i in 0..n {
            let col = format!("{prefix}{i}");
            if !have.contains(&col) {
                conn.execute_batch(&format!("ALTER TABLE _ferry_journal ADD COLUMN {col}"))?;
            }
        }
    }
    Ok(())
}

fn trigger_name(kind: &str, table: &str) -> String {
    format!("_ferry_{kind}_{table}")
}

/// The three capture triggers of one table.
fn trigger_sql(tid: i64, l: &Layout) -> String {
    let t = quote(&l.name);
    let col = |prefix: &str, i: usize| format!("{prefix}.{}", quote(&l.columns[i]));
    let n = l.columns.len();
    let vs = (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>().join(", ");
    let ks = (0..l.pk.len()).map(|i| format!("k{i}")).collect::<Vec<_>>().join(", ");
    let old_pk = l.pk.iter().map(|&i| col("OLD", i)).collect::<Vec<_>>().join(", ");
    // A column changed when its value differs byte for byte (BINARY, whatever
    // the column's collation) or its storage class does (1 → 1.0).
    let changed = |i: usize| {
        let (o, nw) = (col("OLD", i), col("NEW", i));
        format!("({o} IS NOT {nw} COLLATE BINARY OR typeof({o}) <> typeof({nw}))")
    };
    let any_changed = (0..n).map(changed).collect::<Vec<_>>().join(" OR ");
    let key_changed = l.pk.iter().map(|&i| changed(i)).collect::<Vec<_>>().join(" OR ");
    let mask =
        (0..n).map(|i| format!("(CASE WHEN {} THEN '1' ELSE '0' END)", changed(i))).collect::<Vec<_>>().join(" || ");
    let new_vals = (0..n).map(|i| col("NEW", i)).collect::<Vec<_>>().join(", ");
    let changed_vals =
        (0..n).map(|i| format!("CASE WHEN {} THEN {} END", changed(i), col("NEW", i))).collect::<Vec<_>>().join(", ");
    format!(
        "CREATE TRIGGER {ins} AFTER INSERT ON {t} WHEN {WHEN_SQL} BEGIN
            INSERT INTO _ferry_journal (ts, op, tid, {vs}) VALUES ({TS_SQL}, 1, {tid}, {new_vals});
         END;
         CREATE TRIGGER {upd} AFTER UPDATE ON {t} WHEN {WHEN_SQL} AND NOT ({key_changed}) AND ({any_changed}) BEGIN
            INSERT INTO _ferry_journal (ts, op, tid, mask, {ks}, {vs}) VALUES ({TS_SQL}, 2, {tid}, {mask}, {old_pk}, {changed_vals});
         END;
         CREATE TRIGGER {key} AFTER UPDATE ON {t} WHEN {WHEN_SQL} AND ({key_changed}) BEGIN
            INSERT INTO _ferry_journal (ts, op, tid, {ks}) VALUES ({TS_SQL}, 3, {tid}, {old_pk});
            INSERT INTO _ferry_journal (ts, op, tid, {vs}) VALUES ({TS_SQL}, 1, {tid}, {new_vals});
         END;
         CREATE TRIGGER {del} AFTER DELETE ON {t} WHEN {WHEN_SQL} BEGIN
            INSERT INTO _ferry_journal (ts, op, tid, {ks}) VALUES ({TS_SQL}, 3, {tid}, {old_pk});
         END;",
        ins = quote(&trigger_name("ins", &l.name)),
        upd = quote(&trigger_name("upd", &l.name)),
        key = quote(&trigger_name("key", &l.name)),
        del = quote(&trigger_name("del", &l.name)),
    )
}

/// Whether capture in `conn` is current: every app table known, every
/// tracked table's columns unchanged and its triggers present.
pub(crate) fn stale_reasons(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let known = current_layouts(conn)?;
    let live = schema::tables(conn)?;
    let mut reasons = Vec::new();
    for t in &live {
        match known.iter().find(|(_, l)| l.name == t.name) {
            None => reasons.push(format!("table {} is new", t.name)),
            Some((_, l)) if l.tracked => {
                let now = Layout::of(t, true);
                if now.columns != l.columns || now.pk != l.pk {
                    let added: Vec<&str> =
                        now.columns.iter().filter(|c| !l.columns.contains(c)).map(String::as_str).collect();
                    let removed: Vec<&str> =
                        l.columns.iter().filter(|c| !now.columns.contains(c)).map(String::as_str).collect();
                    let mut what = Vec::new();
                    if !added.is_empty() {
                        what.push(format!("columns added: {}", added.join(", ")));
                    }
                    if !removed.is_empty() {
                        what.push(format!("columns removed: {}", removed.join(", ")));
                    }
                    if what.is_empty() {
                        what.push("columns or key reordered".into());
                    }
                    reasons.push(format!("table {}: {}", t.name, what.join(", ")));
                }
                let n: i64 = conn.query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 AND name IN (?2, ?3, ?4)",
                    params![t.name, trigger_name("ins", &t.name), trigger_name("upd", &t.name), trigger_name("del", &t.name)],
                    |r| r.get(0),
                )?;
                if n != 3 {
                    reasons.push(format!("table {} lost its capture triggers (rebuilt by a migration?)", t.name));
                }
            }
            Some(_) => {}
        }
    }
    for (_, l) in &known {
        if l.tracked && !live.iter().any(|t| t.name == l.name) {
            reasons.push(format!("table {} was dropped", l.name));
        }
    }
    Ok(reasons)
}

/// The capture status of `db`.
pub fn status(db: &Path) -> Result<Status, CaptureError> {
    let p = db.display().to_string();
    let err = sql_err(&p);
    let conn = open_db(db)?;
    if !is_tracked(&conn).map_err(&err)? {
        return Ok(Status {
            db: p,
            tracked: false,
            origin: None,
            tables: Vec::new(),
            stale: Vec::new(),
            last_seq: 0,
            bundled_seq: 0,
            problems: Vec::new(),
            notes: Vec::new(),
            existing: BTreeMap::new(),
        });
    }
    let (origin, format): (String, i64) = conn
        .query_row("SELECT origin, format FROM _ferry_control", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(&err)?;
    let tables: Vec<String> =
        current_layouts(&conn).map_err(&err)?.into_iter().filter(|(_, l)| l.tracked).map(|(_, l)| l.name).collect();
    let stale = stale_reasons(&conn).map_err(&err)?;
    let last_seq: i64 =
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM _ferry_journal", [], |r| r.get(0)).map_err(&err)?;
    let (bundled_seq, _) = super::watermark(&conn).map_err(&err)?;
    let mut notes = Vec::new();
    if format < 2 {
        notes.push(format!(
            "capture was installed by an older ferry (format {format}): key changes are journalled in the old form \
             and entries may be stamped out of order after the clock is put back; run `ferry track {p}` to refresh it"
        ));
    } else if format < CAPTURE_FORMAT {
        notes.push(format!(
            "capture was installed by an older ferry (format {format}), whose triggers cost the app more per write; \
             run `ferry track {p}` to refresh it"
        ));
    }
    let has_block: bool = conn
        .query_row("SELECT count(*) > 0 FROM pragma_table_info('_ferry_control') WHERE name = 'id_block'", [], |r| {
            r.get(0)
        })
        .map_err(&err)?;
    let block: Option<i64> = if has_block {
        conn.query_row("SELECT id_block FROM _ferry_control", [], |r| r.get(0)).map_err(&err)?
    } else {
        None
    };
    let problems = match block.and_then(|b| u32::try_from(b).ok()) {
        Some(block) => {
            let live = schema::tables(&conn).map_err(&err)?;
            ids_above_block(&conn, live.iter().filter(|t| tables.contains(&t.name)), block).map_err(&err)?
        }
        None => Vec::new(),
    };
    Ok(Status {
        db: p,
        tracked: true,
        origin: Some(origin),
        tables,
        stale,
        last_seq: last_seq as u64,
        bundled_seq,
        problems,
        notes,
        existing: super::existing::baseline_counts(&conn).map_err(&err)?,
    })
}

/// Removes every trigger and table ferry added (and its `sqlite_sequence`
/// row). The app's rows are untouched; AUTOINCREMENT counters raised into
/// the node's id block stay raised, so no id is ever handed out twice.
/// Returns whether anything was removed.
pub fn untrack(db: &Path, discard_unsent: bool) -> Result<bool, CaptureError> {
    let p = db.display().to_string();
    let err = sql_err(&p);
    let mut conn = open_db(db)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
    if is_tracked(&tx).map_err(&err)? && !discard_unsent {
        let last: i64 =
            tx.query_row("SELECT coalesce(max(seq), 0) FROM _ferry_journal", [], |r| r.get(0)).map_err(&err)?;
        let (bundled, _) = super::watermark(&tx).map_err(&err)?;
        if last as u64 > bundled {
            return Err(CaptureError::Unsent { path: p, first: bundled + 1, last: last as u64 });
        }
    }
    // Capture's objects only: the ledger of a database bundles were applied
    // to (a server that also tracks) stays, or a later apply would forget
    // what it applied and which writes lost.
    let objects: Vec<(String, String)> = {
        let mut st = tx
            .prepare(
                "SELECT type, name FROM sqlite_schema WHERE (type = 'trigger' AND name LIKE '\\_ferry%' ESCAPE '\\')
                 OR (type = 'table' AND name IN ('_ferry_control', '_ferry_tables', '_ferry_journal', '_ferry_baseline', '_ferry_floors'))
                 ORDER BY type = 'table'",
            )
            .map_err(&err)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)?
    };
    for (kind, name) in &objects {
        let kw = if kind == "trigger" { "TRIGGER" } else { "TABLE" };
        tx.execute_batch(&format!("DROP {kw} IF EXISTS {}", quote(name))).map_err(&err)?;
    }
    let has_seq: bool = tx
        .query_row("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'", [], |_| Ok(()))
        .optional()
        .map_err(&err)?
        .is_some();
    if has_seq {
        tx.execute("DELETE FROM sqlite_sequence WHERE name LIKE '\\_ferry%' ESCAPE '\\'", []).map_err(&err)?;
    }
    crate::crashpoint::hit("untrack: capture removed, not yet committed");
    tx.commit().map_err(&err)?;
    Ok(!objects.is_empty())
}
