//! A node's home folder: who this node is, whom it trusts, what it remembers.
//!
//! ```text
//! HOME/node.json        identity: id, name, public key, id block, MAC (provenance)
//! HOME/secret.key       the ed25519 secret, 0600 on Unix, never overwritten
//! HOME/trust.json       the trust store (this node always trusts itself)
//! HOME/state.sqlite3    watermarks, chain checkpoints, legacy seqs, relay ledger
//! ```
//!
//! The home is `--home DIR`, else `$FERRY_HOME`, else the per-user data
//! directory (`~/.local/share/ferry`, `~/Library/Application Support/ferry`,
//! `%APPDATA%\ferry`).

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::journal::Timestamp;
use crate::keys::{self, KeyError, NodeId, Role, TrustStore};
use crate::state::{State, StateError};

/// The largest id block: blocks are `N * 2^32`, and every id stays below 2^53.
pub const MAX_ID_BLOCK: u32 = (1 << 21) - 1;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no node at {}: run `ferry node init --name NAME` first (or pass --home)", .0.display())]
    NotInitialised(PathBuf),
    #[error("a node already exists at {} (node {id}); refusing to overwrite it", path.display())]
    AlreadyInitialised { path: PathBuf, id: NodeId },
    #[error("failed to access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is malformed", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("id block {0} is out of range (1 to {MAX_ID_BLOCK})")]
    IdBlockRange(u32),
    #[error("node name {0:?} must be 1 to 64 printable characters")]
    BadName(String),
    #[error("no per-user data directory on this system; pass --home or set FERRY_HOME")]
    NoDefaultHome,
    #[error("the node home {} is a file, not a folder: give --home the folder made by `ferry node init`", .0.display())]
    HomeIsAFile(PathBuf),
    #[error("another {what} is using the node home {} right now; two of them must not share a home. Wait for it to finish, or give each its own --home", home.display())]
    Busy { home: PathBuf, what: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    State(#[from] StateError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io { path: path.to_path_buf(), source }
}

/// What `node.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    pub version: u32,
    pub id: NodeId,
    pub name: String,
    pub public_key: String,
    pub id_block: Option<u32>,
    /// The machine's MAC address when the node was made: provenance only.
    pub mac: Option<String>,
    pub created: Timestamp,
}

/// An opened node home.
pub struct Node {
    pub home: PathBuf,
    pub info: NodeInfo,
    key: SigningKey,
}

/// The default home when neither `--home` nor `FERRY_HOME` is given.
pub fn default_home() -> Result<PathBuf, NodeError> {
    dirs::data_dir().map(|d| d.join("ferry")).ok_or(NodeError::NoDefaultHome)
}

impl Node {
    /// Creates a node in `home`. Never overwrites an existing identity.
    pub fn init(home: &Path, name: &str, id_block: Option<u32>) -> Result<Node, NodeError> {
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(NodeError::BadName(name.to_owned()));
        }
        if let Some(b) = id_block {
            if b == 0 || b > MAX_ID_BLOCK {
                return Err(NodeError::IdBlockRange(b));
            }
        }
        if home.is_file() {
            return Err(NodeError::HomeIsAFile(home.to_path_buf()));
        }
        if let Ok(existing) = Node::open(home) {
            return Err(NodeError::AlreadyInitialised { path: home.to_path_buf(), id: existing.info.id });
        }
        std::fs::create_dir_all(home).map_err(io_err(home))?;
        let secret_path = home.join("secret.key");
        // A secret left by an interrupted init is reused, never replaced.
        let key = match std::fs::read_to_string(&secret_path) {
            Ok(text) => keys::parse_secret_key(&text, &secret_path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = keys::generate().map_err(io_err(&secret_path))?;
                fsutil::create_private(&secret_path, keys::format_secret_key(&key).as_bytes())
                    .map_err(io_err(&secret_path))?;
                key
            }
            Err(e) => return Err(io_err(&secret_path)(e)),
        };
        let vk = key.verifying_key();
        let info = NodeInfo {
            version: 1,
            id: NodeId::of(&vk),
            name: name.to_owned(),
            public_key: keys::format_public_key(&vk),
            id_block,
            mac: mac_address::get_mac_address().ok().flatten().map(|m| m.to_string().to_lowercase()),
            created: Timestamp::now(),
        };
        let mut trust = TrustStore { version: 1, keys: Vec::new() };
        trust.add(name, &vk, &[Role::Origin, Role::Relay])?;
        let node = Node { home: home.to_path_buf(), info, key };
        node.save_trust(&trust)?;
        State::open(&home.join("state.sqlite3"))?;
        // node.json last: its presence means the node is complete.
        write_json(&home.join("node.json"), &node.info)?;
        Ok(node)
    }

    /// Opens an existing node home.
    pub fn open(home: &Path) -> Result<Node, NodeError> {
        if home.is_file() {
            return Err(NodeError::HomeIsAFile(home.to_path_buf()));
        }
        let info_path = home.join("node.json");
        let info: NodeInfo = match std::fs::read(&info_path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| NodeError::Corrupt { path: info_path.clone(), source })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NodeError::NotInitialised(home.to_path_buf()))
            }
            Err(e) => return Err(io_err(&info_path)(e)),
        };
        let secret_path = home.join("secret.key");
        let text = std::fs::read_to_string(&secret_path).map_err(io_err(&secret_path))?;
        let key = keys::parse_secret_key(&text, &secret_path)?;
        if NodeId::of(&key.verifying_key()) != info.id {
            return Err(KeyError::IdMismatch { name: info.name.clone(), node: info.id.clone() }.into());
        }
        Ok(Node { home: home.to_path_buf(), info, key })
    }

    pub fn id(&self) -> &NodeId {
        &self.info.id
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    pub fn trust(&self) -> Result<TrustStore, NodeError> {
        let path = self.home.join("trust.json");
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| NodeError::Corrupt { path, source })
    }

    pub fn save_trust(&self, trust: &TrustStore) -> Result<(), NodeError> {
        write_json(&self.home.join("trust.json"), trust)
    }

    pub fn state(&self) -> Result<State, NodeError> {
        Ok(State::open(&self.home.join("state.sqlite3"))?)
    }

    /// Takes this home's lock for `what` (e.g. "ferry bundle relay"), or
    /// says who holds it. The lock is an exclusive SQLite lock on
    /// `HOME/home.lock`: the operating system drops it when the process ends,
    /// however it ends, so a killed run never leaves a stale lock.
    pub fn lock(&self, what: &str) -> Result<HomeLock, NodeError> {
        let path = self.home.join("home.lock");
        let busy = || NodeError::Busy { home: self.home.clone(), what: what.to_owned() };
        let conn = rusqlite::Connection::open(&path)
            .map_err(|e| NodeError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
        let taken = conn
            .execute_batch(
                "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS held (x); COMMIT;",
            )
            .and_then(|()| conn.execute_batch("BEGIN EXCLUSIVE; INSERT INTO held VALUES (1); DELETE FROM held;"));
        match taken {
            Ok(()) => Ok(HomeLock { _conn: conn }),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => Err(busy()),
            Err(e) => Err(NodeError::Io { path, source: std::io::Error::other(e.to_string()) }),
        }
    }
}

/// Held while a command needs a node home to itself ([`Node::lock`]).
pub struct HomeLock {
    _conn: rusqlite::Connection,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), NodeError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|source| NodeError::Corrupt { path: path.into(), source })?;
    bytes.push(b'\n');
    fsutil::write_atomic(path, &bytes).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_never_overwrites_and_open_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("n");
        let node = Node::init(&home, "field-1", Some(3)).expect("init");
        assert!(matches!(Node::init(&home, "other", None), Err(NodeError::AlreadyInitialised { .. })));
        let again = Node::open(&home).expect("open");
        assert_eq!(again.info, node.info);
        assert!(again.trust().expect("trust").signer(node.id(), Role::Origin).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.join("secret.key")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_home_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::init(&dir.path().join("n"), "n", None).expect("init");
        let held = node.lock("ferry bundle relay").expect("first lock");
        let second = Node::open(&node.home).expect("open");
        match second.lock("ferry bundle relay") {
            Err(NodeError::Busy { what, .. }) => assert_eq!(what, "ferry bundle relay"),
            other => panic!("expected Busy, got {:?}", other.err()),
        }
        drop(held);
        second.lock("ferry bundle relay").expect("free again");
    }

    #[test]
    fn a_home_that_is_a_file_is_named_as_such() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        assert!(matches!(Node::open(&file), Err(NodeError::HomeIsAFile(_))));
        assert!(matches!(Node::init(&file, "x", None), Err(NodeError::HomeIsAFile(_))));
    }

    #[test]
    fn id_block_is_range_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(Node::init(dir.path(), "x", Some(0)), Err(NodeError::IdBlockRange(0))));
        assert!(matches!(Node::init(dir.path(), "x", Some(MAX_ID_BLOCK + 1)), Err(NodeError::IdBlockRange(_))));
    }
}
