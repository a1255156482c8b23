//! What apply knows about a target table, read from the target's own schema
//! only: key columns and their affinities, columns, defaults, unique indexes
//! and foreign keys. Identifiers in SQL come from here and are quoted.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::apply::session::{self, Dialect, Session};
use crate::apply::types::ColumnType;

use crate::schema::{self, quote};
use crate::value::Value;

/// A column's type affinity, by SQLite's rules (section 3.1 of "Datatypes In
/// SQLite"), as far as keys need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Affinity {
    Integer,
    Text,
    Other,
}

impl Affinity {
    pub(crate) fn of(decl_type: &str) -> Affinity {
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
    pub(crate) fn key_value(self, v: &Value) -> Value {
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

/// A unique index other than the primary key.
#[derive(Debug, Clone)]
pub struct UniqueIndex {
    pub name: String,
    pub columns: Vec<String>,
}

/// A foreign key of a table: `columns` reference `parent_columns` of `parent`.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub parent: String,
    pub columns: Vec<String>,
    /// Empty when the reference names no columns (the parent's primary key).
    pub parent_columns: Vec<String>,
}

/// A target table, from the local schema only.
#[derive(Debug)]
pub struct TableInfo {
    pub name: String,
    pub quoted: String,
    /// Key columns in key order; `rowid` for tables without a declared key.
    pub key: Vec<String>,
    /// Their type affinities (see [`Affinity::key_value`]).
    pub(crate) key_affinity: Vec<Affinity>,
    pub columns: Vec<String>,
    /// Column → default value (NULL when none or not a constant).
    pub defaults: HashMap<String, Value>,
    /// `"k1" = ?1 AND "k2" = ?2`.
    pub key_where: String,
    pub uniques: Vec<UniqueIndex>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Declared `INTEGER PRIMARY KEY` (or keyed by `rowid`): the database
    /// can assign a key, and ids come in blocks.
    pub integer_key: bool,
    /// Column → its number in ledger row states ([`crate::apply::ledger::column_numbers`];
    /// filled in by the engine, see [`TableInfo::set_numbers`]).
    pub(crate) numbers: Vec<(String, u32)>,
    /// On a server, each column's type (values are checked against it
    /// before they are written: [`crate::apply::types::fits`]).
    pub types: HashMap<String, ColumnType>,
    /// Every column name (and `rowid` for a table keyed by it) → its number
    /// ([`UNNUMBERED`] until the engine sets them): each entry looks up
    /// each of its columns, so a wide table must not cost a scan per column.
    index: HashMap<String, u32>,
}

/// The number of a column that has none (never happens once the ledger is
/// prepared: the engine checks every column of the target has one).
pub(crate) const UNNUMBERED: u32 = u32::MAX;

impl TableInfo {
    pub fn has_column(&self, c: &str) -> bool {
        self.index.contains_key(c)
    }
    pub fn is_key(&self, c: &str) -> bool {
        self.key.iter().any(|k| k == c)
    }
    /// The ledger number of column `c`.
    pub(crate) fn no(&self, c: &str) -> u32 {
        self.index.get(c).copied().unwrap_or(UNNUMBERED)
    }
    /// Sets the ledger numbers of the columns (those of columns the table
    /// no longer has are dropped).
    pub(crate) fn set_numbers(&mut self, mut numbers: Vec<(String, u32)>) {
        let columns = &self.columns;
        numbers.retain(|(n, _)| columns.contains(n));
        for (n, no) in &numbers {
            self.index.insert(n.clone(), *no);
        }
        self.numbers = numbers;
    }
    /// The column index of a table with `columns` keyed by `key`.
    fn column_index(columns: &[String], key: &[String]) -> HashMap<String, u32> {
        let mut index: HashMap<String, u32> = columns.iter().map(|c| (c.clone(), UNNUMBERED)).collect();
        if key == ["rowid"] {
            index.insert("rowid".to_owned(), UNNUMBERED);
        }
        index
    }
    /// The column with ledger number `no`, if the table still has it.
    pub(crate) fn name_of(&self, no: u32) -> Option<&str> {
        self.numbers.iter().find(|(_, x)| *x == no).map(|(n, _)| n.as_str())
    }
    /// A column name as SQL (`rowid` is not quoted: it names the rowid).
    pub(crate) fn sql_name(c: &str) -> String {
        if c == "rowid" {
            "rowid".into()
        } else {
            quote(c)
        }
    }
    /// Every column a row has, key columns first when the key is `rowid`.
    pub(crate) fn row_columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if self.key == ["rowid"] {
            out.push("rowid");
        }
        out.extend(self.columns.iter().map(String::as_str));
        out
    }
}

/// Loads the target's tables ferry may write (never ferry's or SQLite's
/// own, never virtual tables or their shadow tables).
pub fn load_tables(conn: &Connection) -> rusqlite::Result<HashMap<String, TableInfo>> {
    let unwritable = schema::unwritable_tables(conn)?;
    let mut out = HashMap::new();
    for t in schema::tables(conn)? {
        if unwritable.contains_key(&t.name) {
            continue;
        }
        let mut key: Vec<String> = t.pk_columns().iter().map(|c| c.name.clone()).collect();
        let mut key_affinity: Vec<Affinity> = t.pk_columns().iter().map(|c| Affinity::of(&c.decl_type)).collect();
        let integer_key = match t.pk_columns().as_slice() {
            [] => true,
            [c] => c.decl_type.eq_ignore_ascii_case("integer"),
            _ => false,
        };
        if key.is_empty() {
            key.push("rowid".into());
            key_affinity.push(Affinity::Integer);
        }
        let key_where = key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} = ?{}", TableInfo::sql_name(k), i + 1))
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
        let uniques = unique_indexes(conn, &t.name)?;
        let foreign_keys = foreign_keys(conn, &t.name)?;
        let columns: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        out.insert(
            t.name.clone(),
            TableInfo {
                index: TableInfo::column_index(&columns, &key),
                quoted: quote(&t.name),
                name: t.name.clone(),
                key,
                key_affinity,
                columns,
                defaults,
                key_where,
                uniques,
                foreign_keys,
                integer_key,
                numbers: Vec::new(),
                types: HashMap::new(),
            },
        );
    }
    Ok(out)
}

/// A PostgreSQL column default as a value, when it is a constant: a number,
/// a quoted text (with its cast), a boolean. Anything else (a sequence's
/// `nextval`, `now()`) falls back to NULL, as on SQLite.
fn pg_default(d: &str) -> Value {
    let d = d.trim();
    if let Ok(i) = d.trim_matches(|c| c == '(' || c == ')').parse::<i64>() {
        return Value::Integer(i);
    }
    match d {
        "true" => return Value::Integer(1),
        "false" => return Value::Integer(0),
        _ => {}
    }
    if let Some(rest) = d.strip_prefix('\'') {
        if let Some(end) = rest.rfind('\'') {
            let (text, cast) = (&rest[..end], &rest[end + 1..]);
            if cast.is_empty() || cast.starts_with("::") {
                let text = text.replace("''", "'");
                let numeric = cast.starts_with("::numeric") || cast.contains("integer") || cast.contains("int");
                if let (true, Ok(i)) = (numeric, text.parse::<i64>()) {
                    return Value::Integer(i);
                }
                return Value::Text(text);
            }
        }
    }
    Value::Null
}

/// Loads a server target's tables from its catalogue: columns with their
/// types, primary key, unique indexes on plain columns and foreign keys
/// (see [`load_tables`] for SQLite). A table without a primary key is left
/// out (ferry cannot name its rows); its entries are quarantined like those
/// of a table the target lacks.
pub fn load_server_tables(conn: &dyn Session) -> session::Result<HashMap<String, TableInfo>> {
    let pg = conn.dialect() == Dialect::Postgres;
    let mut columns: HashMap<String, Vec<(String, ColumnType)>> = HashMap::new();
    let mut defaults: HashMap<String, HashMap<String, Value>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let sql = if pg {
        "SELECT table_name::text, column_name::text, data_type::text, character_maximum_length::int8,
                numeric_precision::int8, numeric_scale::int8, column_default::text
         FROM information_schema.columns c
         WHERE table_schema = current_schema()
           AND table_name IN (SELECT table_name FROM information_schema.tables
                              WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')
         ORDER BY table_name, ordinal_position"
    } else {
        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(column_type AS CHAR),
                character_maximum_length, numeric_precision, numeric_scale
         FROM information_schema.columns
         WHERE table_schema = DATABASE()
           AND table_name IN (SELECT table_name FROM information_schema.tables
                              WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE')
         ORDER BY table_name, ordinal_position"
    };
    let checks: Vec<(String, String)> = if pg {
        Vec::new()
    } else {
        conn.query(
            "SELECT CAST(table_name AS CHAR), CAST(check_clause AS CHAR)
             FROM information_schema.check_constraints WHERE constraint_schema = DATABASE()",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?)))
        .collect::<session::Result<_>>()?
    };
    for r in conn.query(sql, &[])? {
        let table: String = r.get(0)?;
        if crate::schema::is_internal(&table) {
            continue;
        }
        let col: String = r.get(1)?;
        let ty = if pg {
            ColumnType::of_postgres(&r.get::<String>(2)?, r.get(3)?, r.get(4)?, r.get(5)?)
        } else {
            let n = |i: usize| -> session::Result<Option<u64>> {
                Ok(r.get::<Option<i64>>(i)?.and_then(|v| u64::try_from(v).ok()))
            };
            let json = checks.iter().any(|(t, clause)| {
                *t == table && clause.contains("json_valid") && clause.contains(&format!("`{col}`"))
            });
            ColumnType::of_mysql(&r.get::<String>(2)?, &r.get::<String>(3)?, n(4)?, n(5)?, n(6)?, json)
        };
        if !columns.contains_key(&table) {
            order.push(table.clone());
        }
        if pg {
            let dflt = r.get::<Option<String>>(6)?.map_or(Value::Null, |d| pg_default(&d));
            defaults.entry(table.clone()).or_default().insert(col.clone(), dflt);
        }
        columns.entry(table).or_default().push((col, ty));
    }
    let keys_sql = if pg {
        "SELECT k.table_name::text, k.column_name::text
         FROM information_schema.table_constraints t
         JOIN information_schema.key_column_usage k
           ON k.constraint_name = t.constraint_name AND k.table_schema = t.table_schema AND k.table_name = t.table_name
         WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_schema = current_schema()
         ORDER BY k.table_name, k.ordinal_position"
    } else {
        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR)
         FROM information_schema.key_column_usage
         WHERE table_schema = DATABASE() AND constraint_name = 'PRIMARY'
         ORDER BY table_name, ordinal_position"
    };
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for r in conn.query(keys_sql, &[])? {
        keys.entry(r.get(0)?).or_default().push(r.get(1)?);
    }
    // Unique indexes on plain columns, the primary key and partial ones left out.
    let uniques_sql = if pg {
        "SELECT c.relname::text, i.relname::text,
                (SELECT string_agg(a.attname::text, chr(31) ORDER BY k.o)
                 FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o)
                 JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n)
         FROM pg_index x
         JOIN pg_class c ON c.oid = x.indrelid
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_namespace ns ON ns.oid = c.relnamespace
         WHERE ns.nspname = current_schema() AND x.indisunique AND NOT x.indisprimary
           AND x.indpred IS NULL AND x.indexprs IS NULL
         ORDER BY 1, 2"
    } else {
        "SELECT CAST(table_name AS CHAR), CAST(index_name AS CHAR),
                CAST(GROUP_CONCAT(column_name ORDER BY seq_in_index SEPARATOR 0x1f) AS CHAR)
         FROM information_schema.statistics
         WHERE table_schema = DATABASE() AND non_unique = 0 AND index_name <> 'PRIMARY'
         GROUP BY table_name, index_name
         HAVING count(*) = count(column_name)
         ORDER BY 1, 2"
    };
    let mut uniques: HashMap<String, Vec<UniqueIndex>> = HashMap::new();
    for r in conn.query(uniques_sql, &[])? {
        let Some(cols) = r.get::<Option<String>>(2)? else { continue };
        let columns = cols.split('\u{1f}').map(str::to_owned).collect();
        uniques.entry(r.get(0)?).or_default().push(UniqueIndex { name: r.get(1)?, columns });
    }
    let fks_sql = if pg {
        "SELECT c.relname::text, p.relname::text,
                (SELECT string_agg(a.attname::text, chr(31) ORDER BY k.o)
                 FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
                (SELECT string_agg(a.attname::text, chr(31) ORDER BY k.o)
                 FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)
         FROM pg_constraint con
         JOIN pg_class c ON c.oid = con.conrelid
         JOIN pg_class p ON p.oid = con.confrelid
         JOIN pg_namespace ns ON ns.oid = c.relnamespace
         WHERE con.contype = 'f' AND ns.nspname = current_schema()
         ORDER BY 1, con.conname"
    } else {
        "SELECT CAST(table_name AS CHAR), CAST(referenced_table_name AS CHAR),
                CAST(GROUP_CONCAT(column_name ORDER BY ordinal_position SEPARATOR 0x1f) AS CHAR),
                CAST(GROUP_CONCAT(referenced_column_name ORDER BY ordinal_position SEPARATOR 0x1f) AS CHAR)
         FROM information_schema.key_column_usage
         WHERE table_schema = DATABASE() AND referenced_table_name IS NOT NULL
         GROUP BY table_name, constraint_name, referenced_table_name
         ORDER BY 1, constraint_name"
    };
    let mut fks: HashMap<String, Vec<ForeignKey>> = HashMap::new();
    for r in conn.query(fks_sql, &[])? {
        let split = |i: usize| -> session::Result<Vec<String>> {
            Ok(r.get::<Option<String>>(i)?.map(|s| s.split('\u{1f}').map(str::to_owned).collect()).unwrap_or_default())
        };
        fks.entry(r.get(0)?).or_default().push(ForeignKey {
            parent: r.get(1)?,
            columns: split(2)?,
            parent_columns: split(3)?,
        });
    }
    let mut out = HashMap::new();
    for name in order {
        let Some(cols) = columns.remove(&name) else { continue };
        let Some(key) = keys.remove(&name) else { continue };
        let types: HashMap<String, ColumnType> = cols.iter().cloned().collect();
        let key_affinity = key
            .iter()
            .map(|k| match types.get(k) {
                Some(ColumnType::Integer { .. }) => Affinity::Integer,
                Some(ColumnType::Text { .. } | ColumnType::Uuid) => Affinity::Text,
                _ => Affinity::Other,
            })
            .collect::<Vec<_>>();
        let integer_key = key.len() == 1 && key_affinity[0] == Affinity::Integer;
        let key_where =
            key.iter().enumerate().map(|(i, k)| format!("{} = ?{}", quote(k), i + 1)).collect::<Vec<_>>().join(" AND ");
        let columns: Vec<String> = cols.into_iter().map(|(c, _)| c).collect();
        out.insert(
            name.clone(),
            TableInfo {
                index: TableInfo::column_index(&columns, &key),
                quoted: quote(&name),
                defaults: {
                    let mut d = defaults.remove(&name).unwrap_or_default();
                    for c in &columns {
                        d.entry(c.clone()).or_insert(Value::Null);
                    }
                    d
                },
                uniques: uniques.remove(&name).unwrap_or_default(),
                foreign_keys: fks.remove(&name).unwrap_or_default(),
                name,
                key,
                key_affinity,
                columns,
                key_where,
                integer_key,
                numbers: Vec::new(),
                types,
            },
        );
    }
    Ok(out)
}

/// The table's unique indexes other than its primary key, on plain columns
/// (an index on expressions or with a WHERE clause is left to the database:
/// a clash on it holds the incoming row).
fn unique_indexes(conn: &Connection, table: &str) -> rusqlite::Result<Vec<UniqueIndex>> {
    let mut stmt = conn.prepare("SELECT name, origin, partial FROM pragma_index_list(?1) WHERE \"unique\" = 1")?;
    let list: Vec<(String, String, i64)> =
        stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (name, origin, partial) in list {
        if origin == "pk" || partial != 0 {
            continue;
        }
        let mut cols = conn.prepare("SELECT cid, name FROM pragma_index_info(?1) ORDER BY seqno")?;
        let columns: Vec<(i64, Option<String>)> =
            cols.query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        if columns.iter().any(|(cid, n)| *cid < 0 || n.is_none()) {
            continue;
        }
        out.push(UniqueIndex { name, columns: columns.into_iter().filter_map(|(_, n)| n).collect() });
    }
    Ok(out)
}

fn foreign_keys(conn: &Connection, table: &str) -> rusqlite::Result<Vec<ForeignKey>> {
    let mut stmt =
        conn.prepare("SELECT id, seq, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq")?;
    let rows: Vec<(i64, String, String, Option<String>)> =
        stmt.query_map([table], |r| Ok((r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect::<Result<_, _>>()?;
    let mut out: Vec<(i64, ForeignKey)> = Vec::new();
    for (id, parent, from, to) in rows {
        match out.last_mut() {
            Some((last, fk)) if *last == id => {
                fk.columns.push(from);
                fk.parent_columns.extend(to);
            }
            _ => out.push((id, ForeignKey { parent, columns: vec![from], parent_columns: to.into_iter().collect() })),
        }
    }
    Ok(out.into_iter().map(|(_, fk)| fk).collect())
}
