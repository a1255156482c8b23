//! Giving rows new integer ids, with every reference following: in the
//! app's tables (columns with a foreign key to them) and in the journal
//! (the entries' key and value columns). Used when rows numbered outside a
//! node's id block must move into it: a copied laptop's rows after a fork
//! (`ferry node reissue`), rows entered before tracking (`ferry track
//! --include-existing`). Inside the caller's transaction, with capture
//! switched off (`applying = 1`): a renumbering is not an edit to send.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::track::Layout;
use crate::schema::{quote, Table};

/// The layouts of `t` when its key is one INTEGER column, with the key's
/// position in each (`None` for any other table).
pub(crate) fn integer_key_layouts(all: &[(i64, Layout)], t: &Table) -> Option<Vec<(i64, usize)>> {
    let pk = t.pk_columns();
    if pk.len() != 1 || !pk[0].decl_type.eq_ignore_ascii_case("integer") {
        return None;
    }
    Some(all.iter().filter(|(_, l)| l.name == t.name && l.pk.len() == 1).map(|(tid, l)| (*tid, l.pk[0])).collect())
}

/// A renumbering being built: old id → new id per table, in a temporary
/// table `_ferry_renumber`.
pub(crate) struct Renumber {
    counts: BTreeMap<String, u64>,
}

impl Renumber {
    pub(crate) fn begin(conn: &Connection) -> rusqlite::Result<Renumber> {
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS _ferry_renumber (tbl TEXT NOT NULL, old INTEGER NOT NULL,
             new INTEGER NOT NULL, PRIMARY KEY (tbl, old)); DELETE FROM temp._ferry_renumber;",
        )?;
        Ok(Renumber { counts: BTreeMap::new() })
    }

    /// Gives the rows `ids` of `t` new ids in `block`, after the largest id
    /// already there.
    pub(crate) fn renumber(&mut self, conn: &Connection, t: &Table, ids: &[i64], block: u32) -> rusqlite::Result<()> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let k = quote(&t.pk_columns()[0].name);
        let floor = i64::from(block) << 32;
        let ceiling = (i64::from(block) + 1) << 32;
        let max: Option<i64> = conn.query_row(
            &format!("SELECT max({k}) FROM {} WHERE {k} >= ?1 AND {k} < ?2", quote(&t.name)),
            params![floor, ceiling],
            |r| r.get(0),
        )?;
        for (new_id, id) in (max.unwrap_or(floor) + 1..).zip(&ids) {
            conn.execute("INSERT INTO temp._ferry_renumber VALUES (?1, ?2, ?3)", params![t.name, id, new_id])?;
        }
        *self.counts.entry(t.name.clone()).or_default() += ids.len() as u64;
        Ok(())
    }

    /// Rows given new ids, per table.
    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.clone()
    }

    /// Carries the renumbering out: the rows, the columns of every table
    /// that refer to them, and the journal's values.
    pub(crate) fn apply(&self, conn: &Connection, tables: &[Table], layouts: &[(i64, Layout)]) -> rusqlite::Result<()> {
        let moved: BTreeSet<&str> = self.counts.keys().map(String::as_str).collect();
        if moved.is_empty() {
            return Ok(());
        }
        let set = |table: &str, column: &str, mapped: &str| {
            let c = quote(column);
            conn.execute(
                &format!(
                    "UPDATE {} SET {c} = (SELECT new FROM temp._ferry_renumber WHERE tbl = ?1 AND old = {c})
                     WHERE {c} IN (SELECT old FROM temp._ferry_renumber WHERE tbl = ?1)",
                    quote(table)
                ),
                [mapped],
            )
        };
        for t in tables.iter().filter(|t| moved.contains(t.name.as_str())) {
            set(&t.name, &t.pk_columns()[0].name, &t.name)?;
        }
        let mut refs: Vec<(String, String, String)> = Vec::new(); // (child table, column, parent table)
        for t in tables {
            let mut stmt = conn.prepare("SELECT \"table\", \"from\" FROM pragma_foreign_key_list(?1)")?;
            let rows = stmt.query_map([&t.name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for r in rows {
                let (parent, column) = r?;
                if moved.contains(parent.as_str()) {
                    refs.push((t.name.clone(), column, parent));
                }
            }
        }
        for (child, column, parent) in &refs {
            set(child, column, parent)?;
        }
        for (tid, l) in layouts {
            let mut columns: Vec<(String, &str)> = Vec::new(); // (journal column, table whose ids it holds)
            if let ([pos], true) = (l.pk.as_slice(), moved.contains(l.name.as_str())) {
                columns.push((format!("v{pos}"), &l.name));
                columns.push(("k0".into(), &l.name));
            }
            for (child, column, parent) in &refs {
                if *child == l.name {
                    if let Some(pos) = l.columns.iter().position(|c| c == column) {
                        columns.push((format!("v{pos}"), parent));
                    }
                    if let Some(j) = l.pk.iter().position(|&i| l.columns[i] == *column) {
                        columns.push((format!("k{j}"), parent));
                    }
                }
            }
            for (col, table) in columns {
                if !journal_has(conn, &col)? {
                    continue;
                }
                conn.execute(
                    &format!(
                        "UPDATE _ferry_journal SET {col} = (SELECT new FROM temp._ferry_renumber WHERE tbl = ?2 AND old = {col})
                         WHERE tid = ?1 AND {col} IN (SELECT old FROM temp._ferry_renumber WHERE tbl = ?2)"
                    ),
                    params![tid, table],
                )?;
            }
        }
        Ok(())
    }

    pub(crate) fn end(self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DROP TABLE IF EXISTS temp._ferry_renumber")
    }
}

fn journal_has(conn: &Connection, column: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT name FROM pragma_table_info('_ferry_journal') WHERE name = ?1", [column], |r| {
        r.get::<_, String>(0)
    })
    .optional()
    .map(|o| o.is_some())
}
