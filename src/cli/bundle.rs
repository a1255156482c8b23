//! `ferry bundle create|verify|inspect`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ferry::bundle::create::{create_from_journal, CreateOptions};
use ferry::bundle::inspect::inspect_with;
use ferry::bundle::{scan_bundles, BundleReader};
use ferry::node::Node;
use ferry::sanitize;
use ferry::verify::{verify_file_with, BundleReport, Depth};

use super::apply::{entries_range, plural};
use super::output::{json, out};
use super::status::local_time;
use super::{home_dir, Outcome, Ui};

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Pack this node's entries not yet bundled into one signed bundle.
    #[command(
        after_help = "Examples:\n  ferry bundle create --db app.sqlite3 --out /media/usb\n  ferry bundle create --journal journal/ --out /media/usb\n  ferry bundle create --journal app.jsonl --out outbox --since 1   # send everything again"
    )]
    Create(CreateArgs),
    /// Check bundles: structure, hashes, chains, and every signature against the trust store.
    #[command(
        after_help = "Exit status: 0 when every bundle passes, 1 when any fails, 2 on errors.\n\nExample:\n  ferry bundle verify /media/usb"
    )]
    Verify(VerifyArgs),
    /// Show what a bundle holds: origins, seq and time ranges, tables, hops.
    #[command(
        after_help = "The entries are plain JSON Lines; standard tools read them too:\n  tar -xOf BUNDLE manifest.json | jq .\n  tar -xOf BUNDLE ORIGIN.1-100.jsonl.zst | zstd -d | jq ."
    )]
    Inspect(InspectArgs),
    /// Pass bundles on to the next hop: verify, drop duplicates, catch forks, merge by time, re-sign.
    #[command(after_help = super::relay::AFTER_HELP)]
    Relay(super::relay::RelayArgs),
    /// Apply bundles to a SQLite database: verified, exactly once, merged by time.
    #[command(
        after_help = "Exit status: 0 when every bundle applied, 1 when any was refused or forked, 2 on errors.\n\nExamples:\n  ferry bundle apply --db central.sqlite3 /media/usb\n  ferry bundle apply --db postgresql://ferry@localhost/survey /media/usb\n  ferry status --db central.sqlite3\n  ferry conflicts --db central.sqlite3"
    )]
    Apply(super::apply::ApplyArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["journal", "db"])))]
pub struct CreateArgs {
    /// A journal file, or a folder of them (walked recursively): JSON Lines or the legacy format.
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// An app database captured by `ferry track`: bundle its journal table.
    #[arg(long, value_name = "DB")]
    pub db: Option<PathBuf>,
    /// Folder to write the bundle into (a USB stick, an outbox).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Bundle from this seq on, even if sent before.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Encrypt the bundle to these trusted nodes (besides those `ferry node encrypt-to` set): only they can
    /// read its entries.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub encrypt_to: Vec<String>,
    /// Send again, now, every entry sent before that the archive (the central server) has not confirmed.
    #[arg(long, conflicts_with = "since")]
    pub unconfirmed: bool,
    /// Entries the archive has not confirmed this many days after they were last sent go into the next
    /// bundle again.
    #[arg(long, value_name = "DAYS", env = "FERRY_OVERDUE_DAYS", default_value_t = ferry::receipt::confirm::DEFAULT_DAYS)]
    pub overdue_days: u32,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Bundle files or folders holding them.
    #[arg(value_name = "FILE|DIR", required = true)]
    pub paths: Vec<PathBuf>,
    /// Print the verdicts as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also check the bundles would apply to this database (a SQLite file or a server URL): tables and
    /// columns.
    #[arg(long, value_name = "TARGET")]
    pub against: Option<std::ffi::OsString>,
    /// Also re-validate every entry (its form, seqs, time range, per-table counts), not only that
    /// every byte is what the origin signed.
    #[arg(long)]
    pub deep: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print every entry as JSON Lines (exactly as the origin wrote them).
    #[arg(long)]
    pub entries: bool,
}

pub fn run(cmd: BundleCommand, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    match cmd {
        BundleCommand::Create(a) => create(a, home, ui),
        BundleCommand::Verify(a) => verify(a, home, ui),
        BundleCommand::Inspect(a) => inspect_cmd(a, home),
        BundleCommand::Relay(a) => super::relay::run(a, home, ui),
        BundleCommand::Apply(a) => super::apply::run_apply(a, home, ui),
    }
}

fn create(a: CreateArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    let mut node = Node::open(&home_dir(home)?)?;
    node.encrypt_also(&a.encrypt_to);
    // Receipts that came back on this stick are taken in first: they say
    // what arrived, and so what to send again.
    if !a.out.is_file() {
        super::receipts::take_in(&node, std::slice::from_ref(&a.out), ui)?;
    }
    let resend = super::receipts::resend_point(&node, a.since, a.unconfirmed, a.overdue_days, ui)?;
    let since = a.since.or(resend.map(|r| r.0));
    let opts = CreateOptions { out_dir: a.out, since };
    let mut progress = ui.progress();
    if let Some(db) = &a.db {
        super::apply::sqlite_only(db, "bundle the captured edits of")?;
    }
    let report = match (&a.db, &a.journal) {
        (Some(db), _) => {
            let resume = resend.and_then(|r| r.1);
            create_from_db_resuming_refreshing(&node, db, &opts, resume, ui, progress.as_mut())?
        }
        (None, Some(journal)) => create_from_journal(&node, journal, &opts, progress.as_mut())?,
        (None, None) => anyhow::bail!("give --journal PATH or --db DB"),
    };
    if a.json {
        json(&report)?;
    } else {
        match (&report.file, report.first_seq, report.last_seq) {
            (Some(file), Some(first), Some(last)) => {
                let sealed = match report.encrypted_to.as_slice() {
                    [] => String::new(),
                    names => {
                        format!(", encrypted to {}", names.iter().map(|n| sanitize(n)).collect::<Vec<_>>().join(", "))
                    }
                };
                out(format!(
                    "wrote {} ({}, {} bytes in, {} bytes out{sealed})",
                    file.display(),
                    entries_range(first, last),
                    report.bytes_in,
                    report.bytes_out
                ))?
            }
            _ => ui.note("nothing new to bundle: every entry was bundled before (to send them again, add --since 1)"),
        }
    }
    Ok(Outcome::Ok)
}

/// `bundle create --db`, refreshing capture first when a migration left it
/// out of date: what is journalled is sent, and what the app wrote since
/// the migration is found and sent with it (as `ferry track DB` would),
/// instead of the driver leaving with nothing.
pub fn create_from_db_refreshing(
    node: &Node,
    db: &std::path::Path,
    opts: &CreateOptions,
    ui: &Ui,
    progress: &mut dyn ferry::progress::Progress,
) -> anyhow::Result<ferry::bundle::create::CreateReport> {
    create_from_db_resuming_refreshing(node, db, opts, None, ui, progress)
}

/// [`create_from_db_refreshing`], sending again after `resume` in a pruned journal.
pub fn create_from_db_resuming_refreshing(
    node: &Node,
    db: &std::path::Path,
    opts: &CreateOptions,
    resume: Option<ferry::capture::Resume>,
    ui: &Ui,
    progress: &mut dyn ferry::progress::Progress,
) -> anyhow::Result<ferry::bundle::create::CreateReport> {
    use ferry::capture::{self, CaptureError};
    match capture::create_from_db_resuming(node, db, opts, resume, progress) {
        Err(CaptureError::Stale { path, reasons }) => {
            ui.note(format!(
                "capture in {} was out of date after a change to the app's tables ({}): refreshing it first, as \
                 `ferry track {}` does",
                sanitize(&path),
                sanitize(&reasons.join("; ")),
                sanitize(&path)
            ));
            let r = capture::track(node, db, &capture::TrackOptions::default())?;
            super::track::print_track(&r, ui)?;
            for w in &r.warnings {
                ui.note(format!("warning: {}", sanitize(w)));
            }
            Ok(capture::create_from_db_resuming(node, db, opts, resume, progress)?)
        }
        r => Ok(r?),
    }
}

fn verify(a: VerifyArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    if let Some(target) = &a.against {
        return super::apply::verify_against(&a.paths, target, home, a.json, ui);
    }
    let node = Node::open(&home_dir(home)?)?;
    let trust = node.trust()?;
    // Every path must exist before anything is verified: a mistyped path is
    // an error (exit 2), not a failed bundle.
    let found = scan_bundles(&a.paths)?;
    for (dir, why) in &found.unreadable {
        eprintln!(
            "warning: skipped the folder {}, which cannot be read: {}",
            sanitize(&dir.display().to_string()),
            sanitize(why)
        );
    }
    let mut reports: Vec<BundleReport> = Vec::new();
    let keyring = node.keyring();
    for f in found.files {
        let mut progress = ui.progress();
        let total = std::fs::metadata(&f).map(|m| m.len()).ok();
        progress.start("verifying", total);
        let depth = if a.deep { Depth::Entries } else { Depth::Bytes };
        reports.push(verify_file_with(&f, &trust, &keyring, depth, progress.as_mut()));
        progress.finish();
    }
    let failed = reports.iter().filter(|r| !r.ok).count() + found.unreadable.len();
    if a.json {
        json(&reports)?;
    } else {
        for r in &reports {
            let file = sanitize(&r.file.display().to_string());
            match &r.error {
                None => {
                    let entries: u64 = r.segments.iter().map(|s| s.count).sum();
                    let parts: Vec<String> = r
                        .segments
                        .iter()
                        .map(|s| {
                            let name = s.origin_name.as_deref().map_or_else(|| s.origin.to_string(), sanitize);
                            let sealed = match (s.encrypted_to.is_empty(), s.entries_checked) {
                                (true, _) => String::new(),
                                (false, true) => ", encrypted to this node".into(),
                                (false, false) => {
                                    let to: Vec<String> = s
                                        .encrypted_to
                                        .iter()
                                        .map(|h| h.name.as_deref().map_or_else(|| h.node.to_string(), sanitize))
                                        .collect();
                                    format!(", encrypted to {}: its encrypted bytes checked", to.join(", "))
                                }
                            };
                            format!("{name} {}{sealed}", entries_range(s.first_seq, s.last_seq))
                        })
                        .collect();
                    out(format!("ok    {file}: {} ({})", plural(entries, "entry", "entries"), parts.join(", ")))?
                }
                Some(e) => out(format!("FAIL  {file}: {}", sanitize(e)))?,
            }
        }
        let bad = reports.iter().filter(|r| !r.ok).count();
        ui.note(format!("{} verified, {bad} failed", plural((reports.len() - bad) as u64, "bundle", "bundles")));
    }
    if reports.is_empty() {
        anyhow::bail!(
            "no bundles (*.tar) found in {}",
            a.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(if failed == 0 { Outcome::Ok } else { Outcome::Negative })
}

/// `inspect --entries`: every entry line, exactly as the origin wrote it.
/// The bundle's signatures are not checked here, so each line must first
/// parse as an entry (JSON keeps C0 controls escaped), and on a terminal the
/// C1 controls and DEL that JSON allows raw in strings are printed as JSON
/// escapes (same meaning, but they cannot drive the terminal).
fn print_entries(file: &std::path::Path, node: Option<&Node>) -> anyhow::Result<Outcome> {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let mut reader = BundleReader::open(file)?;
    // Encrypted parts: every byte checked against its signed hash first,
    // then opened with this node's key, if it is a recipient.
    let keyring = node.map(Node::keyring).unwrap_or_default();
    ferry::verify::open_encrypted(&mut reader, file, &keyring)?;
    let trust = node.and_then(|n| n.trust().ok()).unwrap_or_default();
    if let Some(d) = reader.descriptors().iter().find(|d| !d.is_readable()) {
        let names: Vec<String> = d
            .encryption
            .iter()
            .flat_map(|e| &e.recipients)
            .map(|n| trust.name_of(n).map_or_else(|| n.to_string(), |m| format!("{} ({n})", sanitize(m))))
            .collect();
        anyhow::bail!(
            "{} is encrypted to {}, not to this node: only they can read its entries (run `ferry bundle inspect \
             --entries` there)",
            d.member_name(),
            names.join(", ")
        );
    }
    let stdout = std::io::stdout();
    let mut o = std::io::BufWriter::new(stdout.lock());
    while let Some(member) = reader.next_segment()? {
        let name = member.descriptor().member_name();
        let mut lines = member.entries()?;
        let mut n = 0u64;
        while let Some(line) = lines.next_line()? {
            n += 1;
            ferry::journal::Entry::parse_head(line).map_err(|e| {
                anyhow::anyhow!(
                    "{name}: entry {n} is not a valid entry ({e}); run `ferry bundle verify` on this bundle"
                )
            })?;
            if terminal {
                o.write_all(escape_controls(line).as_bytes())?;
            } else {
                o.write_all(line)?;
            }
            o.write_all(b"\n")?;
        }
    }
    o.flush()?;
    Ok(Outcome::Ok)
}

/// A valid entry line with DEL and C1 control characters as JSON `\u00XX`
/// escapes (valid JSON with the same meaning).
fn escape_controls(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) {
            s.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            s.push(c);
        }
    }
    s
}

fn inspect_cmd(a: InspectArgs, home: Option<PathBuf>) -> anyhow::Result<Outcome> {
    // Names come from the trust store when there is a node; inspect works without one.
    let node = home_dir(home).ok().and_then(|h| Node::open(&h).ok());
    let trust = node.as_ref().and_then(|n| n.trust().ok());
    let context = || format!("failed to read {}", a.file.display());
    if a.entries {
        return print_entries(&a.file, node.as_ref()).with_context(context);
    }
    let keyring = node.as_ref().map(Node::keyring).unwrap_or_default();
    let i = inspect_with(&a.file, trust.as_ref(), &keyring).with_context(context)?;
    if a.json {
        json(&i)?;
        return Ok(Outcome::Ok);
    }
    let who = |node: &ferry::keys::NodeId, name: &Option<String>| match name {
        Some(n) => format!("{} ({node})", sanitize(n)),
        None => node.to_string(),
    };
    out(format!("bundle    {} ({} bytes)", sanitize(&i.file), i.bytes))?;
    out(format!("format    {} v{}", i.format, i.version))?;
    out(format!("sealed    by {} on {}", who(&i.sealed_by.node, &i.sealed_by.name), local_time(&i.sealed_at)))?;
    out(format!(
        "entries   {} in {} (signatures not checked: run `ferry bundle verify`)",
        i.entries,
        plural(i.segments.len() as u64, "part", "parts")
    ))?;
    for (n, s) in i.segments.iter().enumerate() {
        let (from, to) = (local_time(&s.ts_min), local_time(&s.ts_max));
        out(format!(
            "part {}: {} of {}, written {}",
            n + 1,
            entries_range(s.first_seq, s.last_seq),
            who(&s.origin.node, &s.origin.name),
            if from == to { from } else { format!("{from} to {to}") }
        ))?;
        if !s.encrypted_to.is_empty() {
            let to: Vec<String> = s.encrypted_to.iter().map(|c| who(&c.node, &c.name)).collect();
            let readable = if s.readable { "this node can read it" } else { "tables and entries readable only there" };
            out(format!("    encrypted to {} ({readable})", to.join(", ")))?;
        }
        for (t, c) in &s.tables {
            out(super::output::table_counts(t, c))?;
        }
        if s.hops.is_empty() {
            out("    carried straight from the computer that wrote it")?;
        }
        for h in &s.hops {
            out(format!("    carried by {} on {}", who(&h.node, &h.name), local_time(&h.at)))?;
        }
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn terminal_controls_become_json_escapes() {
        let line = "{\"v\":\"a\u{9b}31m\u{7f}é\"}";
        assert_eq!(escape_controls(line.as_bytes()), "{\"v\":\"a\\u009b31m\\u007fé\"}");
        let back: serde_json::Value = serde_json::from_str(&escape_controls(line.as_bytes())).expect("still JSON");
        assert_eq!(back["v"], "a\u{9b}31m\u{7f}é");
    }
}
