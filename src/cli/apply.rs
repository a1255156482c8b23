//! `ferry bundle apply`, `ferry conflicts --db`, `ferry status --db`, and
//! `ferry bundle verify --against`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;
use ferry::apply::status::{conflicts, db_status};
use ferry::apply::{apply, check_against, open_target, ApplyOptions, TargetShape};
use ferry::bundle::find_bundles;
use ferry::node::Node;
use ferry::sanitize;
use ferry::target::Target;

use super::output::{json, out};
use super::{home_dir, Outcome, Ui};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The target database (its schema made by the app, e.g. Django's `migrate`): a SQLite file, or a
    /// PostgreSQL server's URL (postgresql://USER@HOST/DB; the password from PGPASSWORD or ~/.pgpass, as its own
    /// clients find it). MariaDB/MySQL URLs (mysql://USER@HOST/DB) are not applied to yet.
    #[arg(long, value_name = "TARGET")]
    pub db: OsString,
    /// Bundle files or folders holding them.
    #[arg(value_name = "FILE|DIR", required_unless_present = "retry_quarantined")]
    pub paths: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// First try the quarantined entries again (after this database was migrated, say); `ferry status --db DB
    /// --list` shows them and why.
    #[arg(long)]
    pub retry_quarantined: bool,
}

#[derive(Debug, Args)]
pub struct ConflictsArgs {
    /// The target database bundles were applied to: a SQLite file or a server URL.
    #[arg(long, value_name = "TARGET")]
    pub db: OsString,
    /// Print the conflicts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `ferry status --db` shows (the flag lives on `status::StatusArgs`).
#[derive(Debug)]
pub struct StatusArgs {
    pub db: PathBuf,
    pub json: bool,
    pub list: bool,
    /// For the JSON's `receipts`: the age after which unconfirmed entries are overdue.
    pub overdue_days: u32,
}

/// An RFC 3339 time recorded in a ledger, in local time to the minute.
fn local_rfc3339(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|d| d.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| sanitize(at))
}

/// "1 entry", "2 entries".
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A node's name in this node's trust store.
pub fn trusted_name(trust: Option<&ferry::keys::TrustStore>, node: &str) -> Option<String> {
    trust.and_then(|t| t.keys.iter().find(|k| k.node.as_str() == node)).map(|k| k.name.clone())
}

/// A node for people: its name in this node's trust store, else its id.
pub fn who(trust: Option<&ferry::keys::TrustStore>, node: &str) -> String {
    trust
        .and_then(|t| t.keys.iter().find(|k| k.node.as_str() == node))
        .map_or_else(|| node.to_owned(), |k| sanitize(&k.name))
}

/// A seq range for people: "entries 3–9", "entry 4".
pub fn entries_range(a: u64, b: u64) -> String {
    if a == b {
        format!("entry {a}")
    } else {
        format!("entries {a}–{b}")
    }
}

/// What happened to the entries counted in `c`, in words.
fn outcome_words(c: &ferry::apply::Counts) -> String {
    let mut parts = vec![format!("{} applied", c.applied)];
    if c.superseded > 0 {
        parts.push(format!("{} superseded by newer writes", c.superseded));
    }
    if c.parked > 0 {
        parts.push(format!("{} waiting", c.parked));
    }
    if c.quarantined > 0 {
        parts.push(format!("{} quarantined", c.quarantined));
    }
    if c.skipped > 0 {
        parts.push(format!("{} already applied before", c.skipped));
    }
    let mut s = format!("{}: {}", plural(c.received, "entry", "entries"), parts.join(", "));
    if c.conflicts > 0 {
        s.push_str(&format!("; {} recorded", plural(c.conflicts, "conflict", "conflicts")));
    }
    s
}

pub fn run_apply(a: ApplyArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    let node = Node::open(&home_dir(home)?)?;
    let trust = node.trust()?;
    let files = if a.paths.is_empty() { Vec::new() } else { find_bundles(&a.paths)? };
    if files.is_empty() && !a.retry_quarantined {
        anyhow::bail!(
            "no bundles (*.tar) found in {}",
            a.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let opts =
        ApplyOptions { retry_quarantined: a.retry_quarantined, now: None, keyring: node.keyring(), pass_closed: false };
    let (negative, holdings) = match Target::parse(&a.db)? {
        Target::Sqlite(db) => {
            let negative = apply_files(&db, None, &files, &trust, &opts, a.json, ui)?;
            (negative, target_holdings(&db)?)
        }
        Target::Server(s) => {
            let label = PathBuf::from(s.to_string());
            let negative = apply_files(&label, Some(&s), &files, &trust, &opts, a.json, ui)?;
            let conn = ferry::apply::server::session(&s)?;
            (negative, ferry::apply::server::holdings(&*conn).map_err(|e| anyhow::anyhow!("{}: {e}", s))?)
        }
    };
    // What the database now holds, signed, goes back the way the bundles came.
    let hop = ferry::receipt::after_hop(&node, &holdings, &ferry::receipt::folders_of(&a.paths))?;
    super::receipts::print_hop(&hop, ui);
    Ok(if negative { Outcome::Negative } else { Outcome::Ok })
}

/// What the apply ledger of `db` holds, per origin (for its receipt).
pub fn target_holdings(db: &std::path::Path) -> anyhow::Result<ferry::receipt::Holdings> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(ferry::receipt::Holdings::from_target(&conn)?)
}

/// Applies the bundles found in `paths` to `db` and prints the report
/// (`bundle relay --apply`); whether the verdict is negative.
pub fn apply_and_print(
    db: &std::path::Path,
    paths: &[PathBuf],
    home: Option<PathBuf>,
    as_json: bool,
    ui: &Ui,
) -> anyhow::Result<bool> {
    let node = Node::open(&home_dir(home)?)?;
    let trust = node.trust()?;
    let files = find_bundles(paths)?;
    if files.is_empty() {
        return Ok(false);
    }
    // Segments encrypted to other nodes travel on with the relay.
    let opts = ApplyOptions { keyring: node.keyring(), pass_closed: true, ..ApplyOptions::default() };
    apply_files(db, None, &files, &trust, &opts, as_json, ui)
}

fn apply_files(
    db_path: &std::path::Path,
    server: Option<&ferry::target::Server>,
    files: &[PathBuf],
    trust: &ferry::keys::TrustStore,
    opts: &ApplyOptions,
    as_json: bool,
    ui: &Ui,
) -> anyhow::Result<bool> {
    let mut progress = ui.progress();
    let report = match server {
        Some(s) => ferry::apply::apply_server(s, files, trust, opts, progress.as_mut())?,
        None => apply(db_path, files, trust, opts, progress.as_mut())?,
    };
    if as_json {
        json(&report)?;
        return Ok(report.negative());
    }
    let a = ApplyView { db: db_path, retry_quarantined: opts.retry_quarantined };
    let trust = trust.clone();
    let db = sanitize(&a.db.display().to_string());
    if report.local.received > 0 {
        out(format!(
            "local    {}: {} made in this database since the last apply, merged with their own times",
            db,
            plural(report.local.received, "edit", "edits")
        ))?;
    }
    if a.retry_quarantined {
        let r = &report.retried;
        out(format!(
            "retried  {}: {} applied, {} superseded, {} waiting, {} still quarantined",
            plural(r.received, "quarantined entry", "quarantined entries"),
            r.applied,
            r.superseded,
            r.parked,
            r.quarantined
        ))?;
    }
    for b in &report.bundles {
        let file = sanitize(&b.file.display().to_string());
        match &b.error {
            Some(e) => match &b.refused_before {
                None => out(format!("REFUSED  {file}: {} (nothing of it was applied)", sanitize(e)))?,
                Some(at) => out(format!(
                    "refused  {file}: still, as first reported on {} (nothing of it was applied): {}",
                    local_rfc3339(at),
                    sanitize(e)
                ))?,
            },
            None => {
                out(format!("applied  {file}: {}", outcome_words(&b.counts)))?;
                for s in &b.segments {
                    if let Some(to) = &s.carried_unread {
                        out(format!(
                            "carried  {file}: {}'s {}: encrypted to {}, not to this server; passed on unread",
                            who(Some(&trust), &s.origin),
                            entries_range(s.first_seq, s.last_seq),
                            sanitize(to)
                        ))?;
                    }
                    if let Some(why) = &s.refused {
                        let (word, again) = match &s.refused_before {
                            None => ("REFUSED ", String::new()),
                            Some(at) => ("refused ", format!(" still, as first reported on {}", local_rfc3339(at))),
                        };
                        out(format!(
                            "{word} {file}: {}'s {}{again} (the rest of the bundle applied): {}",
                            who(Some(&trust), &s.origin),
                            entries_range(s.first_seq, s.last_seq),
                            sanitize(why)
                        ))?;
                    }
                    if let Some(f) = &s.fork {
                        let name = who(Some(&trust), &f.origin);
                        out(format!(
                            "FORK     {file}: {name}'s {} differ from what this database already has from {name} \
                             (from entry {} on): two computers are using {name}'s identity (a copied laptop?). That \
                             part was not applied and nothing is lost. To keep both computers' work, on the computer \
                             that made this bundle run\n           ferry node reissue APP.sqlite3 --name {name}-b \
                             --id-block N --from {} --fork {}:{}\n         (APP.sqlite3: its app database; N: an id \
                             block no other computer uses, above {name}'s), then add its new key here and at the \
                             middleman (`ferry key export` there, `ferry trust add` here).",
                            entries_range(s.first_seq, s.last_seq),
                            f.seq,
                            f.reissue_from,
                            f.seq,
                            f.new_hash
                        ))?;
                    }
                }
            }
        }
    }
    let t = &report.totals;
    let bundles = plural(report.bundles.len() as u64, "bundle", "bundles");
    let mut tail = Vec::new();
    if report.refused > 0 {
        tail.push(format!("{} refused", plural(report.refused, "bundle or part", "bundles or parts")));
    }
    if report.refused_again > 0 {
        tail.push(format!(
            "{} still refused as reported before",
            plural(report.refused_again, "bundle or part", "bundles or parts")
        ));
    }
    if report.forks > 0 {
        tail.push(plural(report.forks, "fork", "forks"));
    }
    let tail = if tail.is_empty() { String::new() } else { format!("; {}", tail.join(", ")) };
    ui.note(format!("{bundles}, {}{tail}", outcome_words(t)));
    let e = &report.events;
    if e.unparked > 0 {
        ui.note(format!("{} that waited now took effect", plural(e.unparked, "entry", "entries")));
    }
    if e.released > 0 {
        ui.note(format!("{} held back before are in their tables now", plural(e.released, "row", "rows")));
    }
    if e.held > 0 {
        ui.note(format!(
            "{} held back (a missing parent row, or a value another row had first); they go in by themselves once they can",
            plural(e.held, "row", "rows")
        ));
    }
    if t.parked > 0 || t.quarantined > 0 || e.held > 0 {
        ui.note(format!("see what waits and why with `ferry status --db {db} --list`"));
    }
    if t.conflicts > 0 {
        ui.note(format!("see the values that lost with `ferry conflicts --db {db}`"));
    }
    Ok(report.negative())
}

/// What the printing of an apply report needs of its arguments.
struct ApplyView<'a> {
    db: &'a std::path::Path,
    retry_quarantined: bool,
}

/// The SQLite file `--db` names; a server URL is refused (without its
/// password) with what works instead.
pub fn sqlite_target(arg: &std::ffi::OsStr, what: &str) -> anyhow::Result<PathBuf> {
    match Target::parse(arg)? {
        Target::Sqlite(p) => Ok(p),
        Target::Server(s) => Err(ferry::apply::ApplyError::ServerNotYet {
            kind: s.kind.name(),
            target: s.to_string(),
            what: what.to_owned(),
        }
        .into()),
    }
}

/// Refuses a server URL where only a SQLite file will do (capture, bundle
/// create, prune, relay --apply), naming it without its password, before
/// anything could print the argument as a path.
pub fn sqlite_only(p: &std::path::Path, what: &str) -> anyhow::Result<()> {
    sqlite_target(p.as_os_str(), what).map(|_| ())
}

pub fn run_conflicts(a: ConflictsArgs, home: Option<PathBuf>) -> anyhow::Result<Outcome> {
    let db = PathBuf::from(&a.db);
    let mut list = conflicts(&db)?;
    let trust = home_dir(home).ok().and_then(|h| Node::open(&h).ok()).and_then(|n| n.trust().ok());
    let trust = trust.as_ref();
    for c in &mut list {
        c.loser_name = c.loser_origin.as_deref().and_then(|o| trusted_name(trust, o));
        c.winner_name = c.winner_origin.as_deref().and_then(|o| trusted_name(trust, o));
    }
    if a.json {
        json(&list)?;
        return Ok(Outcome::Ok);
    }
    for c in &list {
        let col = c.column.as_deref().map(|c| format!(", column {}", sanitize(c))).unwrap_or_default();
        let by = |o: &Option<String>, s: Option<u64>| match (o, s) {
            (Some(o), Some(s)) => format!("{}'s entry {s}", who(trust, o)),
            (Some(o), None) => who(trust, o),
            _ => "a row made in this database outside ferry".into(),
        };
        out(format!(
            "#{} {} {}{}: {} lost to {} ({}){}",
            c.id,
            sanitize(&c.table),
            sanitize(&c.key),
            col,
            by(&c.loser_origin, c.loser_seq),
            by(&c.winner_origin, c.winner_seq),
            sanitize(&c.detail),
            c.loser_value.as_deref().map(|v| format!("; lost: {}", sanitize(v))).unwrap_or_default()
        ))?;
    }
    if list.is_empty() {
        out("no conflicts")?;
    }
    Ok(Outcome::Ok)
}

/// `ferry status --db TARGET`: what the target holds from each origin.
pub fn run_db_status(a: StatusArgs, home: Option<PathBuf>) -> anyhow::Result<Outcome> {
    let node = home_dir(home).ok().and_then(|h| Node::open(&h).ok());
    let trust = node.as_ref().and_then(|n| n.trust().ok());
    let trust = trust.as_ref();
    if a.list {
        let l = ferry::apply::status::lists(&a.db)?;
        if a.json {
            json(&l)?;
            return Ok(Outcome::Ok);
        }
        let section = |title: &str, items: &[ferry::apply::status::Item]| -> anyhow::Result<()> {
            out(format!("{title}: {}", items.len()))?;
            for i in items {
                let from = match (&i.origin, i.seq) {
                    (Some(o), Some(s)) => format!(" ({}'s entry {s})", who(trust, o)),
                    (Some(o), None) => format!(" ({})", who(trust, o)),
                    _ => String::new(),
                };
                let key = i.key.as_deref().map(|k| format!(" {}", sanitize(k))).unwrap_or_default();
                out(format!("    {}{key}{from}: {}", sanitize(&i.table), sanitize(&i.reason)))?;
            }
            Ok(())
        };
        section("waiting for their row", &l.waiting_for_row)?;
        section("waiting for their time", &l.waiting_for_time)?;
        section("held back (they go in by themselves once they can)", &l.held)?;
        section("quarantined (retry with `ferry bundle apply --db DB --retry-quarantined`)", &l.quarantined)?;
        return Ok(Outcome::Ok);
    }
    let mut s = db_status(&a.db)?;
    for o in &mut s.origins {
        o.name = match &node {
            Some(n) if n.id().as_str() == o.origin => Some(n.info.name.clone()),
            _ => trusted_name(trust, &o.origin),
        };
    }
    if a.json {
        // A database this node tracks: what came back confirmed of what it sent.
        if let Some(node) = &node {
            // (A server URL is no file: it has no capture.)
            let own = a.db.is_file() && ferry::capture::status(&a.db)?.origin.as_deref() == Some(node.id().as_str());
            if own {
                let l = super::receipts::current_loop(node)?;
                s.receipts =
                    Some(l.report(Some(node.info.name.clone()), ferry::journal::Timestamp::now(), a.overdue_days));
            }
        }
        json(&s)?;
        return Ok(if s.forks > 0 { Outcome::Negative } else { Outcome::Ok });
    }
    let not_passed_on = not_passed_on(&s, node.as_ref());
    let ranges = |r: &[(u64, u64)]| {
        if r.is_empty() {
            "none".to_owned()
        } else {
            r.iter()
                .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}–{b}") })
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let local = |t: &ferry::journal::Timestamp| {
        chrono::DateTime::from_timestamp_micros(t.0)
            .map(|d| d.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| t.to_string())
    };
    let nothing = s.origins.is_empty()
        && s.conflicts
            + s.parked
            + s.future
            + s.held
            + s.tombstones_waiting
            + s.quarantined
            + s.forks
            + s.refused_bundles
            == 0;
    if nothing {
        out(format!("database  {}: no bundles applied here yet", sanitize(&s.db)))?;
        return Ok(Outcome::Ok);
    }
    out(format!("database  {}", sanitize(&s.db)))?;
    for o in &s.origins {
        out(format!("from {}", o.name.as_deref().map_or_else(|| o.origin.clone(), sanitize)))?;
        out(format!("    entries   {} ({} applied)", ranges(&o.applied), o.entries_applied))?;
        if !o.missing.is_empty() {
            out(format!("    missing   {}  (a bundle never arrived?)", ranges(&o.missing)))?;
        }
        if let Some(t) = &o.last_entry {
            out(format!("    newest    {}", local(t)))?;
        }
        let c = &o.outcomes;
        out(format!(
            "    received  {}: {} applied, {} superseded, {} waiting, {} quarantined, {} duplicates{}",
            plural(c.received, "entry", "entries"),
            c.applied,
            c.superseded,
            c.parked,
            c.quarantined,
            c.skipped,
            if c.adds_up() { "" } else { "  (THESE DO NOT ADD UP: please report this)" }
        ))?;
        if o.future > 0 {
            out(format!(
                "    CLOCK     {} dated up to {}, more than a day ahead of this computer's clock: they wait until \
                 then instead of overruling everything (fix that laptop's clock; its next entries will be fine)",
                plural(o.future, "entry is", "entries are"),
                o.future_latest.as_ref().map(local).unwrap_or_default()
            ))?;
        }
        if o.forks > 0 {
            out(format!("    FORKS     {} (see the apply report for what to do)", o.forks))?;
        }
        if o.conflicts > 0 {
            out(format!("    lost      {}", plural(o.conflicts, "write to a newer one", "writes to newer ones")))?;
        }
    }
    for (origin, ranges) in &not_passed_on {
        out(format!(
            "NOT PASSED ON: {}'s {}: applied here, never relayed by this node, so not on their way to the central \
             server from here. Relay the bundles they came in (`ferry bundle relay --from DIR --out DIR`), or next \
             time apply and relay in one step with `ferry bundle relay --apply {}`",
            who(trust, origin),
            ranges.iter().map(|(a, b)| entries_range(*a, *b)).collect::<Vec<_>>().join(", "),
            sanitize(&s.db)
        ))?;
    }
    // Only what there is: a line of zeros hides the one that matters.
    let mut all = vec![plural(s.conflicts, "conflict recorded", "conflicts recorded")];
    let counts = [
        (s.parked, "write waiting for its row", "writes waiting for their row"),
        (s.future, "entry waiting for its time", "entries waiting for their time"),
        (s.held, "row held back", "rows held back"),
        (s.tombstones_waiting, "delete waiting for its row to arrive", "deletes waiting for their row to arrive"),
        (s.quarantined, "entry quarantined", "entries quarantined"),
        (s.forks, "fork", "forks"),
        (s.refused_bundles, "bundle refused and not applied since", "bundles refused and not applied since"),
    ];
    all.extend(counts.iter().filter(|(n, _, _)| *n > 0).map(|(n, one, many)| plural(*n, one, many)));
    if all.len() == 1 {
        all.push("nothing waiting, held back, quarantined or refused".into());
    }
    out(format!("in all    {}", all.join(", ")))?;
    if s.parked + s.future + s.held + s.quarantined > 0 {
        out(format!(
            "          (what waits and why: `ferry status --db {} --list`)",
            sanitize(&a.db.display().to_string())
        ))?;
    }
    Ok(if s.forks > 0 { Outcome::Negative } else { Outcome::Ok })
}

/// Per origin, the seq ranges a node that relays (it has a relay ledger)
/// applied to this database but never carried on: data that stops here.
/// Nothing for a node that never relays, and nothing of its own entries.
fn not_passed_on(s: &ferry::apply::status::DbStatus, node: Option<&Node>) -> Vec<(String, Vec<(u64, u64)>)> {
    let Some(node) = node else { return Vec::new() };
    let Ok(carried) = ferry::relay::ledger_status(node) else { return Vec::new() };
    if carried.origins.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for o in s.origins.iter().filter(|o| o.origin != node.id().as_str()) {
        let have: Vec<[u64; 2]> = carried
            .origins
            .iter()
            .find(|c| c.origin.as_str() == o.origin)
            .map(|c| c.ranges.clone())
            .unwrap_or_default();
        let mut missing = Vec::new();
        for &(a, b) in &o.applied {
            let mut next = a;
            for r in have.iter().filter(|r| r[1] >= a && r[0] <= b) {
                if r[0] > next {
                    missing.push((next, r[0] - 1));
                }
                next = next.max(r[1] + 1);
            }
            if next <= b {
                missing.push((next, b));
            }
        }
        if !missing.is_empty() {
            out.push((o.origin.clone(), missing));
        }
    }
    out
}

/// `ferry bundle verify --against TARGET`: will these bundles apply there?
pub fn verify_against(
    paths: &[PathBuf],
    target: &std::ffi::OsStr,
    home: Option<PathBuf>,
    as_json: bool,
    ui: &Ui,
) -> anyhow::Result<Outcome> {
    let target = Target::parse(target)?;
    #[derive(serde::Serialize)]
    struct Verdict {
        file: PathBuf,
        ok: bool,
        problems: Vec<String>,
    }
    let node = Node::open(&home_dir(home)?)?;
    let trust = node.trust()?;
    let shape = match &target {
        Target::Sqlite(path) => {
            let conn = open_target(path)?;
            TargetShape::sqlite(&conn)
                .map_err(|e| anyhow::anyhow!("failed to read the tables of {}: {e}", path.display()))?
        }
        Target::Server(server) => {
            let mut conn = ferry::apply::server::connect(server)?;
            TargetShape::server(conn.tables(server)?)
        }
    };
    let files = find_bundles(paths)?;
    if files.is_empty() {
        anyhow::bail!("no bundles (*.tar) found");
    }
    let mut verdicts = Vec::new();
    for f in files {
        let mut progress = ui.progress();
        let problems = check_against(&f, &trust, &node.keyring(), &shape, progress.as_mut());
        progress.finish();
        verdicts.push(Verdict { file: f, ok: problems.is_empty(), problems });
    }
    let failed = verdicts.iter().filter(|v| !v.ok).count();
    if as_json {
        json(&verdicts)?;
    } else {
        for v in &verdicts {
            let file = sanitize(&v.file.display().to_string());
            if v.ok {
                out(format!("ok    {file} applies to {}", sanitize(&target.to_string())))?;
            }
            for p in &v.problems {
                out(format!("FAIL  {file}: {}", sanitize(p)))?;
            }
        }
    }
    Ok(if failed == 0 { Outcome::Ok } else { Outcome::Negative })
}
