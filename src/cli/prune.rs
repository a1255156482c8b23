//! `ferry prune`: remove what the archive confirmed it holds.

use std::path::PathBuf;

use clap::Args;
use ferry::node::Node;
use ferry::receipt::prune::{candidate_files, prune_db, prune_files, DbPrune, FilesPrune, Known};
use ferry::receipt::Store;
use ferry::sanitize;
use serde::Serialize;

use super::apply::{entries_range, plural};
use super::output::{json, out};
use super::{home_dir, Outcome, Ui};

pub const AFTER_HELP: &str = "\
Only what the archive (the central server, trusted here with `--role archive`) has confirmed in a signed
receipt goes: the journal rows of each --db from its first row up to the end of what central confirmed, and
bundle files (this node's outbox copies, a relay's output, the quarantine, the *.tar in each --outbox) whose
every part central confirmed. A receipt is taken in by `bundle create` (and `bundle relay`) from the stick it
came back on. A receipt whose chain hash disagrees with this computer's journal is a fork: nothing is pruned,
and the message says what to do. Safe to repeat: a second run removes nothing new.

Exit status: 0 ok (also when nothing could go yet), 1 a fork stops the prune, 2 error.

Examples:
  ferry prune --db app.sqlite3
  ferry prune --db app.sqlite3 --dry-run
  ferry prune --outbox /srv/ferry/outbox            (a relay or server: its bundle files)";

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// An app database tracked by this node: remove the journal rows central confirmed.
    #[arg(long, value_name = "DB")]
    pub db: Vec<PathBuf>,
    /// A folder of bundle files kept here (an outbox): remove those central confirmed completely.
    #[arg(long, value_name = "DIR")]
    pub outbox: Vec<PathBuf>,
    /// Say what would go, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    dry_run: bool,
    archive: Option<String>,
    databases: Vec<DbPrune>,
    files: FilesPrune,
    forked_origins: Vec<String>,
}

pub fn run(a: PruneArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    for db in &a.db {
        super::apply::sqlite_only(db, "prune the journal of")?;
    }
    let node = Node::open(&home_dir(home)?)?;
    let _lock = node.lock("ferry prune")?;
    let trust = node.trust()?;
    let archives = trust.archives();
    let Some(archive_key) = archives.first() else {
        anyhow::bail!(
            "nothing can be pruned: no computer is trusted as the archive here. Run `ferry trust add central KEY \
             --role archive` with the central server's name and key (as `ferry key export` prints it there)"
        );
    };
    let archive_name = sanitize(&archive_key.name);
    let store = Store::open(&node.home)?;
    let l = super::receipts::current_loop(&node)?;
    let mut negative = false;
    let mut report = Report {
        dry_run: a.dry_run,
        archive: Some(archive_key.name.clone()),
        databases: Vec::new(),
        files: FilesPrune::default(),
        forked_origins: Vec::new(),
    };
    for db in &a.db {
        report.databases.push(prune_db(&node, db, &l, a.dry_run)?);
    }
    if l.forked() {
        negative = true;
    }
    match store.get(&archive_key.node, &trust)? {
        Some(receipt) => {
            let known = Known::of(&node)?;
            let (confirmed, forked) = known.confirmed(&receipt);
            report.forked_origins = forked.iter().map(|o| trust.name_of(o).unwrap_or(o.as_str()).to_owned()).collect();
            negative |= !forked.is_empty();
            let files = candidate_files(&node, &a.outbox)?;
            report.files = prune_files(&known, &confirmed, &files, a.dry_run)?;
            if !a.dry_run {
                let state = node.state()?;
                for f in &report.files.removed {
                    ferry::receipt::sent::clear_file(&state, node.id(), &f.display().to_string())?;
                }
            }
        }
        None => ui.note(format!(
            "no receipt from {archive_name} yet: nothing is confirmed. Its receipts come back on the sticks, and \
             `ferry bundle create` (or `bundle relay`) takes them in from the stick it writes to"
        )),
    }
    if a.json {
        json(&report)?;
        return Ok(if negative { Outcome::Negative } else { Outcome::Ok });
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for d in &report.databases {
        let db = sanitize(&d.db.display().to_string());
        match (d.pruned_to, &d.kept_because) {
            (Some(to), _) if d.rows > 0 => out(format!(
                "{db}: {verb} {} from the journal ({} are confirmed by {archive_name})",
                plural(d.rows, "row", "rows"),
                entries_range(1, to).replacen("entries 1–", "entries up to ", 1)
            ))?,
            (Some(to), _) => out(format!("{db}: nothing new to remove (the journal starts after entry {to})"))?,
            (None, Some(why)) => out(format!("{db}: kept every journal row: {}", sanitize(why)))?,
            (None, None) => out(format!("{db}: kept every journal row"))?,
        }
    }
    for f in &report.files.removed {
        out(format!("{verb} {} (every part confirmed by {archive_name})", sanitize(&f.display().to_string())))?;
    }
    if report.files.kept > 0 {
        ui.note(format!(
            "kept {} with parts {archive_name} has not confirmed",
            plural(report.files.kept, "bundle file", "bundle files")
        ));
    }
    for o in &report.forked_origins {
        eprintln!(
            "FORK     {archive_name}'s receipt disagrees with what this node knows of {}: nothing of it was pruned. \
             Run `ferry status` for the details",
            sanitize(o)
        );
    }
    if l.forked() && !a.db.is_empty() {
        eprintln!(
            "FORK     a receipt disagrees with this computer's journal: `ferry status` names it; nothing was pruned"
        );
    }
    Ok(if negative { Outcome::Negative } else { Outcome::Ok })
}
