//! `ferry track` and `ferry untrack`.

use std::path::PathBuf;

use clap::Args;
use ferry::capture::{self, TrackOptions};
use ferry::node::Node;
use ferry::sanitize;

use super::output::{json, out};
use super::{home_dir, Outcome, Ui};

#[derive(Debug, Args)]
#[command(
    after_help = "Capture installs triggers and a journal table (all named _ferry…) into the database itself, so \
every committed insert, update and delete is journalled, whatever made it (ORM, bulk operations, raw SQL).\n\n\
By default every table is tracked except Django's per-computer ones (django_session, django_migrations, \
django_admin_log, django_content_type, auth_permission, auth_group_permissions, auth_user_user_permissions).\n\n\
After a migration, run `ferry track DB` again (`bundle create --db` does it itself when it finds capture \
out of date); writes made since the migration are found and journalled.\n\n\
Exit status of --status: 0 when capture is current, 1 when stale, not tracked, or unsafe (a tracked table holds \
ids above this node's id block).\n\n\
Examples:\n  ferry track app.sqlite3\n  ferry track app.sqlite3 --exclude survey_cache\n  ferry track app.sqlite3 --status"
)]
pub struct TrackArgs {
    /// The app's SQLite database.
    #[arg(value_name = "DB")]
    pub db: PathBuf,
    /// Track only these tables (comma-separated; default excludes do not apply to them).
    #[arg(long, value_name = "T,..", value_delimiter = ',', conflicts_with = "status")]
    pub tables: Option<Vec<String>>,
    /// Do not track these tables (comma-separated; added to the default excludes).
    #[arg(long, value_name = "T,..", value_delimiter = ',', conflicts_with = "status")]
    pub exclude: Option<Vec<String>>,
    /// Journal the rows these tables held before tracking (all tracked tables when no list is given), so
    /// they reach the servers. Rows with ids below every id block first get ids in this node's block. Not for
    /// rows that came from the central server (it has them).
    #[arg(
        long,
        value_name = "T,..",
        value_delimiter = ',',
        num_args = 0..,
        require_equals = true,
        conflicts_with = "status"
    )]
    pub include_existing: Option<Vec<String>>,
    /// Also check this node's ids fit the central server's tables (a PostgreSQL or MariaDB/MySQL URL, as for
    /// `bundle apply --db`): Django's AutoField is 32-bit there, too small for ids of an id block above 0.
    /// Exit 1 when they do not fit.
    #[arg(long, value_name = "URL", conflicts_with = "status")]
    pub central: Option<std::ffi::OsString>,
    /// Only report whether capture is installed and current; change nothing.
    #[arg(long)]
    pub status: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Removes capture: its triggers and its tables (_ferry_control, _ferry_tables, \
_ferry_journal). Refuses while the journal holds entries not yet bundled, unless --discard-unsent. The app's \
rows are untouched; AUTOINCREMENT counters stay in this node's id block; what `bundle apply` recorded in the \
database (a server's ledger) stays.\n\n\
Example:\n  ferry untrack app.sqlite3")]
pub struct UntrackArgs {
    /// The app's SQLite database.
    #[arg(value_name = "DB")]
    pub db: PathBuf,
    /// Remove capture even though entries were captured and not yet bundled (they are lost).
    #[arg(long)]
    pub discard_unsent: bool,
}

pub fn track(a: TrackArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    super::apply::sqlite_only(&a.db, "track")?;
    if a.status {
        let s = capture::status(&a.db)?;
        if a.json {
            json(&s)?;
        } else {
            let node = home_dir(home).ok().and_then(|h| Node::open(&h).ok());
            print_capture(&s, node.as_ref(), ui)?;
        }
        return Ok(if s.tracked && s.stale.is_empty() && s.problems.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Negative
        });
    }
    let node = Node::open(&home_dir(home)?)?;
    let opts = TrackOptions { tables: a.tables, exclude: a.exclude, include_existing: a.include_existing };
    let mut r = capture::track(&node, &a.db, &opts)?;
    let conn = capture::open_db(&a.db)?;
    let reserved = capture::reserved_name_tables(&conn)
        .map_err(|source| capture::CaptureError::Sqlite { path: r.db.clone(), source })?;
    for t in reserved {
        r.warnings.push(format!(
            "table {t} is not tracked: names starting with _ferry are reserved for ferry's own tables; rename it to capture its changes"
        ));
    }
    if a.json {
        json(&r)?;
    } else {
        print_track(&r, ui)?;
    }
    for w in &r.warnings {
        ui.note(format!("warning: {}", sanitize(w)));
    }
    match &a.central {
        Some(url) => check_central(url, &a.db, &r, ui),
        None => Ok(Outcome::Ok),
    }
}

/// `track --central URL`: whether the ids this node hands out in the
/// tracked tables fit the central server's key columns.
fn check_central(
    url: &std::ffi::OsStr,
    db: &std::path::Path,
    r: &capture::TrackReport,
    ui: &Ui,
) -> anyhow::Result<Outcome> {
    use ferry::target::Target;
    let server = match Target::parse(url)? {
        Target::Server(s) => s,
        Target::Sqlite(p) => {
            ui.note(format!(
                "central {} is a SQLite file: its integer keys hold any id",
                sanitize(&p.display().to_string())
            ));
            return Ok(Outcome::Ok);
        }
    };
    let central = ferry::apply::server::connect(&server)?.tables(&server)?;
    let conn = capture::open_db(db)?;
    let live =
        ferry::schema::tables(&conn).map_err(|source| capture::CaptureError::Sqlite { path: r.db.clone(), source })?;
    let keyed: Vec<(String, String)> = live
        .iter()
        .filter(|t| r.tables.contains(&t.name))
        .filter_map(|t| match t.pk_columns().as_slice() {
            [c] if c.decl_type.eq_ignore_ascii_case("integer") => Some((t.name.clone(), c.name.clone())),
            _ => None,
        })
        .collect();
    let missing: Vec<&str> = keyed.iter().map(|(t, _)| t.as_str()).filter(|t| !central.contains_key(*t)).collect();
    if !missing.is_empty() {
        ui.note(format!(
            "warning: the central server {} has no table {} yet (migrate it before bundles arrive)",
            sanitize(&server.to_string()),
            sanitize(&missing.join(", "))
        ));
    }
    let block = r.id_block.unwrap_or(0);
    let beyond = ferry::apply::server::ids_beyond(&central, &keyed, block);
    if beyond.is_empty() {
        ui.note(format!(
            "checked against {}: the ids this node gives out fit its tables",
            sanitize(&server.to_string())
        ));
        return Ok(Outcome::Ok);
    }
    for (t, key, max) in &beyond {
        out(format!(
            "PROBLEM  table {}: this node numbers its new rows from {} (id block {block}), but on the central server \
             {} its {} is a 32-bit integer (at most {max}, Django's AutoField): these rows could never be applied \
             there",
            sanitize(t),
            i128::from(block) << 32,
            sanitize(&server.to_string()),
            sanitize(key)
        ))?;
    }
    ui.note(
        "make the app's ids 64-bit before field work starts (Django: DEFAULT_AUTO_FIELD = \
         \"django.db.models.BigAutoField\", or a BigAutoField id on each model; then makemigrations, and migrate \
         on the server and on every laptop), then run `ferry track` here again with --central",
    );
    Ok(Outcome::Negative)
}

pub fn untrack(a: UntrackArgs, ui: &Ui) -> anyhow::Result<Outcome> {
    super::apply::sqlite_only(&a.db, "untrack")?;
    if capture::untrack(&a.db, a.discard_unsent)? {
        ui.note(format!("removed capture from {}", sanitize(&a.db.display().to_string())));
    } else {
        ui.note(format!("{} was not tracked; nothing to remove", sanitize(&a.db.display().to_string())));
    }
    Ok(Outcome::Ok)
}

/// The capture side of a database, for people: who tracks it, whether
/// capture is current, what waits to be bundled, rows never sent.
pub fn print_capture(s: &capture::Status, node: Option<&Node>, ui: &Ui) -> anyhow::Result<()> {
    use super::apply::{plural, who};
    let db = sanitize(&s.db);
    let Some(origin) = &s.origin else {
        out(format!("{db}: not tracked (to capture the app's changes here: `ferry track {db}`)"))?;
        return Ok(());
    };
    let by = match node {
        Some(n) if n.id().as_str() == origin => format!("this node ({})", sanitize(&n.info.name)),
        Some(n) => who(n.trust().ok().as_ref(), origin),
        None => origin.clone(),
    };
    let state = if s.stale.is_empty() { "capture up to date" } else { "capture OUT OF DATE" };
    out(format!("{db}: tracked by {by}, {state}, {}", plural(s.tables.len() as u64, "table", "tables")))?;
    let waiting = s.last_seq.saturating_sub(s.bundled_seq);
    out(format!(
        "    entries   {} recorded, {}",
        s.last_seq,
        match waiting {
            0 if s.last_seq == 0 => "nothing to bundle yet".to_owned(),
            0 => "all bundled".to_owned(),
            n => format!(
                "{} waiting to be bundled (`ferry bundle create --db {db} --out DIR`)",
                super::apply::entries_range(s.bundled_seq + 1, s.bundled_seq + n)
            ),
        }
    ))?;
    for r in &s.stale {
        out(format!("    OUT OF DATE  {} (run `ferry track {db}`)", sanitize(r)))?;
    }
    for (t, n) in &s.existing {
        out(format!(
            "    not sent  {}: {} from before tracking (if entered on this computer: `ferry track {db} \
             --include-existing={}`)",
            sanitize(t),
            plural(*n, "row", "rows"),
            sanitize(t)
        ))?;
    }
    for p in &s.problems {
        out(format!("    PROBLEM   {}", sanitize(p)))?;
    }
    for n in &s.notes {
        ui.note(format!("note: {}", sanitize(n)));
    }
    Ok(())
}

/// What `ferry track` did, for people.
pub fn print_track(r: &capture::TrackReport, ui: &Ui) -> anyhow::Result<()> {
    let verb = if r.refreshed { "refreshed capture in" } else { "tracking" };
    out(format!("{verb} {}: {} tables", sanitize(&r.db), r.tables.len()))?;
    if !r.excluded.is_empty() {
        ui.note(format!("not tracked: {}", sanitize(&r.excluded.join(", "))));
    }
    for (t, v) in &r.sequences_raised {
        ui.note(format!("{}: new ids start after {v} (id block {})", sanitize(t), r.id_block.unwrap_or(0)));
    }
    for (t, rec) in &r.recovered {
        out(format!(
            "{}: capture was off since a schema change; found and journalled {} inserted, {} changed, {} deleted \
             meanwhile (stamped now)",
            sanitize(t),
            rec.inserted,
            rec.updated,
            rec.deleted
        ))?;
    }
    for t in &r.unchecked {
        out(format!(
            "WARNING  {}: capture was off since a schema change, and the journal no longer reaches back far \
             enough to find what was written meanwhile; check the table's recent changes by hand",
            sanitize(t)
        ))?;
    }
    for (t, inc) in &r.included {
        out(format!(
            "{}: journalled {} that were there before tracking{}",
            sanitize(t),
            if inc.rows == 1 { "1 row".to_owned() } else { format!("{} rows", inc.rows) },
            if inc.renumbered > 0 {
                format!(" ({} got ids in this node's block first)", inc.renumbered)
            } else {
                String::new()
            }
        ))?;
    }
    for (t, n) in &r.existing {
        ui.note(format!(
            "{}: {} from before tracking will not reach the servers. If they were entered on this computer, \
             send them with `ferry track {} --include-existing={}`; if they came from the central server, leave them",
            sanitize(t),
            if *n == 1 { "1 row".to_owned() } else { format!("{n} rows") },
            sanitize(&r.db),
            sanitize(t)
        ));
    }
    Ok(())
}
