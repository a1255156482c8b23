//! `ferry node init|show` and `ferry key export`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry::node::Node;
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
}

#[derive(Debug, Args)]
pub struct SetBlockArgs {
    /// The new id block (1 to 2097151), above the current one.
    #[arg(value_name = "N")]
    pub block: u32,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print this node's public key as the `ferry trust add` line other nodes run.
    Export(JsonArg),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// A human name for this node (shown in status and inspect).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// This node's block of integer row ids: ids start at N × 2^32 (1 to 2097151).
    #[arg(long, value_name = "N")]
    pub id_block: Option<u32>,
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
            let node = Node::init(&home, &a.name, a.id_block)?;
            ui.note(format!("created node {} ({}) in {}", node.info.name, node.info.id, home.display()));
            ui.note("next: give other nodes your key with `ferry key export`");
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
        NodeCommand::Show(a) => {
            let node = Node::open(&home)?;
            let i = &node.info;
            if a.json {
                json(&ShowJson { home: &home, info: i })?;
            } else {
                out(format!("name      {}", i.name))?;
                out(format!("id        {}", i.id))?;
                out(format!("key       {}", i.public_key))?;
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

#[derive(Serialize)]
struct ExportJson<'a> {
    name: &'a str,
    node: &'a ferry::keys::NodeId,
    key: &'a str,
}

pub fn run_key(cmd: KeyCommand, home: Option<PathBuf>, _ui: &Ui) -> anyhow::Result<Outcome> {
    let node = Node::open(&home_dir(home)?)?;
    let KeyCommand::Export(a) = cmd;
    let i = &node.info;
    if a.json {
        json(&ExportJson { name: &i.name, node: &i.id, key: &i.public_key })?;
    } else {
        out(format!("ferry trust add {} {}", shell_word(&i.name), i.public_key))?;
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
