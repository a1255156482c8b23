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
research assistant's records, then what came back confirmed in receipts of what this node sent and \
carried onward, per receiving node. With --db, shows a database: for an app's database, what capture recorded \
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
    /// For a scheduled task: exit 1 when something needs a person. On a laptop, entries the archive (central
    /// server) has not confirmed DAYS days after they were sent, or a fork; on a relay (the middleman), what it
    /// passed on that the archive has not confirmed DAYS days later; with --db at a server, origins not heard
    /// from for DAYS days.
    #[arg(long, conflicts_with = "list")]
    pub check: bool,
    /// The age, in days, after which --check flags entries not confirmed or origins not heard from.
    #[arg(long, value_name = "DAYS", env = "FERRY_OVERDUE_DAYS", default_value_t = ferry::receipt::confirm::DEFAULT_DAYS)]
    pub overdue_days: u32,
}

pub fn run(a: StatusArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    if a.check && a.json {
        return check_json(&a, home);
    }
    if let Some(db) = a.db {
        // A server (PostgreSQL, MariaDB) has no capture; its apply ledger is read there.
        let server = matches!(ferry::target::Target::parse(db.as_os_str())?, ferry::target::Target::Server(_));
        let db = if server { PathBuf::from(db) } else { super::apply::sqlite_target(&db, "show the status of")? };
        // A database the app writes (a laptop's, or a server's own): what
        // its capture holds and waits to send comes first.
        let mut negative = false;
        if !a.json && !a.list && !server {
            let c = ferry::capture::status(&db)?;
            if c.tracked {
                let node = home_dir(home.clone()).ok().and_then(|h| Node::open(&h).ok());
                super::track::print_capture(&c, node.as_ref(), ui)?;
                if let Some(node) = node.filter(|n| c.origin.as_deref() == Some(n.id().as_str())) {
                    let trust = node.trust()?;
                    let l = super::receipts::loop_of(&node, &trust)?;
                    let fix = format!("ferry bundle create --db {} --out DIR", db.display());
                    negative |= super::receipts::print_loop(
                        &l,
                        &node,
                        a.overdue_days,
                        a.check,
                        super::receipts::Whose::Own { fix: &fix },
                        &trust,
                    )?;
                }
            }
        }
        let trust = home_dir(home.clone()).ok().and_then(|h| Node::open(&h).ok()).and_then(|n| n.trust().ok());
        let r = super::apply::run_db_status(
            super::apply::StatusArgs { db: db.clone(), json: a.json, list: a.list, overdue_days: a.overdue_days },
            home,
        )?;
        if a.check && !a.json {
            negative |= check_silent_origins(&db, a.overdue_days, trust.as_ref())?;
        }
        return Ok(if negative || matches!(r, Outcome::Negative) { Outcome::Negative } else { Outcome::Ok });
    }
    let node = Node::open(&home_dir(home)?)?;
    let status = ledger_status(&node)?;
    let sent_any = !ferry::receipt::sent::all(&node.state()?, node.id())?.is_empty();
    let carried = super::receipts::carried_loops(&node)?;
    if a.json {
        json(&node_json(&node, &status, sent_any, &carried, a.overdue_days)?)?;
        return Ok(Outcome::Ok);
    }
    human(&status, ui)?;
    let mut negative = false;
    let trust = node.trust()?;
    if sent_any || (a.check && carried.is_empty()) {
        let l = super::receipts::loop_of(&node, &trust)?;
        negative |= super::receipts::print_loop(
            &l,
            &node,
            a.overdue_days,
            a.check && sent_any,
            super::receipts::Whose::Own { fix: "ferry bundle create --out DIR" },
            &trust,
        )?;
    }
    // A relay: what it carried onward, and what came back confirmed.
    for l in &carried {
        negative |=
            super::receipts::print_loop(l, &node, a.overdue_days, a.check, super::receipts::Whose::Carried, &trust)?;
    }
    if a.check && !carried.is_empty() && !carried[0].has_archive {
        negative = true;
        eprintln!("{}", super::receipts::no_archive_message());
    }
    Ok(if negative { Outcome::Negative } else { Outcome::Ok })
}

/// `status --json` of a node: its relay ledger, and what came back
/// confirmed of what it sent and carried onward.
#[derive(serde::Serialize)]
struct NodeJson<'a> {
    #[serde(flatten)]
    ledger: &'a LedgerStatus,
    receipts: NodeReceipts,
}

/// The `receipts` of `status --json`.
#[derive(serde::Serialize)]
struct NodeReceipts {
    /// This node's own entries sent by `bundle create` (`null` when it sent none).
    sent: Option<ferry::receipt::confirm::Report>,
    /// Per origin, the entries this node carried onward as a relay.
    carried: Vec<ferry::receipt::confirm::Report>,
}

fn node_json<'a>(
    node: &Node,
    status: &'a LedgerStatus,
    sent_any: bool,
    carried: &[ferry::receipt::confirm::Loop],
    days: u32,
) -> anyhow::Result<NodeJson<'a>> {
    let now = ferry::journal::Timestamp::now();
    let trust = node.trust()?;
    let sent = if sent_any {
        Some(super::receipts::current_loop(node)?.report(Some(node.info.name.clone()), now, days))
    } else {
        None
    };
    let carried =
        carried.iter().map(|l| l.report(super::receipts::origin_name(node, &trust, &l.origin), now, days)).collect();
    Ok(NodeJson { ledger: status, receipts: NodeReceipts { sent, carried } })
}

/// `status --db DB --check` at a server: origins whose last bundle was
/// applied more than `days` days ago (a laptop that stopped sending).
/// Returns whether any was found.
fn check_silent_origins(
    db: &std::path::Path,
    days: u32,
    trust: Option<&ferry::keys::TrustStore>,
) -> anyhow::Result<bool> {
    let silent = silent_origins(db, days, trust)?;
    for (name, last) in &silent {
        eprintln!(
            "SILENT   nothing arrived from {} for {} (last on {}): ask whether that laptop still sends, and              whether a stick is on its way",
            sanitize(name),
            super::apply::plural(((ferry::journal::Timestamp::now().0 - last.0) / ferry::receipt::confirm::DAY) as u64, "day", "days"),
            local_time(last)
        );
    }
    if silent.is_empty() {
        out(format!("check: ok, every origin was heard from within {days} days"))?;
    }
    Ok(!silent.is_empty())
}

/// The origins of `db` not heard from for `days` days: (name or id, last apply).
fn silent_origins(
    db: &std::path::Path,
    days: u32,
    trust: Option<&ferry::keys::TrustStore>,
) -> anyhow::Result<Vec<(String, ferry::journal::Timestamp)>> {
    let s = ferry::apply::status::db_status(db)?;
    let limit = ferry::journal::Timestamp::now().0 - i64::from(days) * ferry::receipt::confirm::DAY;
    let mut v = Vec::new();
    for o in &s.origins {
        let Some(last) = o.last_apply.as_deref().and_then(|t| ferry::journal::Timestamp::parse(t).ok()) else {
            continue;
        };
        if last.0 < limit {
            let name = trust.and_then(|t| {
                let id = ferry::keys::NodeId::try_from(o.origin.clone()).ok()?;
                t.name_of(&id).map(str::to_owned)
            });
            v.push((name.unwrap_or_else(|| o.origin.clone()), last));
        }
    }
    Ok(v)
}

/// `status --check --json`: the check's findings as JSON.
fn check_json(a: &StatusArgs, home: Option<PathBuf>) -> anyhow::Result<Outcome> {
    #[derive(serde::Serialize)]
    struct Check {
        ok: bool,
        overdue: Vec<ferry::receipt::confirm::Pending>,
        /// A relay's: per origin carried onward, the entries overdue.
        overdue_carried: Vec<Carried>,
        forks: u64,
        archive: bool,
        silent_origins: Vec<Silent>,
    }
    #[derive(serde::Serialize)]
    struct Carried {
        origin: ferry::keys::NodeId,
        name: Option<String>,
        overdue: Vec<ferry::receipt::confirm::Pending>,
    }
    #[derive(serde::Serialize)]
    struct Silent {
        origin: String,
        last_apply: ferry::journal::Timestamp,
    }
    let node = Node::open(&home_dir(home)?)?;
    let now = ferry::journal::Timestamp::now();
    let mut c = Check {
        ok: true,
        overdue: Vec::new(),
        overdue_carried: Vec::new(),
        forks: 0,
        archive: true,
        silent_origins: Vec::new(),
    };
    let db = match &a.db {
        Some(db) => Some(super::apply::sqlite_target(db, "check")?),
        None => None,
    };
    let own = match &db {
        Some(db) => ferry::capture::status(db)?.origin.as_deref() == Some(node.id().as_str()),
        None => !ferry::receipt::sent::all(&node.state()?, node.id())?.is_empty(),
    };
    if own {
        let l = super::receipts::current_loop(&node)?;
        c.overdue = l.overdue(now, a.overdue_days);
        c.forks = l.receivers.iter().map(|r| r.forks.len() as u64).sum();
        c.archive = l.has_archive;
    }
    if db.is_none() {
        let trust = node.trust()?;
        for l in super::receipts::carried_loops(&node)? {
            c.forks += l.receivers.iter().map(|r| r.forks.len() as u64).sum::<u64>();
            c.archive &= l.has_archive;
            let overdue = l.overdue(now, a.overdue_days);
            if !overdue.is_empty() {
                let name = super::receipts::origin_name(&node, &trust, &l.origin);
                c.overdue_carried.push(Carried { origin: l.origin.clone(), name, overdue });
            }
        }
    }
    if let Some(db) = &db {
        c.silent_origins = silent_origins(db, a.overdue_days, node.trust().ok().as_ref())?
            .into_iter()
            .map(|(origin, last_apply)| Silent { origin, last_apply })
            .collect();
    }
    c.ok = c.overdue.is_empty()
        && c.overdue_carried.is_empty()
        && c.forks == 0
        && c.archive
        && c.silent_origins.is_empty();
    json(&c)?;
    Ok(if c.ok { Outcome::Ok } else { Outcome::Negative })
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
