//! The shape of an app database: its tables, columns and keys, and a
//! fingerprint of it that travels in every segment.
//!
//! The fingerprint is the SHA-256 (hex) of one line per column,
//! `table \t column \t declared type \t notnull \t pk position \n`, over every
//! table except SQLite's own (`sqlite_%`) and ferry's (`_ferry_%`), tables
//! sorted by name and columns in declaration order. Two databases made by the
//! same migrations have the same fingerprint.

use rusqlite::Connection;
use sha2::{Digest, Sha256};

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub decl_type: String,
    pub notnull: bool,
    /// 1-based position in the primary key, 0 when not part of it.
    pub pk: u32,
}

/// One table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Declared with AUTOINCREMENT (has a `sqlite_sequence` row).
    pub autoincrement: bool,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
    /// Primary-key columns in key order.
    pub fn pk_columns(&self) -> Vec<&Column> {
        let mut pk: Vec<&Column> = self.columns.iter().filter(|c| c.pk > 0).collect();
        pk.sort_by_key(|c| c.pk);
        pk
    }
}

/// Whether a table is internal to SQLite or ferry (never fingerprinted or captured).
pub fn is_internal(name: &str) -> bool {
    name.starts_with("sqlite_") || name.starts_with("_ferry")
}

/// The app's tables (not SQLite's, not ferry's), sorted by name.
pub fn tables(conn: &Connection) -> rusqlite::Result<Vec<Table>> {
    let mut stmt = conn.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'table' ORDER BY name")?;
    let rows: Vec<(String, Option<String>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (name, sql) in rows {
        if is_internal(&name) {
            continue;
        }
        let mut cols = conn.prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid")?;
        let columns = cols
            .query_map([&name], |r| {
                Ok(Column {
                    name: r.get(0)?,
                    decl_type: r.get(1)?,
                    notnull: r.get::<_, i64>(2)? != 0,
                    pk: r.get::<_, i64>(3)? as u32,
                })
            })?
            .collect::<Result<_, _>>()?;
        let autoincrement = sql.is_some_and(|s| s.to_ascii_uppercase().contains("AUTOINCREMENT"));
        out.push(Table { name, columns, autoincrement });
    }
    Ok(out)
}

/// Tables of `conn` that ferry must never write, with why: virtual tables
/// (full-text indexes, R*Trees: SQLite computes them) and their internal
/// shadow tables (writing those corrupts the index).
pub fn unwritable_tables(conn: &Connection) -> rusqlite::Result<std::collections::HashMap<String, &'static str>> {
    let mut stmt = conn
        .prepare("SELECT name, type FROM pragma_table_list WHERE schema = 'main' AND type IN ('virtual', 'shadow')")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = std::collections::HashMap::new();
    for r in rows {
        let (name, kind) = r?;
        let why = if kind == "virtual" {
            "a virtual table (such as a full-text index), which SQLite fills itself"
        } else {
            "the internal storage of a virtual table (such as a full-text index), which SQLite fills itself"
        };
        out.insert(name, why);
    }
    Ok(out)
}

/// The schema fingerprint (see the module docs).
pub fn fingerprint(conn: &Connection) -> rusqlite::Result<String> {
    let mut h = Sha256::new();
    for t in tables(conn)? {
        for c in &t.columns {
            h.update(format!("{}\t{}\t{}\t{}\t{}\n", t.name, c.name, c.decl_type, u8::from(c.notnull), c.pk));
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Quotes an identifier for SQL: `"name"` with inner quotes doubled. Names
/// must come from the local schema (see [`tables`]); quoting is the second
/// line of defence, not the first.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_tracks_columns_and_ignores_ferry_tables() {
        let c = Connection::open_in_memory().expect("db");
        c.execute_batch("CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, x TEXT)").expect("ddl");
        let f1 = fingerprint(&c).expect("fp");
        c.execute_batch("CREATE TABLE _ferry_journal (seq INTEGER PRIMARY KEY)").expect("ddl");
        assert_eq!(fingerprint(&c).expect("fp"), f1);
        c.execute_batch("ALTER TABLE a ADD COLUMN y INTEGER").expect("ddl");
        assert_ne!(fingerprint(&c).expect("fp"), f1);
        let t = tables(&c).expect("tables");
        assert!(t[0].autoincrement);
        assert_eq!(t[0].pk_columns()[0].name, "id");
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
    }
}
