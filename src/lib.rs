//! ferry: carry signed, compressed database change journals between computers
//! that are rarely online.
//!
//! The library holds the whole engine; the `ferry` binary is a thin clap layer
//! over it. One module per concept:
//!
//! - [`apply`]: verified, exactly-once, convergent apply of bundles into SQLite.
//! - [`value`]: SQLite values in journal JSON, exact round trips.
//! - [`journal`]: journal entries and journal files (JSON Lines and legacy).
//! - [`keys`]: ed25519 identities, the key text format, the trust store.
//! - [`crypt`]: encryption identities and encrypting bundle contents (age).
//! - [`node`]: a node's home folder (identity, trust, state).
//! - [`chain`]: chain hashes over a journal.
//! - [`bundle`]: the bundle file format: writing, reading, creating.
//! - [`verify`]: checking bundles against a trust store.
//! - [`relay`]: passing bundles on (verify, dedupe, merge, re-sign) and the relay ledger.
//! - [`receipt`]: signed receipts of what a node holds, travelling back down the road; what a laptop sent and what was confirmed.
//! - [`schema`]: app database tables and the schema fingerprint.
//! - [`target`]: what `--db` names: a SQLite file or a server URL (passwords never shown).
//! - [`capture`]: `ferry track`: triggers that journal an app database's changes.

#![forbid(unsafe_code)]

pub mod apply;
pub mod bundle;
pub mod capture;
pub mod chain;
pub mod crashpoint;
pub mod crypt;
pub mod fsutil;
pub mod journal;
pub mod keys;
pub mod node;
pub mod progress;
pub mod receipt;
pub mod relay;
pub mod schema;
pub mod state;
pub mod synth;
pub mod target;
pub mod value;
pub mod verify;

/// Escapes text that came from outside (file names, table names, entries)
/// before it is printed: control characters become `\u{..}` escapes, so a
/// hostile name cannot move the cursor or fake output lines.
pub fn sanitize(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}
