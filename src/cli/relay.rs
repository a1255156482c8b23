//! `ferry bundle relay`.

use std::path::PathBuf;

use clap::Args;
use ferry::node::Node;
use ferry::relay::{relay, RelayError, RelayOptions, RelayReport, DEFAULT_MAX_SIZE};
use ferry::sanitize;

use super::output::{json, out};
use super::{home_dir, Outcome, Ui};

pub const AFTER_HELP: &str = "\
Every input bundle is verified against this node's trust store (trust origins with
--role origin, upstream relays with --role relay). Duplicates are dropped, forks and
bad bundles are copied into HOME/quarantine/ with a reason file; inputs are never
changed unless --move is given. Running it again with the same stick writes nothing.

Exit status: 0 ok, 1 something was rejected or forked (see the messages), 2 error.

A community server, which applies what the field sends and passes it on with its own edits, does it all
with --apply: it applies the bundles to its database, bundles its own edits, and relays everything, so
nothing it applied stays behind.

Examples:
  ferry bundle relay --from /media/usb --out outbox
  ferry bundle relay --from /media/stick1 /media/stick2 --out /media/usb-to-town --move
  ferry bundle relay --from /media/stick --out /media/to-central --apply clinic.sqlite3
  ferry bundle relay --from inbox --out outbox --max-size 700M --json";

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Folders (walked recursively) or bundle files to relay.
    #[arg(long, value_name = "DIR", required = true, num_args = 1..)]
    pub from: Vec<PathBuf>,
    /// Folder to write the bundles for the next hop into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Remove each input once its content is durably written, quarantined or known carried.
    #[arg(long = "move")]
    pub move_inputs: bool,
    /// Largest output bundle, in bytes (suffixes K, M, G: powers of 1024) [default: 4G - 1M, for FAT32].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// A community server's hop in one command: first apply the bundles to this database, and bundle this
    /// node's own edits to it (when this node tracks it) into --out; then relay as usual.
    #[arg(long, value_name = "DB")]
    pub apply: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `123`, `700M`, `4G`, `64K` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 4000000000, 700M, 2G)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

pub fn run(a: RelayArgs, home: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Outcome> {
    let mut negative = false;
    if let Some(db) = &a.apply {
        // Apply first: --move may take the inputs away once relayed.
        negative |= super::apply::apply_and_print(db, &a.from, home.clone(), a.json, ui)?;
        let node = Node::open(&home_dir(home.clone())?)?;
        let conn = ferry::capture::open_db(db)?;
        let tracked_here = ferry::capture::is_tracked(&conn)?
            && conn.query_row("SELECT origin FROM _ferry_control", [], |r| r.get::<_, String>(0))?
                == node.id().as_str();
        drop(conn);
        if tracked_here {
            let opts = ferry::bundle::create::CreateOptions { out_dir: a.out.clone(), since: None };
            let mut progress = ui.progress();
            let r = ferry::capture::create_from_db(&node, db, &opts, progress.as_mut())?;
            if let Some(f) = &r.file {
                ui.note(format!(
                    "bundled this server's own edits: {} ({} entries)",
                    sanitize(&f.display().to_string()),
                    r.entries
                ));
            }
        }
    }
    let node = Node::open(&home_dir(home)?)?;
    let opts = RelayOptions {
        inputs: a.from,
        out_dir: a.out,
        move_inputs: a.move_inputs,
        max_size: a.max_size.unwrap_or(DEFAULT_MAX_SIZE),
    };
    let mut progress = ui.progress();
    let report = match relay(&node, &opts, progress.as_mut()) {
        Ok(report) => report,
        Err(RelayError::Incomplete { done, source }) => {
            // What was finished is durable and recorded: list it before the error.
            if a.json {
                json(&done)?;
            } else {
                human(&done, ui)?;
            }
            eprintln!(
                "stopped part way: {} written completely and recorded; run the same command again to relay the rest",
                plural(done.counts.bundles_written, "bundle")
            );
            return Err((*source).into());
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        json(&report)?;
    } else {
        human(&report, ui)?;
    }
    Ok(if report.negative() || negative { Outcome::Negative } else { Outcome::Ok })
}

fn plural(n: u64, word: &str) -> String {
    match (n, word.strip_suffix('y')) {
        (1, _) => format!("1 {word}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {word}s"),
    }
}

fn human(r: &RelayReport, ui: &Ui) -> anyhow::Result<()> {
    for w in &r.written {
        out(format!(
            "wrote {} ({}, {}, {} bytes)",
            sanitize(&w.file.display().to_string()),
            plural(w.segments, "segment"),
            plural(w.entries, "entry"),
            w.bytes
        ))?;
    }
    // Problems are printed even with --quiet: someone must act on them.
    for x in &r.rejected {
        eprintln!("rejected: {}: {}", sanitize(&x.file.display().to_string()), sanitize(&x.reason));
        if let Some(q) = &x.quarantined {
            eprintln!("  copied to {}", sanitize(&q.display().to_string()));
        }
    }
    for x in &r.refused_segments {
        eprintln!("refused: {} in {}: {}", x.segment, sanitize(&x.file.display().to_string()), sanitize(&x.reason));
        if let Some(q) = &x.quarantined {
            eprintln!("  copied to {}", sanitize(&q.display().to_string()));
        }
    }
    for f in &r.forks {
        eprintln!(
            "fork: {} in {} contradicts {} from {}{}",
            f.segment,
            sanitize(&f.file.display().to_string()),
            f.conflicts_with,
            sanitize(&f.conflicts_with_source),
            f.seq.map(|s| format!(" (first difference at seq {s})")).unwrap_or_default()
        );
        if let Some(q) = &f.quarantined {
            eprintln!("  quarantined: {}", sanitize(&q.display().to_string()));
        }
        eprintln!("  {}", f.recovery);
    }
    for w in &r.warnings {
        ui.note(format!("warning: {}", sanitize(w)));
    }
    let c = &r.counts;
    if c.recovered > 0 {
        ui.note(format!("finished {} segments an interrupted relay had written", c.recovered));
    }
    ui.note(format!(
        "read {} ({}), verified {}, duplicate {} (copies {}, other bundles {}, carried before {}), \
         fork {}, rejected {}{}, written {} ({}, {}){}{}",
        plural(c.bundles_read, "bundle"),
        plural(c.segments_read, "segment"),
        c.segments_verified,
        c.duplicates,
        c.duplicate_same_bundle,
        c.duplicate_other_bundle,
        c.duplicate_already_carried,
        c.forks,
        c.rejected,
        if c.segments_refused > 0 {
            format!(", refused {}", plural(c.segments_refused, "segment"))
        } else {
            String::new()
        },
        plural(c.bundles_written, "bundle"),
        plural(c.segments_written, "segment"),
        plural(c.entries_written, "entry"),
        if c.foreign > 0 { format!(", {} foreign files skipped", c.foreign) } else { String::new() },
        if c.moved > 0 { format!(", {} inputs removed (--move)", c.moved) } else { String::new() },
    ));
    if c.bundles_written == 0 && c.rejected == 0 && c.forks == 0 {
        ui.note("nothing new to relay: every segment was carried before");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_size, plural};

    #[test]
    fn counts_read_naturally() {
        assert_eq!(plural(1, "bundle"), "1 bundle");
        assert_eq!(plural(0, "segment"), "0 segments");
        assert_eq!(plural(2, "entry"), "2 entries");
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("700m"), Ok(700 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert!(parse_size("G").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
