//! `ferry status`: what this node carried as a relay, per origin.

use std::path::PathBuf;

use clap::Args;
use ferry::node::Node;
use ferry::relay::{ledger_status, LedgerStatus};
use ferry::sanitize;

use super::output::{json, out};
use super::{home_dir, Outcome, Ui};

#[derive(Debug, Args)]
#[command(after_help = "Lists, per origin, the seq ranges this node relayed (and gaps between them), \
entries, tables, time span and the folders (sticks) they came from: compare them with the \
research assistant's records. With --db, shows a database: for an app's database, what capture recorded \
and what still waits to be bundled; for one bundles were applied to, what arrived from each origin (exit 1 \
when a fork is recorded).\n\nExamples:\n  ferry status\n  ferry status --db central.sqlite3\n  ferry status --json | jq '.origins[].ranges'")]
pub struct StatusArgs {
    /// Show a database instead: what its capture waits to send, and per origin the entries applied and
    /// missing, last seen, forks, waiting entries and conflicts.
    #[arg(long, value_name = "TARGET")]
    pub db: Option<std::ffi::OsString>,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
    /// With --db: list every write waiting for its row, entry waiting for its time, row held back and
    /// quarantined entry, with its table, key and reason.
    #[arg(long, requires = "db")]
    pub list: bool,
}

pub fn run(a: StatusArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    if let Some(db) = a.db {
        let db = super::apply::sqlite_target(&db, "show the status of")?;
        // A database the app writes (a laptop's, or a server's own): what
        // its capture holds and waits to send comes first.
        if !a.json && !a.list {
            let c = ferry::capture::status(&db)?;
            if c.tracked {
                let node = home_dir(home.clone()).ok().and_then(|h| Node::open(&h).ok());
                super::track::print_capture(&c, node.as_ref(), ui)?;
            }
        }
        return super::apply::run_db_status(super::apply::StatusArgs { db, json: a.json, list: a.list }, home);
    }
    let node = Node::open(&home_dir(home)?)?;
    let status = ledger_status(&node)?;
    if a.json {
        json(&status)?;
    } else {
        human(&status, ui)?;
    }
    Ok(Outcome::Ok)
}

fn human(s: &LedgerStatus, ui: &Ui) -> anyhow::Result<()> {
    use super::apply::{entries_range, plural};
    out(format!("node {} ({})", sanitize(&s.name), s.node))?;
    if s.origins.is_empty() {
        ui.note(
            "this node has relayed nothing yet. For a database (the app's, or one bundles are applied to): \
             `ferry status --db DB`",
        );
        return Ok(());
    }
    let ranges = |r: &[[u64; 2]]| r.iter().map(|r| entries_range(r[0], r[1])).collect::<Vec<_>>().join(", ");
    for o in &s.origins {
        let name = o.name.as_deref().map(sanitize).unwrap_or_else(|| format!("unknown node {}", o.origin));
        out(format!("from {name}: {} carried ({})", plural(o.entries, "entry", "entries"), ranges(&o.ranges)))?;
        out(format!("    written   {} to {}", local_time(&o.ts_min), local_time(&o.ts_max)))?;
        if !o.gaps.is_empty() {
            out(format!("    missing   {} (never came through this node)", ranges(&o.gaps)))?;
        }
        for (t, c) in &o.tables {
            out(super::output::table_counts(t, c))?;
        }
        for c in &o.segments {
            out(format!(
                "    {} from {} on {}, passed on in {}",
                entries_range(c.first_seq, c.last_seq),
                sanitize(&c.source),
                local_time(&c.carried_at),
                sanitize(c.output.as_deref().unwrap_or("?"))
            ))?;
        }
    }
    Ok(())
}

/// A time for people: local time, to the minute.
pub fn local_time(t: &ferry::journal::Timestamp) -> String {
    chrono::DateTime::from_timestamp_micros(t.0)
        .map(|d| d.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| t.to_string())
}
