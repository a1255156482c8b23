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
research assistant's records. With --db, shows a database bundles were applied to (exit 1 when a fork \
is recorded).\n\nExamples:\n  ferry status\n  ferry status --db central.sqlite3\n  ferry status --json | jq '.origins[].ranges'")]
pub struct StatusArgs {
    /// Show a database bundles were applied to instead: per origin, applied and missing seq ranges,
    /// last seen, forks, parked entries and conflicts.
    #[arg(long, value_name = "TARGET")]
    pub db: Option<PathBuf>,
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
    out(format!("node {} ({})", sanitize(&s.name), s.node))?;
    if s.origins.is_empty() {
        ui.note("this node has relayed nothing yet (`ferry bundle relay`)");
        return Ok(());
    }
    for o in &s.origins {
        let name = o.name.as_deref().map(sanitize).unwrap_or_else(|| "unknown".into());
        let ranges: Vec<String> = o.ranges.iter().map(|r| format!("{}..={}", r[0], r[1])).collect();
        out(format!("origin {name} ({}): {} entries, seq {}", o.origin, o.entries, ranges.join(", ")))?;
        out(format!("    time      {} .. {}", o.ts_min, o.ts_max))?;
        if !o.gaps.is_empty() {
            let gaps: Vec<String> = o.gaps.iter().map(|r| format!("{}..={}", r[0], r[1])).collect();
            out(format!("    missing   seq {} (not carried by this node)", gaps.join(", ")))?;
        }
        for (t, c) in &o.tables {
            out(super::output::table_counts(t, c))?;
        }
        for c in &o.segments {
            out(format!(
                "    seq {}..={} ({} entries) from {} on {}, passed on in {}",
                c.first_seq,
                c.last_seq,
                c.count,
                sanitize(&c.source),
                c.carried_at,
                sanitize(c.output.as_deref().unwrap_or("?"))
            ))?;
        }
    }
    Ok(())
}
