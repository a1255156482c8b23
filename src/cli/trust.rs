//! `ferry trust add|list|revoke`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use ferry::keys::{self, Role};
use ferry::node::Node;

use super::output::{json, out};
use super::{home_dir, Outcome, Ui};

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Accept another node's key (the line `ferry key export` printed there), or change its roles.
    #[command(
        after_help = "Roles: origin for a computer whose own entries this node takes (a field laptop, a server \
with local edits), relay for one that carries others' bundles (a middleman, a community server); a server that \
does both needs both; archive for the central server, on the computers below it (laptops, middleman, \
community server): what its signed receipts confirm may be pruned there. `ferry key export` prints the line with \
the right roles. Running `trust add` again with \
the same name and key changes its roles.\n\n\
Examples:\n  ferry trust add field-1 ferry-ed25519:3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA --role origin\n  \
ferry trust add central ferry-ed25519:… age1… --role origin --role relay"
    )]
    Add(AddArgs),
    /// List trusted keys.
    List(super::node::JsonArg),
    /// Stop accepting a key; its bundles are rejected from now on.
    Revoke {
        /// The name given at `trust add`.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Writes journal entries (a field laptop, a server with local edits).
    Origin,
    /// Carries others' bundles (a middleman laptop, a community server).
    Relay,
    /// The archive: the central server, whose receipts let the computers below it prune what it holds.
    Archive,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A name for the node.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Its public key, `ferry-ed25519:…`.
    #[arg(value_name = "KEY")]
    pub key: String,
    /// Its encryption key, `age1…` (bundles can then be encrypted to it); printed by `ferry key export` after KEY.
    #[arg(value_name = "ENCRYPTION_KEY")]
    pub encryption: Option<String>,
    /// What the node may do; repeat for both.
    #[arg(long, value_enum, value_name = "ROLE", default_values_t = [RoleArg::Origin])]
    pub role: Vec<RoleArg>,
}

pub fn run(cmd: TrustCommand, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    let node = Node::open(&home_dir(home)?)?;
    let mut trust = node.trust()?;
    match cmd {
        TrustCommand::Add(a) => {
            let key = keys::parse_public_key(&a.key)?;
            let encryption = a.encryption.as_deref().map(ferry::crypt::parse_recipient).transpose()?;
            let roles: Vec<Role> = a
                .role
                .iter()
                .map(|r| match r {
                    RoleArg::Origin => Role::Origin,
                    RoleArg::Relay => Role::Relay,
                    RoleArg::Archive => Role::Archive,
                })
                .collect();
            let (k, change) = trust.add_or_change(&a.name, &key, &roles)?;
            let k = k.clone();
            let replaced = match &encryption {
                Some(e) => trust.set_encryption(&k.name, e)?,
                None => None,
            };
            node.save_trust(&trust)?;
            match change {
                keys::TrustChange::Added => {
                    ui.note(format!("now trusting {} ({}) as {}", k.name, k.node, roles_text(&k.roles)))
                }
                keys::TrustChange::Roles(before) => ui.note(format!(
                    "{} ({}) is now trusted as {} (was {})",
                    k.name,
                    k.node,
                    roles_text(&k.roles),
                    roles_text(&before)
                )),
                keys::TrustChange::Unchanged => {
                    ui.note(format!("{} ({}) was trusted as {} already", k.name, k.node, roles_text(&k.roles)))
                }
            }
            match (replaced, &encryption) {
                (Some(Some(_)), Some(_)) => ui.note(format!(
                    "{}'s encryption key changed: bundles made here from now on are encrypted to the new one",
                    k.name
                )),
                (Some(None), Some(_)) => ui.note(format!("bundles can now be encrypted to {}", k.name)),
                _ => {}
            }
        }
        TrustCommand::List(a) => {
            if a.json {
                json(&trust.keys)?;
            } else {
                for k in &trust.keys {
                    let state = match k.revoked {
                        Some(t) => format!("revoked {t}"),
                        None => "trusted".into(),
                    };
                    let enc = if k.encryption.is_some() { "  encrypt" } else { "" };
                    out(format!(
                        "{:<20} {}  {:<13} {state}{enc}",
                        ferry::sanitize(&k.name),
                        k.node,
                        roles_text(&k.roles)
                    ))?;
                }
            }
        }
        TrustCommand::Revoke { name } => {
            let k = trust.revoke(&name)?.clone();
            node.save_trust(&trust)?;
            ui.note(format!("revoked {} ({}); its bundles are rejected from now on", k.name, k.node));
        }
    }
    Ok(Outcome::Ok)
}

fn roles_text(roles: &[Role]) -> String {
    roles.iter().map(Role::to_string).collect::<Vec<_>>().join(" and ")
}
