//! A node's home folder: who this node is, whom it trusts, what it remembers.
//!
//! ```text
//! HOME/node.json        identity: id, name, public key, id block, MAC (provenance)
//! HOME/secret.key       the ed25519 secret, 0600 on Unix, never overwritten
//! HOME/encryption.key   the encryption secret (age X25519), 0600 on Unix
//! HOME/retired-encryption/  encryption secrets it replaced (still open old bundles)
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
    #[error(
        "a field laptop needs its own id block: a number from 1 to 999 that no other laptop uses (for example \
         --id-block 3 for field-3); write it down with the laptop's name"
    )]
    FieldNeedsBlock,
    #[error("field laptops take id blocks 1 to 999 (servers take blocks from 1000 up, above every laptop's), not {0}")]
    FieldBlock(u32),
    #[error("servers take id blocks from 1000 up, above every laptop's, not {0}")]
    ServerBlock(u32),
    #[error("a middleman makes no rows of its own: leave out --id-block")]
    RelayBlock,
    #[error("id block {0} is out of range (1 to {MAX_ID_BLOCK})")]
    IdBlockRange(u32),
    #[error("this node's id block is {current}; it can only move up (ids already handed out stay taken, and a lower block may be another computer's): choose a block above {current}, not {wanted}")]
    IdBlockDown { current: u32, wanted: u32 },
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
    #[error(transparent)]
    Exposed(#[from] crate::crypt::ExposedSecret),
    #[error(transparent)]
    Encryption(#[from] crate::crypt::LoadError),
    #[error(
        "this node has an encryption key already ({recipient}); to replace it (the old one keeps opening bundles \
         already on their way), run `ferry key add-encryption --replace`"
    )]
    EncryptionExists { recipient: String },
    #[error(
        "this node has no encryption key: run `ferry key add-encryption` (made by an older ferry), then `ferry key \
         export` and the printed line on the computers that send to it"
    )]
    NoEncryption,
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
    /// What the node is for (older nodes have none; see [`NodeInfo::kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NodeKind>,
    /// The machine's MAC address when the node was made: provenance only.
    pub mac: Option<String>,
    pub created: Timestamp,
    /// Names of the nodes every bundle made here is encrypted to
    /// (`ferry node encrypt-to`); empty: bundles are encrypted only when
    /// `bundle create --encrypt-to` says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypt_to: Vec<String>,
}

/// What a node is for: it decides the id blocks it may take and the roles
/// other nodes trust it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A field laptop: captures the app's changes (an origin); id blocks 1 to 999.
    Field,
    /// A middleman: carries bundles (a relay); no id block.
    Relay,
    /// A community or central server: applies bundles, may edit and relay
    /// (origin and relay); id blocks from 1000.
    Server,
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            NodeKind::Field => "field laptop",
            NodeKind::Relay => "middleman",
            NodeKind::Server => "server",
        })
    }
}

/// Laptops take id blocks below this; servers from it up.
pub const SERVER_BLOCKS: u32 = 1000;

impl NodeInfo {
    /// The node's kind: as given at `node init`, else told by its id block
    /// (below [`SERVER_BLOCKS`]: a field laptop; from it: a server).
    pub fn kind(&self) -> Option<NodeKind> {
        self.kind.or(match self.id_block {
            Some(b) if b < SERVER_BLOCKS => Some(NodeKind::Field),
            Some(_) => Some(NodeKind::Server),
            None => None,
        })
    }

    /// The roles other nodes should trust this one with.
    pub fn roles(&self) -> Vec<Role> {
        match self.kind() {
            Some(NodeKind::Field) => vec![Role::Origin],
            Some(NodeKind::Relay) => vec![Role::Relay],
            Some(NodeKind::Server) | None => vec![Role::Origin, Role::Relay],
        }
    }
}

/// An opened node home.
pub struct Node {
    pub home: PathBuf,
    pub info: NodeInfo,
    key: SigningKey,
    /// The encryption identity (none for a node made by an older ferry
    /// until `ferry key add-encryption`).
    encryption: Option<crate::crypt::Identity>,
    /// Encryption identities this node replaced, newest first.
    retired_encryption: Vec<crate::crypt::Identity>,
}

/// The default home when neither `--home` nor `FERRY_HOME` is given.
pub fn default_home() -> Result<PathBuf, NodeError> {
    dirs::data_dir().map(|d| d.join("ferry")).ok_or(NodeError::NoDefaultHome)
}

impl Node {
    /// Creates a node in `home`. Never overwrites an existing identity.
    pub fn init(home: &Path, name: &str, id_block: Option<u32>) -> Result<Node, NodeError> {
        Node::init_kind(home, name, id_block, None)
    }

    /// [`Node::init`] for a node of `kind`, whose id block must suit it:
    /// a field laptop needs one below [`SERVER_BLOCKS`], a server one from it
    /// (or none), a middleman none.
    pub fn init_kind(
        home: &Path,
        name: &str,
        id_block: Option<u32>,
        kind: Option<NodeKind>,
    ) -> Result<Node, NodeError> {
        match (kind, id_block) {
            (Some(NodeKind::Field), None) => return Err(NodeError::FieldNeedsBlock),
            (Some(NodeKind::Field), Some(b)) if b >= SERVER_BLOCKS => return Err(NodeError::FieldBlock(b)),
            (Some(NodeKind::Server), Some(b)) if b < SERVER_BLOCKS => return Err(NodeError::ServerBlock(b)),
            (Some(NodeKind::Relay), Some(_)) => return Err(NodeError::RelayBlock),
            _ => {}
        }
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
        let encryption = load_or_make_encryption(home)?;
        let vk = key.verifying_key();
        let info = NodeInfo {
            version: 1,
            id: NodeId::of(&vk),
            name: name.to_owned(),
            public_key: keys::format_public_key(&vk),
            id_block,
            kind,
            mac: mac_address::get_mac_address().ok().flatten().map(|m| m.to_string().to_lowercase()),
            created: Timestamp::now(),
            encrypt_to: Vec::new(),
        };
        let mut trust = TrustStore { version: 1, keys: Vec::new() };
        trust.add(name, &vk, &[Role::Origin, Role::Relay])?;
        trust.set_encryption(name, &encryption.to_public())?;
        let node =
            Node { home: home.to_path_buf(), info, key, encryption: Some(encryption), retired_encryption: Vec::new() };
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
        crate::crypt::check_private(&secret_path)?;
        let key = keys::parse_secret_key(&text, &secret_path)?;
        if NodeId::of(&key.verifying_key()) != info.id {
            return Err(KeyError::IdMismatch { name: info.name.clone(), node: info.id.clone() }.into());
        }
        let encryption = crate::crypt::load_identity(&home.join(crate::crypt::SECRET_FILE))?;
        let retired_encryption = load_retired(home)?;
        Ok(Node { home: home.to_path_buf(), info, key, encryption, retired_encryption })
    }

    /// The public half of this node's encryption identity, if it has one.
    pub fn encryption_key(&self) -> Option<crate::crypt::Recipient> {
        self.encryption.as_ref().map(crate::crypt::Identity::to_public)
    }

    /// The identities this node decrypts bundles with: its own, then those
    /// it replaced.
    pub fn keyring(&self) -> crate::crypt::Keyring {
        let ids = self.encryption.iter().chain(&self.retired_encryption).cloned().collect();
        crate::crypt::Keyring::new(Some(self.info.id.clone()), ids)
    }

    /// Gives this node an encryption identity (a node made by an older
    /// ferry has none), or, with `replace`, a new one: the old secret moves
    /// to `retired-encryption/` and keeps opening bundles encrypted to it.
    /// This node's own trust entry gets the new key. Returns the new key.
    pub fn add_encryption(&mut self, replace: bool) -> Result<crate::crypt::Recipient, NodeError> {
        let path = self.home.join(crate::crypt::SECRET_FILE);
        if let Some(current) = &self.encryption {
            if !replace {
                return Err(NodeError::EncryptionExists { recipient: current.to_public().to_string() });
            }
            let retired = self.home.join(crate::crypt::RETIRED_DIR);
            std::fs::create_dir_all(&retired).map_err(io_err(&retired))?;
            let stamp = Timestamp::now().to_rfc3339().replace([':', '.'], "");
            let dest = retired.join(format!("{stamp}.key"));
            std::fs::rename(&path, &dest).map_err(io_err(&dest))?;
            fsutil::sync_dir(&retired).map_err(io_err(&retired))?;
            self.retired_encryption.insert(0, current.clone());
        }
        let identity = load_or_make_encryption(&self.home)?;
        let recipient = identity.to_public();
        self.encryption = Some(identity);
        // This node's own trust entry (found by its id: its name there may differ).
        let mut trust = self.trust()?;
        if let Some(me) = trust.keys.iter_mut().find(|k| k.node == self.info.id) {
            me.encryption = Some(recipient.to_string());
            self.save_trust(&trust)?;
        }
        Ok(recipient)
    }

    /// Adds nodes to encrypt to for this run only (`bundle create
    /// --encrypt-to`); nothing is saved.
    pub fn encrypt_also(&mut self, names: &[String]) {
        for n in names {
            if !self.info.encrypt_to.contains(n) {
                self.info.encrypt_to.push(n.clone());
            }
        }
    }

    /// Sets the nodes every bundle made here is encrypted to (by name; each
    /// must be trusted here with an encryption key). Empty: none.
    pub fn set_encrypt_to(&mut self, names: &[String]) -> Result<(), NodeError> {
        let trust = self.trust()?;
        for n in names {
            trust.recipient(n)?;
        }
        let mut names = names.to_vec();
        names.dedup();
        self.info.encrypt_to = names;
        write_json(&self.home.join("node.json"), &self.info)
    }

    /// Makes the identity that will replace this node's after a fork
    /// (another computer uses this one), in `home/reissue-staging/`, without
    /// touching the current one; [`Node::adopt`] puts it in place.
    pub fn stage_successor(&self, name: &str, id_block: Option<u32>) -> Result<Node, NodeError> {
        let staging = self.home.join("reissue-staging");
        if staging.exists() {
            // Left by an interrupted reissue that never adopted it: unused.
            std::fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        Node::init(&staging, name, id_block)
    }

    /// Puts a staged successor (see [`Node::stage_successor`]) in place of
    /// the node in `home`: the old `node.json` and `secret.key` move to
    /// `retired-<old id>/` (kept, never deleted), the successor's take their
    /// place, and the trust store is kept, with the successor trusted as this
    /// node. Returns the new node.
    pub fn adopt(self, successor: Node) -> Result<Node, NodeError> {
        let home = self.home.clone();
        let retired = home.join(format!("retired-{}", self.info.id));
        std::fs::create_dir_all(&retired).map_err(io_err(&retired))?;
        if retired.join("secret.key").exists() {
            return Err(NodeError::AlreadyInitialised { path: retired.clone(), id: self.info.id.clone() });
        }
        let mut trust = successor.trust()?;
        for k in self.trust()?.keys.into_iter().filter(|k| k.node != successor.info.id) {
            if !trust.keys.iter().any(|m| m.name == k.name || m.node == k.node) {
                trust.keys.push(k);
            }
        }
        // The old identity is complete in `retired-…` before anything leaves
        // the home: node.json copied, then the secret moved (never copied: one
        // secret, one place).
        write_json(&retired.join("node.json"), &self.info)?;
        let secret = retired.join("secret.key");
        std::fs::rename(home.join("secret.key"), &secret).map_err(io_err(&secret))?;
        let staged = successor.home.clone();
        std::fs::rename(staged.join("secret.key"), home.join("secret.key")).map_err(io_err(&home))?;
        write_json(&home.join("node.json"), &successor.info)?;
        // The encryption identity stays with the home (bundles on the road are
        // encrypted to it); a home without one takes the successor's.
        let enc = home.join(crate::crypt::SECRET_FILE);
        let encryption = match self.encryption {
            Some(id) => Some(id),
            None => {
                std::fs::rename(staged.join(crate::crypt::SECRET_FILE), &enc).map_err(io_err(&enc))?;
                successor.encryption
            }
        };
        if let (Some(id), Some(me)) = (&encryption, trust.keys.iter_mut().find(|k| k.node == successor.info.id)) {
            me.encryption = Some(id.to_public().to_string());
        }
        let adopted = Node {
            home: home.clone(),
            info: successor.info,
            key: successor.key,
            encryption,
            retired_encryption: self.retired_encryption,
        };
        adopted.save_trust(&trust)?;
        std::fs::remove_dir_all(&staged).map_err(io_err(&staged))?;
        Ok(adopted)
    }

    /// Moves this node to id block `block` (see `docs/CAPTURE.md`). Only
    /// upwards: ids handed out in the current block stay used, and a lower
    /// block could be another computer's. Run `ferry track` on the node's
    /// databases afterwards, which raises their counters into the new block.
    pub fn set_id_block(&mut self, block: u32) -> Result<(), NodeError> {
        if block == 0 || block > MAX_ID_BLOCK {
            return Err(NodeError::IdBlockRange(block));
        }
        if let Some(current) = self.info.id_block.filter(|c| block < *c) {
            return Err(NodeError::IdBlockDown { current, wanted: block });
        }
        self.info.id_block = Some(block);
        write_json(&self.home.join("node.json"), &self.info)
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

/// The encryption identity in `home`, made (owner-only) when there is none.
fn load_or_make_encryption(home: &Path) -> Result<crate::crypt::Identity, NodeError> {
    let path = home.join(crate::crypt::SECRET_FILE);
    if let Some(id) = crate::crypt::load_identity(&path)? {
        return Ok(id);
    }
    let id = crate::crypt::generate();
    fsutil::create_private(&path, crate::crypt::format_identity(&id).as_bytes()).map_err(io_err(&path))?;
    Ok(id)
}

/// The replaced encryption identities in `home`, newest first.
fn load_retired(home: &Path) -> Result<Vec<crate::crypt::Identity>, NodeError> {
    let dir = home.join(crate::crypt::RETIRED_DIR);
    let mut paths = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "key"))
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    paths.sort();
    paths.reverse();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        if let Some(id) = crate::crypt::load_identity(&p)? {
            out.push(id);
        }
    }
    Ok(out)
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
