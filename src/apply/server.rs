//! Talking to a PostgreSQL or MariaDB/MySQL server: connecting with what
//! the [`crate::target::Server`] URL and the engine's password sources
//! give, and reading the target's tables and column types
//! (`information_schema`) for [`crate::apply::check_against`]. Messages
//! name the server by its URL without the password.

use std::collections::HashMap;
use std::time::Duration;

use crate::target::{Host, Kind, Server};

use super::engine::TableInfo;
use super::session::{self, Dialect, PgSession, Session};
use super::types::ColumnType;
use crate::args;

/// A connection to a server target.
pub enum Conn {
    Postgres(Box<postgres::Client>),
    Mysql(Box<mysql::Conn>),
}

/// A failure talking to a server; never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "failed to connect to the {kind} server {target}: {cause}. Check the server runs and the URL's host, port, \
         user and database are right; a password comes from the URL, {pwhint}"
    )]
    Connect { kind: &'static str, target: String, cause: String, pwhint: &'static str },
    #[error("failed to read the tables of {target}: {cause}")]
    Query { target: String, cause: String },
    #[error(
        "ferry does not apply to {kind} servers yet ({target}): `bundle apply`, `status --db` and `conflicts --db` \
         work with SQLite files and PostgreSQL so far; `ferry bundle verify --against URL` checks bundles against \
         this server (docs/APPLY.md, \"Engines\")"
    )]
    NotYet { kind: &'static str, target: String },
}

/// One table of a server target, as apply needs it.
#[derive(Debug, Clone)]
pub struct ServerTable {
    pub name: String,
    /// Columns in order, with their types.
    pub columns: Vec<(String, ColumnType)>,
    /// Primary key columns in key order.
    pub key: Vec<String>,
}

impl ServerTable {
    pub fn column(&self, name: &str) -> Option<&ColumnType> {
        self.columns.iter().find(|(c, _)| c == name).map(|(_, t)| t)
    }
}

/// Connects to `s`.
pub fn connect(s: &Server) -> Result<Conn, ServerError> {
    let fail = |cause: String| ServerError::Connect {
        kind: s.kind.name(),
        target: s.to_string(),
        cause,
        pwhint: match s.kind {
            Kind::Postgres => "PGPASSWORD or ~/.pgpass",
            Kind::Mysql => "MYSQL_PWD or ~/.my.cnf",
        },
    };
    match s.kind {
        Kind::Postgres => {
            let mut c = postgres::Config::new();
            c.user(&s.user).dbname(&s.database).port(s.port).connect_timeout(Duration::from_secs(10));
            c.application_name("ferry");
            if let Some(p) = s.password() {
                c.password(p);
            }
            match &s.host {
                Host::Tcp(h) => {
                    c.host(h);
                }
                #[cfg(unix)]
                Host::Socket(p) => {
                    c.host_path(p);
                }
                #[cfg(not(unix))]
                Host::Socket(_) => return Err(fail("Unix sockets exist only on Linux and macOS".into())),
            }
            let client = c.connect(postgres::NoTls).map_err(|e| fail(pg_error(&e)))?;
            Ok(Conn::Postgres(Box::new(client)))
        }
        Kind::Mysql => {
            let mut o = mysql::OptsBuilder::new()
                .user(Some(&s.user))
                .pass(s.password())
                .db_name(Some(&s.database))
                .tcp_port(s.port)
                .tcp_connect_timeout(Some(Duration::from_secs(10)));
            o = match &s.host {
                Host::Tcp(h) => o.ip_or_hostname(Some(h.as_str())).prefer_socket(false),
                Host::Socket(p) => o.socket(Some(p.display().to_string())),
            };
            let conn = mysql::Conn::new(o).map_err(|e| fail(e.to_string()))?;
            Ok(Conn::Mysql(Box::new(conn)))
        }
    }
}

/// Connects to `s` for applying: a session ferry's engine writes through.
pub fn session(s: &Server) -> Result<Box<dyn Session>, ServerError> {
    match connect(s)? {
        Conn::Postgres(c) => Ok(Box::new(PgSession::new(*c))),
        Conn::Mysql(_) => Err(ServerError::NotYet { kind: s.kind.name(), target: s.to_string() }),
    }
}

/// Starts the apply run's transaction. Foreign keys declared deferrable
/// (Django's) are checked at commit, after held rows were settled.
pub fn begin(conn: &dyn Session) -> session::Result<()> {
    match conn.dialect() {
        Dialect::Postgres => conn.batch("BEGIN ISOLATION LEVEL READ COMMITTED; SET CONSTRAINTS ALL DEFERRED"),
        _ => conn.batch("BEGIN"),
    }
}

/// The advisory lock that keeps two applies to one database apart, taken
/// for the transaction; false when another apply holds it.
pub fn lock(conn: &dyn Session) -> session::Result<bool> {
    match conn.dialect() {
        Dialect::Postgres => conn.query_one("SELECT pg_try_advisory_xact_lock(?1)", args![APPLY_LOCK])?.get(0),
        _ => Ok(true),
    }
}

/// The advisory lock key of `bundle apply` ("ferry" in ASCII).
const APPLY_LOCK: i64 = 0x66_65_72_72_79;

/// Raises the sequence behind each table's integer key (PostgreSQL's
/// `serial`/identity columns) to at least the largest id in the table, so
/// the app's next insert is numbered above every row ferry applied.
/// Sequences are never lowered. (MariaDB/MySQL raise AUTO_INCREMENT by
/// themselves when a larger id is inserted; SQLite hands out max + 1.)
pub fn raise_counters(conn: &dyn Session, tables: &[std::rc::Rc<TableInfo>]) -> session::Result<()> {
    if conn.dialect() != Dialect::Postgres {
        return Ok(());
    }
    for t in tables {
        let [key] = t.key.as_slice() else { continue };
        let seq: Option<String> =
            conn.query_one("SELECT pg_get_serial_sequence(?1, ?2)", args![t.quoted, key])?.get(0)?;
        let Some(seq) = seq else { continue };
        let sql = format!(
            "SELECT setval(CAST(?1 AS text)::regclass, m) FROM (SELECT max({}) AS m FROM {}) x
             WHERE m IS NOT NULL AND m > coalesce(
                 (SELECT last_value FROM pg_sequences
                  WHERE format('%I.%I', schemaname, sequencename)::regclass = CAST(?1 AS text)::regclass), 0)",
            crate::schema::quote(key),
            t.quoted
        );
        conn.query(&sql, args![seq])?;
    }
    Ok(())
}

/// What a server target's apply ledger holds, per origin, for the receipt
/// that goes back the way the bundles came (as
/// [`crate::receipt::Holdings::from_target`] reads a SQLite target).
pub fn holdings(conn: &dyn Session) -> session::Result<crate::receipt::Holdings> {
    let mut h = crate::receipt::Holdings::default();
    for t in ["_ferry_origins", "_ferry_applied", "_ferry_hashes"] {
        if !super::ledger::table_exists(conn, t)? {
            return Ok(h);
        }
    }
    for r in conn.query("SELECT id, node FROM _ferry_origins ORDER BY id", &[])? {
        let (id, node): (i64, String) = (r.get(0)?, r.get(1)?);
        let (Ok(id), Ok(node)) = (u32::try_from(id), crate::keys::NodeId::try_from(node)) else { continue };
        let mut hashes = super::ledger::Hashes::new(conn, id);
        for (first, last) in super::ledger::ranges(conn, id)? {
            let chain = hashes.get(last)?;
            h.add(&node, first, last, chain.as_ref().map(|c| &c[..]));
        }
    }
    Ok(h)
}

/// A PostgreSQL error with the server's own message when there is one.
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => d.message().to_owned(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

impl Conn {
    /// The target's own tables (ferry's `_ferry_*` and the engine's own
    /// schemas left out), keyed by name.
    pub fn tables(&mut self, s: &Server) -> Result<HashMap<String, ServerTable>, ServerError> {
        let fail = |cause: String| ServerError::Query { target: s.to_string(), cause };
        let mut out: HashMap<String, ServerTable> = HashMap::new();
        match self {
            Conn::Postgres(c) => {
                let rows = c
                    .query(
                        "SELECT table_name::text, column_name::text, data_type::text,
                                character_maximum_length::int8, numeric_precision::int8, numeric_scale::int8
                         FROM information_schema.columns
                         WHERE table_schema = current_schema()
                         ORDER BY table_name, ordinal_position",
                        &[],
                    )
                    .map_err(|e| fail(pg_error(&e)))?;
                for r in rows {
                    let (t, c, ty): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                    let ct = ColumnType::of_postgres(&ty, r.get(3), r.get(4), r.get(5));
                    table_entry(&mut out, t).columns.push((c, ct));
                }
                let keys = c
                    .query(
                        "SELECT k.table_name::text, k.column_name::text
                         FROM information_schema.table_constraints t
                         JOIN information_schema.key_column_usage k
                           ON k.constraint_name = t.constraint_name AND k.table_schema = t.table_schema
                          AND k.table_name = t.table_name
                         WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_schema = current_schema()
                         ORDER BY k.table_name, k.ordinal_position",
                        &[],
                    )
                    .map_err(|e| fail(pg_error(&e)))?;
                for r in keys {
                    let (t, c): (String, String) = (r.get(0), r.get(1));
                    if let Some(table) = out.get_mut(&t) {
                        table.key.push(c);
                    }
                }
            }
            Conn::Mysql(c) => {
                use mysql::prelude::Queryable;
                type Col = (String, String, String, String, Option<u64>, Option<u64>, Option<u64>);
                let rows: Vec<Col> = c
                    .query(
                        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), CAST(data_type AS CHAR),
                                CAST(column_type AS CHAR), character_maximum_length, numeric_precision, numeric_scale
                         FROM information_schema.columns
                         WHERE table_schema = DATABASE()
                         ORDER BY table_name, ordinal_position",
                    )
                    .map_err(|e| fail(e.to_string()))?;
                // MariaDB's JSON is LONGTEXT with a json_valid check.
                let checks: Vec<(String, String)> = c
                    .query(
                        "SELECT CAST(table_name AS CHAR), CAST(check_clause AS CHAR)
                         FROM information_schema.check_constraints WHERE constraint_schema = DATABASE()",
                    )
                    .unwrap_or_default();
                for (t, col, ty, ctype, len, prec, scale) in rows {
                    let json = checks.iter().any(|(ct, clause)| {
                        *ct == t && clause.contains("json_valid") && clause.contains(&format!("`{col}`"))
                    });
                    let ct = ColumnType::of_mysql(&ty, &ctype, len, prec, scale, json);
                    table_entry(&mut out, t).columns.push((col, ct));
                }
                let keys: Vec<(String, String)> = c
                    .query(
                        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR)
                         FROM information_schema.key_column_usage
                         WHERE table_schema = DATABASE() AND constraint_name = 'PRIMARY'
                         ORDER BY table_name, ordinal_position",
                    )
                    .map_err(|e| fail(e.to_string()))?;
                for (t, col) in keys {
                    if let Some(table) = out.get_mut(&t) {
                        table.key.push(col);
                    }
                }
            }
        }
        out.retain(|name, _| !crate::schema::is_internal(name));
        Ok(out)
    }
}

fn table_entry(out: &mut HashMap<String, ServerTable>, name: String) -> &mut ServerTable {
    out.entry(name.clone()).or_insert_with(|| ServerTable { name, columns: Vec::new(), key: Vec::new() })
}

/// The tracked tables whose ids, numbered by a node in id block `block`
/// (from `block × 2^32`), the central server's key column cannot hold: each
/// with its key column and that column's largest value. `tables` are the
/// tracked single-integer-keyed tables with their key column; a table the
/// server lacks is not judged here (`verify --against` names it).
pub fn ids_beyond(
    central: &HashMap<String, ServerTable>,
    tables: &[(String, String)],
    block: u32,
) -> Vec<(String, String, i128)> {
    let first = i128::from(block) << 32;
    let mut out = Vec::new();
    for (t, key) in tables {
        let Some(max) = central.get(t).and_then(|c| c.column(key)).and_then(ColumnType::max_int) else { continue };
        if block > 0 && max < first {
            out.push((t.clone(), key.clone(), max));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_a_block_above_zero_do_not_fit_32_bit_keys() {
        let table = |name: &str, ty: &str| ServerTable {
            name: name.into(),
            columns: vec![("id".into(), ColumnType::of_postgres(ty, None, None, None))],
            key: vec!["id".into()],
        };
        let central: HashMap<String, ServerTable> =
            [table("small", "integer"), table("big", "bigint")].into_iter().map(|t| (t.name.clone(), t)).collect();
        let tracked: Vec<(String, String)> =
            ["small", "big", "missing"].iter().map(|t| ((*t).to_owned(), "id".to_owned())).collect();
        assert_eq!(ids_beyond(&central, &tracked, 5), vec![("small".into(), "id".into(), i128::from(i32::MAX))]);
        assert!(ids_beyond(&central, &tracked, 0).is_empty(), "block 0 numbers from 1");
    }
}
