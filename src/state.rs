//! The node's own state store (`state.sqlite3` in the node home): what this
//! node has bundled (watermark and chain checkpoints), the numbering of
//! legacy journal lines, and (for relays) the ledger of carried segments.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::chain::ChainHash;
use crate::journal::SeqRegistry;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to use the state store {path}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("legacy journal {file} line {line} changed after it was numbered as seq {seq}; journals are append-only")]
    LegacyChanged { file: String, line: u64, seq: u64 },
}

pub struct State {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    chain  BLOB NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS legacy_seqs (
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    hash BLOB NOT NULL,
    seq  INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (file, line)
);
";

impl State {
    pub fn open(path: &Path) -> Result<State, StateError> {
        let p = path.display().to_string();
        let err = |source| StateError::Sqlite { path: p.clone(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(State { conn, path: p })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        move |source| StateError::Sqlite { path: self.path.clone(), source }
    }

    /// The highest seq of `origin` bundled so far, with its chain hash.
    pub fn watermark(&self, origin: &str) -> Result<Option<(u64, ChainHash)>, StateError> {
        self.conn
            .query_row(
                "SELECT seq, chain FROM checkpoints WHERE origin = ?1 ORDER BY seq DESC LIMIT 1",
                [origin],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map(|o| o.and_then(|(s, c)| ChainHash::from_slice(&c).map(|c| (s, c))))
            .map_err(self.err())
    }

    /// The chain hash of `origin` at `seq`, if recorded.
    pub fn checkpoint(&self, origin: &str, seq: u64) -> Result<Option<ChainHash>, StateError> {
        self.conn
            .query_row(
                "SELECT chain FROM checkpoints WHERE origin = ?1 AND seq = ?2",
                params![origin, seq as i64],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map(|o| o.and_then(|c| ChainHash::from_slice(&c)))
            .map_err(self.err())
    }

    /// Records that `origin`'s journal was bundled up to `seq`, chain hash `chain`.
    pub fn record_checkpoint(&self, origin: &str, seq: u64, chain: &ChainHash) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO checkpoints (origin, seq, chain) VALUES (?1, ?2, ?3)",
                params![origin, seq as i64, &chain.0[..]],
            )
            .map(drop)
            .map_err(self.err())
    }
}

impl SeqRegistry for State {
    fn seq_for(
        &mut self,
        file: &str,
        line: u64,
        hash: &[u8; 32],
    ) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        let known: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM legacy_seqs WHERE file = ?1 AND line = ?2",
                params![file, line as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        match known {
            Some((seq, h)) if h == hash => Ok(seq as u64),
            Some((seq, _)) => Err(Box::new(StateError::LegacyChanged { file: file.into(), line, seq: seq as u64 })),
            None => {
                let seq: i64 = self
                    .conn
                    .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM legacy_seqs", [], |r| r.get(0))
                    .map_err(self.err())?;
                self.conn
                    .execute(
                        "INSERT INTO legacy_seqs (file, line, hash, seq) VALUES (?1, ?2, ?3, ?4)",
                        params![file, line as i64, &hash[..], seq],
                    )
                    .map_err(self.err())?;
                Ok(seq as u64)
            }
        }
    }
}
