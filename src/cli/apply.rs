//! `ferry bundle apply`, `ferry conflicts --db`, `ferry status --db`, and
//! `ferry bundle verify --against`.

use std::path::PathBuf;

use clap::Args;
use ferry::apply::status::{conflicts, db_status};
use ferry::apply::{apply, check_against, open_target, ApplyOptions};
use ferry::bundle::find_bundles;
use ferry::node::Node;
use ferry::sanitize;

use super::output::{json, out};
use super::{home_dir, Outcome, Ui};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The target SQLite database (its schema made by the app, e.g. Django's `migrate`).
    #[arg(long, value_name = "TARGET")]
    pub db: PathBuf,
    /// Bundle files or folders holding them.
    #[arg(value_name = "FILE|DIR", required = true)]
    pub paths: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Apply segments made against a different schema, when every table and column they use exists.
    #[arg(long)]
    pub allow_schema_drift: bool,
}

#[derive(Debug, Args)]
pub struct ConflictsArgs {
    /// The target SQLite database bundles were applied to.
    #[arg(long, value_name = "TARGET")]
    pub db: PathBuf,
    /// Print the conflicts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `ferry status --db` shows (the flag lives on `status::StatusArgs`).
#[derive(Debug)]
pub struct StatusArgs {
    pub db: PathBuf,
    pub json: bool,
}

pub fn run_apply(a: ApplyArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    let node = Node::open(&home_dir(home)?)?;
    let trust = node.trust()?;
    let files = find_bundles(&a.paths)?;
    if files.is_empty() {
        anyhow::bail!(
            "no bundles (*.tar) found in {}",
            a.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let opts = ApplyOptions { allow_schema_drift: a.allow_schema_drift };
    let mut progress = ui.progress();
    let report = apply(&a.db, &files, &trust, &opts, progress.as_mut())?;
    if a.json {
        json(&report)?;
    } else {
        for b in &report.bundles {
            let file = sanitize(&b.file.display().to_string());
            match &b.error {
                Some(e) => out(format!("REFUSED  {file}: {}", sanitize(e)))?,
                None => {
                    let c = &b.counts;
                    out(format!(
                        "applied  {file}: {} applied, {} already applied, {} parked, {} conflicts, {} quarantined",
                        c.applied, c.skipped, c.parked, c.conflicts, c.quarantined
                    ))?;
                    for s in &b.segments {
                        if let Some(f) = &s.fork {
                            out(format!(
                                "FORK     {}: origin {} seq {} has chain hash {}, this segment says {}; \
                                 the segment was not applied",
                                sanitize(&f.segment),
                                f.origin,
                                f.seq,
                                f.known_hash,
                                f.new_hash
                            ))?;
                        }
                    }
                }
            }
        }
        let t = &report.totals;
        ui.note(format!(
            "{} bundles: {} applied entries, {} duplicates skipped, {} parked, {} conflicts, {} quarantined, {} refused, {} forks",
            report.bundles.len(),
            t.applied,
            t.skipped,
            t.parked,
            t.conflicts,
            t.quarantined,
            report.refused,
            report.forks
        ));
        if report.forks > 0 {
            ui.note("hint: a fork means two journals claim the same origin: a cloned or restored laptop. Give the clone a new identity (`ferry node init` in a new home) and re-create its bundles.");
        }
        if t.conflicts > 0 {
            ui.note(format!("hint: list conflicts with `ferry conflicts --db {}`", a.db.display()));
        }
    }
    Ok(if report.negative() { Outcome::Negative } else { Outcome::Ok })
}

pub fn run_conflicts(a: ConflictsArgs) -> anyhow::Result<Outcome> {
    let list = conflicts(&a.db)?;
    if a.json {
        json(&list)?;
        return Ok(Outcome::Ok);
    }
    for c in &list {
        let col = c.column.as_deref().map(|c| format!(".{}", sanitize(c))).unwrap_or_default();
        let who = |o: &Option<String>, s: Option<u64>| match (o, s) {
            (Some(o), Some(s)) => format!("{o}#{s}"),
            (Some(o), None) => o.clone(),
            _ => "-".into(),
        };
        out(format!(
            "#{} {:<12} {}{} key {}: {} lost to {} ({}){}",
            c.id,
            c.kind,
            sanitize(&c.table),
            col,
            sanitize(&c.key),
            who(&c.loser_origin, c.loser_seq),
            who(&c.winner_origin, c.winner_seq),
            sanitize(&c.detail),
            c.loser_value.as_deref().map(|v| format!("; lost value {}", sanitize(v))).unwrap_or_default()
        ))?;
    }
    if list.is_empty() {
        out("no conflicts")?;
    }
    Ok(Outcome::Ok)
}

/// `ferry status --db TARGET`: what the target holds from each origin.
pub fn run_db_status(a: StatusArgs) -> anyhow::Result<Outcome> {
    let s = db_status(&a.db)?;
    if a.json {
        json(&s)?;
        return Ok(Outcome::Ok);
    }
    let ranges = |r: &[(u64, u64)]| {
        if r.is_empty() {
            "none".to_owned()
        } else {
            r.iter()
                .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out(format!("database  {}", sanitize(&s.db)))?;
    for o in &s.origins {
        out(format!("origin {}", o.origin))?;
        out(format!("    applied   {} ({} entries)", ranges(&o.applied), o.entries_applied))?;
        out(format!(
            "    missing   {}{}",
            ranges(&o.missing),
            if o.missing.is_empty() { "" } else { "  (a bundle never arrived?)" }
        ))?;
        out(format!(
            "    last seen {} (applied {})",
            o.last_entry.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            o.last_apply.as_deref().unwrap_or("-")
        ))?;
        out(format!("    forks {}, parked {}, conflicts lost {}", o.forks, o.parked, o.conflicts))?;
    }
    out(format!(
        "totals    {} conflicts, {} parked updates, {} deletes waiting for their row, {} quarantined, {} forks, {} refused bundles",
        s.conflicts, s.parked, s.tombstones_waiting, s.quarantined, s.forks, s.refused_bundles
    ))?;
    Ok(if s.forks > 0 { Outcome::Negative } else { Outcome::Ok })
}

/// `ferry bundle verify --against TARGET`: will these bundles apply there?
pub fn verify_against(
    paths: &[PathBuf],
    target: &std::path::Path,
    home: Option<PathBuf>,
    as_json: bool,
    ui: &Ui,
) -> anyhow::Result<Outcome> {
    #[derive(serde::Serialize)]
    struct Verdict {
        file: PathBuf,
        ok: bool,
        problems: Vec<String>,
    }
    let node = Node::open(&home_dir(home)?)?;
    let trust = node.trust()?;
    let conn = open_target(target)?;
    let files = find_bundles(paths)?;
    if files.is_empty() {
        anyhow::bail!("no bundles (*.tar) found");
    }
    let mut verdicts = Vec::new();
    for f in files {
        let mut progress = ui.progress();
        let problems = check_against(&f, &trust, &conn, progress.as_mut());
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
                out(format!("ok    {file} applies to {}", target.display()))?;
            }
            for p in &v.problems {
                out(format!("FAIL  {file}: {}", sanitize(p)))?;
            }
        }
    }
    Ok(if failed == 0 { Outcome::Ok } else { Outcome::Negative })
}
