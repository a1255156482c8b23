//! Keys: ed25519 identities, their text forms, and the trust store.
//!
//! - A public key is written `ferry-ed25519:<base64url, no padding>`.
//! - A node id is the first 8 bytes of `SHA-256("ferry-node-id-v1\0" || public key)`
//!   in lowercase hex (16 characters): derived from the key, never from a MAC.
//! - The secret key file holds `ferry-secret-v1:<base64url seed>` and a newline.
//! - Signatures are checked with `verify_strict`, and weak (small-order) public
//!   keys are refused when they enter the trust store.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::journal::Timestamp;

const PUBLIC_PREFIX: &str = "ferry-ed25519:";
const SECRET_PREFIX: &str = "ferry-secret-v1:";

/// Errors about keys and the trust store.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a ferry public key (expected {PUBLIC_PREFIX}<43 base64url characters>)")]
    BadPublicKey(String),
    #[error("refusing a weak (small-order) public key: signatures under it prove nothing")]
    WeakKey,
    #[error("the secret key file {} is malformed", .0.display())]
    BadSecretKey(PathBuf),
    #[error(
        "unknown signer: node {0} is not in this node's trust store; if you trust that computer, run `ferry key export` \
         on it and `ferry trust add NAME KEY` here"
    )]
    UnknownSigner(NodeId),
    #[error("revoked signer {name} ({node}), revoked at {revoked}")]
    RevokedSigner { name: String, node: NodeId, revoked: Timestamp },
    #[error("{0}")]
    WrongRole(Box<WrongRole>),
    #[error(
        "the name {name:?} is already used for another key (node {node}); pick another name, or, if this key \
         replaces that one, revoke the old one first (`ferry trust revoke {name}`)"
    )]
    NameTaken { name: String, node: NodeId },
    #[error("this key is already trusted as {name:?}; to change its roles, run `ferry trust add {name} KEY --role …` with that name")]
    KeyTaken { name: String },
    #[error(
        "{name} ({node}) was revoked at {revoked}; a revoked key is never trusted again (a stolen laptop's key \
         stays refused). Make that computer a new identity (`ferry node init` in a new home) and trust its new key"
    )]
    Revoked { name: String, node: NodeId, revoked: Timestamp },
    #[error("no trusted key is named {0:?}")]
    NoSuchName(String),
    #[error("the key of {name} does not match its node id {node}")]
    IdMismatch { name: String, node: NodeId },
    #[error("the name {0:?} must be 1 to 64 characters, none of them control characters")]
    BadName(String),
    #[error("{0:?} is not a ferry encryption key (expected age1… as printed by `ferry key export` on that computer)")]
    BadEncryptionKey(String),
    #[error(
        "no trusted node is named {0:?}, so nothing can be encrypted to it: run `ferry key export` on that \
         computer and the line it prints here (`ferry trust list` shows the names known here)"
    )]
    NoRecipient(String),
    #[error(
        "{name} ({node}) has no encryption key in this node's trust store: run `ferry key export` on {name} and \
         the line it prints here (a computer made by an older ferry first needs `ferry key add-encryption` there)"
    )]
    NoEncryptionKey { name: String, node: NodeId },
}

/// A signer acting in a role it is not trusted with.
#[derive(Debug)]
pub struct WrongRole {
    pub name: String,
    pub node: NodeId,
    /// The role it acted in.
    pub role: Role,
    /// The roles it is trusted with.
    pub roles: Vec<Role>,
    pub key: String,
}

impl std::fmt::Display for WrongRole {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) signed as {}, but this node trusts it only as {}: if {} really is a {}, run `ferry trust add \
             {} {} {}` here to change its roles",
            self.name,
            self.node,
            self.role,
            roles_text(&self.roles),
            self.name,
            role_kind(self.role),
            self.name,
            self.key,
            role_flags(&self.roles, self.role)
        )
    }
}

fn roles_text(roles: &[Role]) -> String {
    roles.iter().map(Role::to_string).collect::<Vec<_>>().join(" and ")
}

fn role_kind(role: Role) -> &'static str {
    match role {
        Role::Origin => "computer whose own entries this node takes (a laptop, or a server with local edits)",
        Role::Relay => "computer that carries others' bundles (a middleman or a server)",
        Role::Archive => "archive (the central server, whose receipts let the computers below it prune)",
    }
}

/// The `--role` flags of a key trusted as `roles` that may also act as `role`.
fn role_flags(roles: &[Role], role: Role) -> String {
    let mut all = roles.to_vec();
    all.push(role);
    all.sort();
    all.dedup();
    all.iter().map(|r| format!("--role {r}")).collect::<Vec<_>>().join(" ")
}

/// What [`TrustStore::add`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChange {
    Added,
    /// The key was trusted already under this name; its roles changed from these.
    Roles(Vec<Role>),
    /// The key was trusted already, under this name, with these roles.
    Unchanged,
}

/// Names of nodes (in `node init` and the trust store): 1 to 64 characters,
/// no control characters (they are printed in status and relay output).
pub fn check_node_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(KeyError::BadName(name.to_owned()));
    }
    Ok(())
}

/// A node id: 16 lowercase hex characters derived from the public key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    pub fn of(key: &VerifyingKey) -> NodeId {
        let mut h = Sha256::new();
        h.update(b"ferry-node-id-v1\0");
        h.update(key.as_bytes());
        NodeId(hex::encode(&h.finalize()[..8]))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(NodeId(s))
        } else {
            Err(format!("{s:?} is not a node id (16 lowercase hex characters)"))
        }
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `ferry-ed25519:…` (surrounding whitespace ignored).
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, KeyError> {
    let bad = || KeyError::BadPublicKey(s.to_owned());
    let body = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?.try_into().map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

pub fn format_public_key(key: &VerifyingKey) -> String {
    format!("{PUBLIC_PREFIX}{}", URL_SAFE_NO_PAD.encode(key.as_bytes()))
}

pub fn format_secret_key(key: &SigningKey) -> String {
    format!("{SECRET_PREFIX}{}\n", URL_SAFE_NO_PAD.encode(key.to_bytes()))
}

pub fn parse_secret_key(text: &str, path: &Path) -> Result<SigningKey, KeyError> {
    let bad = || KeyError::BadSecretKey(path.to_path_buf());
    let body = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
    let seed: [u8; 32] = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?.try_into().map_err(|_| bad())?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh key pair from the operating system's random source.
pub fn generate() -> std::io::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Signs `prefix || message` (every signed message starts with a
/// domain-separation prefix, see `docs/FORMAT.md`).
pub fn sign(key: &SigningKey, prefix: &[u8], message: &[u8]) -> Signature {
    let mut m = Vec::with_capacity(prefix.len() + message.len());
    m.extend_from_slice(prefix);
    m.extend_from_slice(message);
    key.sign(&m)
}

/// Strictly verifies a signature over `prefix || message`.
pub fn verify(key: &VerifyingKey, prefix: &[u8], message: &[u8], sig: &Signature) -> bool {
    let mut m = Vec::with_capacity(prefix.len() + message.len());
    m.extend_from_slice(prefix);
    m.extend_from_slice(message);
    key.verify_strict(&m, sig).is_ok()
}

pub fn encode_signature(sig: &Signature) -> String {
    URL_SAFE_NO_PAD.encode(sig.to_bytes())
}

pub fn decode_signature(s: &str) -> Option<Signature> {
    let bytes: [u8; 64] = URL_SAFE_NO_PAD.decode(s).ok()?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

/// What a trusted key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writes journal entries: signs segments, seals its own bundles.
    Origin,
    /// Carries others' segments: adds hop signatures, seals bundles.
    Relay,
    /// The archive (the central server): what its receipts confirm may be
    /// pruned below it. Grants nothing else.
    Archive,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Role::Origin => "origin",
            Role::Relay => "relay",
            Role::Archive => "archive",
        })
    }
}

/// One key in the trust store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub name: String,
    pub node: NodeId,
    pub key: String,
    pub roles: Vec<Role>,
    pub added: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
    /// Its encryption key (`age1…`): bundles can be encrypted to it. Nodes
    /// made by an older ferry have none until they run `ferry key add-encryption`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
}

impl TrustedKey {
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        parse_public_key(&self.key)
    }
}

/// The public keys a node accepts (`trust.json` in the node home).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStore {
    pub version: u32,
    pub keys: Vec<TrustedKey>,
}

impl TrustStore {
    /// Adds a key, or changes the roles of a key already trusted under the
    /// same name. Refuses weak keys, a name used for another key, a key
    /// trusted under another name, and a revoked key.
    pub fn add(&mut self, name: &str, key: &VerifyingKey, roles: &[Role]) -> Result<&TrustedKey, KeyError> {
        self.add_or_change(name, key, roles).map(|(k, _)| k)
    }

    /// [`TrustStore::add`], saying what changed.
    pub fn add_or_change(
        &mut self,
        name: &str,
        key: &VerifyingKey,
        roles: &[Role],
    ) -> Result<(&TrustedKey, TrustChange), KeyError> {
        check_node_name(name)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        let node = NodeId::of(key);
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        if let Some(i) = self.keys.iter().position(|k| k.node == node) {
            let k = &self.keys[i];
            if k.name != name {
                return Err(KeyError::KeyTaken { name: k.name.clone() });
            }
            if let Some(revoked) = k.revoked {
                return Err(KeyError::Revoked { name: k.name.clone(), node, revoked });
            }
            let change = if k.roles == roles { TrustChange::Unchanged } else { TrustChange::Roles(k.roles.clone()) };
            self.keys[i].roles = roles;
            return Ok((&self.keys[i], change));
        }
        if let Some(k) = self.keys.iter().find(|k| k.name == name) {
            return Err(KeyError::NameTaken { name: name.to_owned(), node: k.node.clone() });
        }
        self.keys.push(TrustedKey {
            name: name.to_owned(),
            node,
            key: format_public_key(key),
            roles,
            added: Timestamp::now(),
            revoked: None,
            encryption: None,
        });
        Ok((self.keys.last().expect("just pushed"), TrustChange::Added))
    }

    /// Marks the key named `name` revoked (it stays listed, with the time).
    pub fn revoke(&mut self, name: &str) -> Result<&TrustedKey, KeyError> {
        let k = self.keys.iter_mut().find(|k| k.name == name).ok_or_else(|| KeyError::NoSuchName(name.to_owned()))?;
        if k.revoked.is_none() {
            k.revoked = Some(Timestamp::now());
        }
        Ok(k)
    }

    /// Looks a signer up by node id, requiring `role`; returns its key.
    pub fn signer(&self, node: &NodeId, role: Role) -> Result<(&TrustedKey, VerifyingKey), KeyError> {
        let k = self.keys.iter().find(|k| &k.node == node).ok_or_else(|| KeyError::UnknownSigner(node.clone()))?;
        if let Some(revoked) = k.revoked {
            return Err(KeyError::RevokedSigner { name: k.name.clone(), node: node.clone(), revoked });
        }
        if !k.roles.contains(&role) {
            return Err(KeyError::WrongRole(Box::new(WrongRole {
                name: k.name.clone(),
                node: node.clone(),
                role,
                roles: k.roles.clone(),
                key: k.key.clone(),
            })));
        }
        let vk = k.verifying_key()?;
        if NodeId::of(&vk) != *node {
            return Err(KeyError::IdMismatch { name: k.name.clone(), node: node.clone() });
        }
        Ok((k, vk))
    }

    /// Records (or replaces) the encryption key of the node named `name`.
    /// Returns `None` when it had this key already, else `Some` of the key
    /// it had before (if any).
    #[allow(clippy::option_option)]
    pub fn set_encryption(
        &mut self,
        name: &str,
        key: &crate::crypt::Recipient,
    ) -> Result<Option<Option<String>>, KeyError> {
        let k = self.keys.iter_mut().find(|k| k.name == name).ok_or_else(|| KeyError::NoSuchName(name.to_owned()))?;
        let text = key.to_string();
        if k.encryption.as_deref() == Some(text.as_str()) {
            return Ok(None);
        }
        Ok(Some(k.encryption.replace(text)))
    }

    /// The node named `name` and its encryption key, for `--encrypt-to`:
    /// trusted, not revoked, with an encryption key.
    pub fn recipient(&self, name: &str) -> Result<(NodeId, crate::crypt::Recipient), KeyError> {
        let k = self.keys.iter().find(|k| k.name == name).ok_or_else(|| KeyError::NoRecipient(name.to_owned()))?;
        if let Some(revoked) = k.revoked {
            return Err(KeyError::Revoked { name: k.name.clone(), node: k.node.clone(), revoked });
        }
        let missing = || KeyError::NoEncryptionKey { name: k.name.clone(), node: k.node.clone() };
        let text = k.encryption.as_deref().ok_or_else(missing)?;
        Ok((k.node.clone(), crate::crypt::parse_recipient(text)?))
    }

    /// The trusted, not revoked keys with role archive.
    pub fn archives(&self) -> Vec<&TrustedKey> {
        self.keys.iter().filter(|k| k.revoked.is_none() && k.roles.contains(&Role::Archive)).collect()
    }

    /// The display name of a node, if trusted (revoked or not).
    pub fn name_of(&self, node: &NodeId) -> Option<&str> {
        self.keys.iter().find(|k| &k.node == node).map(|k| k.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_text_round_trips() {
        let k = generate().expect("rng").verifying_key();
        assert_eq!(parse_public_key(&format_public_key(&k)).expect("parse"), k);
        assert!(parse_public_key("ferry-ed25519:abc").is_err());
        assert!(parse_public_key("ssh-ed25519 AAAA").is_err());
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (small order 1), encoded as y = 1.
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        let weak = VerifyingKey::from_bytes(&bytes).expect("decodes");
        let mut store = TrustStore::default();
        assert!(matches!(store.add("evil", &weak, &[Role::Origin]), Err(KeyError::WeakKey)));
    }

    #[test]
    fn trusted_names_are_printable() {
        let k = generate().expect("rng").verifying_key();
        let mut store = TrustStore::default();
        for bad in ["", "field\u{1b}[31m", "a\nb", "x\u{85}", &"n".repeat(65)] {
            assert!(matches!(store.add(bad, &k, &[Role::Origin]), Err(KeyError::BadName(_))), "{bad:?}");
        }
        store.add("field-1 (Kisumu)", &k, &[Role::Origin]).expect("a plain name");
    }

    #[test]
    fn revoked_and_wrong_role_signers_are_refused() {
        let k = generate().expect("rng").verifying_key();
        let id = NodeId::of(&k);
        let mut store = TrustStore::default();
        store.add("a", &k, &[Role::Origin]).expect("add");
        assert!(store.signer(&id, Role::Origin).is_ok());
        assert!(matches!(store.signer(&id, Role::Relay), Err(KeyError::WrongRole(_))));
        store.revoke("a").expect("revoke");
        assert!(matches!(store.signer(&id, Role::Origin), Err(KeyError::RevokedSigner { .. })));
    }
}
