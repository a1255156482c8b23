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

A community server, which applies what the field sends and passes it on
with its own edits, does it all with --apply: it applies the bundles to its
database, bundles its own edits, and relays everything, so nothing it applied
stays behind.

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
    if let Some(db) = &a.apply {
        super::apply::sqlite_only(db, "apply bundles to")?;
    }
    let mut negative = false;
    // Receipts that came back on the sticks (the one written to, which went
    // up and came back, and the ones read from) are taken in first.
    {
        let node = Node::open(&home_dir(home.clone())?)?;
        let mut folders = vec![a.out.clone()];
        folders.extend(ferry::receipt::folders_of(&a.from));
        super::receipts::take_in(&node, &folders, ui)?;
    }
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
            let r = super::bundle::create_from_db_refreshing(&node, db, &opts, ui, progress.as_mut())?;
            if let Some(f) = &r.file {
                ui.note(format!(
                    "bundled this server's own edits: {} ({})",
                    sanitize(&f.display().to_string()),
                    super::apply::plural(r.entries, "entry", "entries")
                ));
            }
        }
    }
    let node = Node::open(&home_dir(home)?)?;
    let opts_from = a.from.clone();
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
                human(&done, node.trust().ok().as_ref(), ui)?;
            }
            eprintln!(
                "stopped part way: {} written completely and recorded; run the same command again to relay the rest",
                super::apply::plural(done.counts.bundles_written, "bundle", "bundles")
            );
            return Err((*source).into());
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        json(&report)?;
    } else {
        human(&report, node.trust().ok().as_ref(), ui)?;
    }
    // What this node now holds (carried, and applied with --apply), signed,
    // goes back down with the receipts it holds from further up.
    let mut holdings = ferry::receipt::Holdings::from_relay(&ferry::relay::ledger::Ledger::open(&node)?.all()?);
    if let Some(db) = &a.apply {
        holdings.extend(&super::apply::target_holdings(db)?);
    }
    let hop = ferry::receipt::after_hop(&node, &holdings, &ferry::receipt::folders_of(&opts_from))?;
    super::receipts::print_hop(&hop, ui);
    Ok(if report.negative() || negative { Outcome::Negative } else { Outcome::Ok })
}

/// A segment's member name (`<origin>.<first>-<last>.jsonl.zst`) for
/// people: "field-1's entries 3–9".
fn part(trust: Option<&ferry::keys::TrustStore>, member: &str) -> String {
    let (origin, rest) = member.split_once('.').unwrap_or((member, ""));
    let range = rest.split_once('.').map_or(rest, |(r, _)| r);
    match range.split_once('-').and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))) {
        Some((a, b)) => format!("{}'s {}", super::apply::who(trust, origin), super::apply::entries_range(a, b)),
        None => sanitize(member),
    }
}

fn human(r: &RelayReport, trust: Option<&ferry::keys::TrustStore>, ui: &Ui) -> anyhow::Result<()> {
    use super::apply::plural as words;
    for w in &r.written {
        out(format!(
            "wrote {}: {} in {}, {} kB",
            sanitize(&w.file.display().to_string()),
            words(w.entries, "entry", "entries"),
            words(w.segments, "part", "parts"),
            w.bytes.div_ceil(1024)
        ))?;
    }
    // Problems are printed even with --quiet: someone must act on them.
    for x in &r.rejected {
        eprintln!("REJECTED {}: {}", sanitize(&x.file.display().to_string()), sanitize(&x.reason));
        if let Some(q) = &x.quarantined {
            eprintln!("         set aside in {}", sanitize(&q.display().to_string()));
        }
    }
    for x in &r.refused_segments {
        eprintln!(
            "REFUSED  {} in {} (the rest of the bundle is passed on): {}",
            part(trust, &x.segment),
            sanitize(&x.file.display().to_string()),
            sanitize(&x.reason)
        );
        if let Some(q) = &x.quarantined {
            eprintln!("         set aside in {}", sanitize(&q.display().to_string()));
        }
    }
    for f in &r.forks {
        eprintln!(
            "FORK     {} in {} differ from {} carried before (from {}){}",
            part(trust, &f.segment),
            sanitize(&f.file.display().to_string()),
            part(trust, &f.conflicts_with),
            sanitize(&f.conflicts_with_source),
            f.seq.map(|s| format!(", first at entry {s}")).unwrap_or_default()
        );
        if let Some(q) = &f.quarantined {
            eprintln!("         set aside in {}", sanitize(&q.display().to_string()));
        }
        eprintln!("         {}", f.recovery);
    }
    for w in &r.warnings {
        ui.note(format!("warning: {}", sanitize(w)));
    }
    let c = &r.counts;
    if c.sent_again > 0 {
        ui.note(format!(
            "passed on again {} carried before: their laptop sent them again, as the archive never confirmed them",
            words(c.sent_again, "part", "parts")
        ));
    }
    if c.recovered > 0 {
        ui.note(format!("finished {} an interrupted relay had written", words(c.recovered, "part", "parts")));
    }
    let mut problems = Vec::new();
    if c.rejected > 0 {
        problems.push(format!("{} rejected", words(c.rejected, "bundle", "bundles")));
    }
    if c.segments_refused > 0 {
        problems.push(format!("{} refused", words(c.segments_refused, "part", "parts")));
    }
    if c.forks > 0 {
        problems.push(words(c.forks, "fork", "forks"));
    }
    ui.note(format!(
        "read {} ({}): passed on {} in {} ({}); dropped {} (already in another bundle here: {}, carried before: {}){}{}{}",
        words(c.bundles_read, "bundle", "bundles"),
        words(c.segments_read, "part", "parts"),
        words(c.entries_written, "entry", "entries"),
        words(c.bundles_written, "bundle", "bundles"),
        words(c.segments_written, "part", "parts"),
        words(c.duplicates, "duplicate", "duplicates"),
        c.duplicate_same_bundle + c.duplicate_other_bundle,
        c.duplicate_already_carried,
        if problems.is_empty() { String::new() } else { format!("; {}", problems.join(", ")) },
        if c.foreign > 0 { format!("; {} other files left alone", c.foreign) } else { String::new() },
        if c.moved > 0 { format!("; {} inputs removed (--move)", c.moved) } else { String::new() },
    ));
    if c.bundles_written == 0 && c.rejected == 0 && c.forks == 0 {
        ui.note("nothing new to pass on: every part was carried before");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_size, part};

    #[test]
    fn parts_read_as_whose_entries() {
        assert_eq!(part(None, "8f619a3505c4bd64.3-9.jsonl.zst"), "8f619a3505c4bd64's entries 3–9");
        assert_eq!(part(None, "8f619a3505c4bd64.4-4.jsonl.zst"), "8f619a3505c4bd64's entry 4");
        assert_eq!(part(None, "odd"), "odd");
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
