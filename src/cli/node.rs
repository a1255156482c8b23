//! `ferry node init|show` and `ferry key export`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry::node::{Node, NodeKind};
use serde::Serialize;

use super::output::{json, out};
use super::{home_dir, Outcome, Ui};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Create this node: an ed25519 key pair, a name, an optional id block.
    #[command(
        after_help = "Examples:\n  ferry node init --name field-1 --id-block 1\n  ferry --home /srv/ferry node init --name central"
    )]
    Init(InitArgs),
    /// Show this node's identity.
    Show(JsonArg),
    /// Move this node to a higher block of integer row ids.
    #[command(after_help = "Servers need id blocks above every laptop's: a server that applies rows from a higher \
block would number its own new rows inside that block. After changing the block, run `ferry track DB` on \
this node's databases: it raises their counters into the new block. Blocks only move up.\n\n\
Example:\n  ferry node set-block 1000")]
    SetBlock(SetBlockArgs),
    /// After a fork: give this computer a new identity and send its entries again under it.
    #[command(after_help = "When two computers use one node's identity (a laptop copied with its disk), a server \
refuses one computer's entries and prints this command with the values to use. Run it on the computer whose \
entries were refused. It makes a new identity for this computer (the old one moves to retired-<id>/ in the \
node's home and stays with the other computer), gives the rows this computer added since the copy new ids in \
the new id block (and every reference to them), and keeps this computer's entries from --from on as the new \
node's journal, so `ferry bundle create` sends them again. Nothing is lost on either computer.\n\n\
--fork SEQ:HASH checks this is the right computer: it refuses to change anything when this computer's \
journal is the one the server already has.\n\n\
Example:\n  ferry node reissue app.sqlite3 --name field-1b --id-block 7 --from 16 --fork 17:9f3c0a1b2c3d4e5f")]
    Reissue(ReissueArgs),
    /// Encrypt every bundle made here to these nodes (the central server, a community server that applies them).
    #[command(after_help = "Each name must be trusted here with its encryption key (the line `ferry key export` \
printed on that computer gives both keys). From then on `ferry bundle create` encrypts every bundle made here to \
all of them, besides any --encrypt-to it is given: a lost stick or a middleman's laptop reveals no table name, key \
or value. `--none` goes back to plain bundles.\n\n\
Examples:\n  ferry node encrypt-to central\n  ferry node encrypt-to central clinic-kisumu\n  ferry node encrypt-to --none")]
    EncryptTo(EncryptToArgs),
}

#[derive(Debug, Args)]
pub struct EncryptToArgs {
    /// Names of trusted nodes (as in `ferry trust list`).
    #[arg(value_name = "NAME", required_unless_present = "none")]
    pub names: Vec<String>,
    /// Stop encrypting every bundle (each `bundle create --encrypt-to` still does).
    #[arg(long, conflicts_with = "names")]
    pub none: bool,
}

#[derive(Debug, Args)]
pub struct ReissueArgs {
    /// The app database this computer tracks.
    #[arg(value_name = "DB")]
    pub db: PathBuf,
    /// This computer's new name (the other computer keeps the old one).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The new id block: above the old one, used by no other computer.
    #[arg(long, value_name = "N")]
    pub id_block: Option<u32>,
    /// The first entry to send again, from the server's fork report.
    #[arg(long, value_name = "SEQ")]
    pub from: u64,
    /// The refused journal's chain hash at one entry, from the fork report.
    #[arg(long, value_name = "SEQ:HASH")]
    pub fork: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SetBlockArgs {
    /// The new id block (1 to 2097151), above the current one.
    #[arg(value_name = "N")]
    pub block: u32,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print this node's public keys (signing and encryption) as the `ferry trust add` line other nodes run.
    Export(JsonArg),
    /// Give this node an encryption key (nodes made by an older ferry have none), or replace it.
    #[command(after_help = "Nodes made by `ferry node init` have an encryption key; one made by an older ferry \
gets one here. Then run `ferry key export` and the printed line on the computers that send bundles to this one.\n\n\
--replace makes a new key (rotation, or after a key may have been copied): the old secret moves to \
retired-encryption/ in the node's home and still opens bundles that were encrypted to it and are still on their \
way. Senders use the new key once they ran the new `ferry trust add` line. Back up the node's home (secret.key, \
encryption.key and retired-encryption/) on a second medium kept apart: without them no bundle encrypted to this \
node can ever be read.\n\n\
Examples:\n  ferry key add-encryption\n  ferry key add-encryption --replace")]
    AddEncryption(AddEncryptionArgs),
}

#[derive(Debug, Args)]
pub struct AddEncryptionArgs {
    /// Replace the current encryption key (the old one keeps opening bundles already on their way).
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// A human name for this node (shown in status and inspect).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// This node's block of integer row ids: ids start at N × 2^32. Field laptops 1 to 999, each its own;
    /// servers from 1000.
    #[arg(long, value_name = "N")]
    pub id_block: Option<u32>,
    /// What this computer is: a field laptop (needs an id block 1–999), a middleman (relay), or a community or
    /// central server (id block from 1000).
    #[arg(long, value_enum, value_name = "KIND")]
    pub kind: Option<KindArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// A field laptop: captures the app's changes.
    Field,
    /// A middleman: carries bundles from stick to stick.
    Relay,
    /// A community or central server: applies bundles, may edit and pass them on.
    Server,
}

impl From<KindArg> for NodeKind {
    fn from(k: KindArg) -> NodeKind {
        match k {
            KindArg::Field => NodeKind::Field,
            KindArg::Relay => NodeKind::Relay,
            KindArg::Server => NodeKind::Server,
        }
    }
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ShowJson<'a> {
    home: &'a PathBuf,
    #[serde(flatten)]
    info: &'a ferry::node::NodeInfo,
}

pub fn run_node(cmd: NodeCommand, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    let home = home_dir(home)?;
    match cmd {
        NodeCommand::Init(a) => {
            let node = Node::init_kind(&home, &a.name, a.id_block, a.kind.map(NodeKind::from))?;
            let i = &node.info;
            let what = i.kind().map_or_else(|| "node".to_owned(), |k| k.to_string());
            ui.note(format!("created {what} {} ({}) in {}", i.name, i.id, home.display()));
            if let Some(b) = i.id_block {
                ui.note(format!(
                    "its id block is {b}: rows made here are numbered from {}; no other computer may use block {b}",
                    u64::from(b) << 32
                ));
            }
            ui.note("next: run `ferry key export` and the line it prints on the computers that receive from this one");
            Ok(Outcome::Ok)
        }
        NodeCommand::EncryptTo(a) => {
            let mut node = Node::open(&home)?;
            let names = if a.none { Vec::new() } else { a.names };
            node.set_encrypt_to(&names)?;
            if names.is_empty() {
                ui.note("bundles made here are no longer encrypted unless `bundle create --encrypt-to` says so");
            } else {
                ui.note(format!(
                    "every bundle made here is now encrypted to {}: only they can read its entries",
                    names.iter().map(|n| ferry::sanitize(n)).collect::<Vec<_>>().join(", ")
                ));
            }
            Ok(Outcome::Ok)
        }
        NodeCommand::SetBlock(a) => {
            let mut node = Node::open(&home)?;
            node.set_id_block(a.block)?;
            ui.note(format!(
                "node {} now gives out integer ids from {} (id block {})",
                node.info.name,
                u64::from(a.block) << 32,
                a.block
            ));
            ui.note("next: run `ferry track DB` on this node's databases to move their counters into the new block");
            Ok(Outcome::Ok)
        }
        NodeCommand::Reissue(a) => reissue(a, &home, ui),
        NodeCommand::Show(a) => {
            let node = Node::open(&home)?;
            let i = &node.info;
            if a.json {
                json(&ShowJson { home: &home, info: i })?;
            } else {
                out(format!("name      {}", i.name))?;
                out(format!("kind      {}", i.kind().map_or_else(|| "not given".to_owned(), |k| k.to_string())))?;
                out(format!("id        {}", i.id))?;
                out(format!("key       {}", i.public_key))?;
                match node.encryption_key() {
                    Some(k) => out(format!("encrypt   {k}"))?,
                    None => out("encrypt   no encryption key (run `ferry key add-encryption`)")?,
                }
                if !i.encrypt_to.is_empty() {
                    let names: Vec<String> = i.encrypt_to.iter().map(|n| ferry::sanitize(n)).collect();
                    out(format!("encrypts  every bundle to {}", names.join(", ")))?;
                }
                match i.id_block {
                    Some(b) => out(format!("id block  {b} (new integer ids from {})", u64::from(b) << 32))?,
                    None => out("id block  none")?,
                }
                out(format!("mac       {}", i.mac.as_deref().unwrap_or("unknown")))?;
                out(format!("created   {}", i.created))?;
                out(format!("home      {}", home.display()))?;
            }
            Ok(Outcome::Ok)
        }
    }
}

fn reissue(a: ReissueArgs, home: &std::path::Path, ui: &Ui) -> anyhow::Result<Outcome> {
    super::apply::sqlite_only(&a.db, "reissue the rows of")?;
    let fork = match &a.fork {
        None => None,
        Some(f) => {
            let (seq, hash) = f
                .split_once(':')
                .and_then(|(s, h)| Some((s.parse::<u64>().ok()?, h)))
                .filter(|(_, h)| !h.is_empty() && h.len() <= 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| {
                    anyhow::anyhow!("--fork takes SEQ:HASH as the fork report prints it, e.g. 17:9f3c0a1b2c3d4e5f")
                })?;
            Some(ferry::capture::ForkCheck { seq, hash: hash.to_owned() })
        }
    };
    let old = Node::open(home)?;
    let staged = old.stage_successor(&a.name, a.id_block)?;
    let staging = staged.home.clone();
    let report =
        match ferry::capture::reissue(&staged, old.id().as_str(), old.info.id_block, &a.db, a.from, fork.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e.into());
            }
        };
    let old_name = old.info.name.clone();
    let new = old.adopt(staged)?;
    if a.json {
        json(&report)?;
    } else {
        out(format!(
            "this computer is now node {} ({}); {} keeps the old identity",
            new.info.name, new.info.id, old_name
        ))?;
        out(format!(
            "{} entries will be sent again as {}'s; {} shared with the other computer were left to it",
            report.entries, new.info.name, report.dropped
        ))?;
        for (t, n) in &report.renumbered {
            out(format!(
                "{t}: {n} rows added since the copy have new ids in id block {}",
                new.info.id_block.unwrap_or(0)
            ))?;
        }
    }
    ui.note("next: run `ferry key export` here and the printed line on the middleman and the servers; then `ferry bundle create` as usual");
    Ok(Outcome::Ok)
}

#[derive(Serialize)]
struct ExportJson<'a> {
    name: &'a str,
    node: &'a ferry::keys::NodeId,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption: Option<String>,
    roles: &'a [ferry::keys::Role],
}

pub fn run_key(cmd: KeyCommand, home: Option<PathBuf>, _ui: &Ui) -> anyhow::Result<Outcome> {
    let mut node = Node::open(&home_dir(home)?)?;
    let a = match cmd {
        KeyCommand::Export(a) => a,
        KeyCommand::AddEncryption(a) => {
            let key = node.add_encryption(a.replace)?;
            _ui.note(format!("this node's encryption key is now {key}"));
            if a.replace {
                _ui.note("the old key moved to retired-encryption/ and still opens bundles encrypted to it");
            }
            _ui.note("next: run `ferry key export` and the line it prints on the computers that send to this one");
            return Ok(Outcome::Ok);
        }
    };
    let i = &node.info;
    let roles = i.roles();
    let encryption = node.encryption_key().map(|k| k.to_string());
    if a.json {
        json(&ExportJson { name: &i.name, node: &i.id, key: &i.public_key, encryption, roles: &roles })?;
    } else {
        let flags: Vec<String> = roles.iter().map(|r| format!("--role {r}")).collect();
        let keys = match &encryption {
            Some(e) => format!("{} {e}", i.public_key),
            None => i.public_key.clone(),
        };
        out(format!("ferry trust add {} {keys} {}", shell_word(&i.name), flags.join(" ")))?;
        if encryption.is_none() {
            _ui.note(
                "this node has no encryption key yet (made by an older ferry), so nothing can be encrypted to it: \
                 run `ferry key add-encryption` first if bundles should be encrypted to it",
            );
        }
        if i.kind() == Some(NodeKind::Server) {
            _ui.note(format!(
                "if this is the central server (the archive), the computers below it (laptops, the middleman, the \
                 community server) trust it as such, to take its receipts and prune what it holds: there, run \
                 `ferry trust add {} {} --role archive`",
                shell_word(&i.name),
                keys
            ));
        }
        if i.kind().is_none() {
            _ui.note(
                "this node was made without --kind or --id-block, so the line trusts it for both roles; \
                 a middleman needs only --role relay",
            );
        }
    }
    Ok(Outcome::Ok)
}

/// Quotes a name for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
