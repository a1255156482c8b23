//! Printing what happened to receipts in a hop: taken in from a stick, left
//! on a stick for the way back.

use std::path::PathBuf;

use ferry::node::Node;
use ferry::receipt::{HopReceipts, Store, TakeIn};
use ferry::sanitize;

use super::Ui;

/// Takes in the receipts in `folders` (the sticks a command writes to or
/// reads from) and says what came in. A refused receipt is printed even
/// with --quiet: someone forged or damaged it, or a key is not trusted.
pub fn take_in(node: &Node, folders: &[PathBuf], ui: &Ui) -> anyhow::Result<TakeIn> {
    let trust = node.trust()?;
    let t = Store::open(&node.home).take_in(folders, &trust, node.id())?;
    for (signer, at, _) in &t.taken {
        let name = trust.name_of(signer).map_or_else(|| signer.to_string(), sanitize);
        ui.note(format!("took in {name}'s receipt (signed {})", super::status::local_time(at)));
    }
    for (file, why) in &t.refused {
        eprintln!(
            "REFUSED  receipt {}: {} (it confirms nothing here; if its signer is a computer on this road, trust its key: \
             `ferry trust add NAME KEY`)",
            sanitize(&file.display().to_string()),
            sanitize(why)
        );
    }
    Ok(t)
}

/// Says which receipts were left for the way back.
pub fn print_hop(hop: &HopReceipts, ui: &Ui) {
    for w in &hop.warnings {
        eprintln!("warning: {}", sanitize(w));
    }
    if hop.new {
        if let Some(own) = &hop.own {
            ui.note(format!("signed a receipt of what this node holds ({})", sanitize(&own.display().to_string())));
        }
    }
    if !hop.written.is_empty() {
        ui.note(format!(
            "left {} for the way back: {}",
            super::apply::plural(hop.written.len() as u64, "receipt", "receipts"),
            hop.written.iter().map(|p| sanitize(&p.display().to_string())).collect::<Vec<_>>().join(", ")
        ));
    }
}

/// The picture of what this node sent and what was confirmed.
pub fn current_loop(node: &Node) -> anyhow::Result<ferry::receipt::confirm::Loop> {
    let trust = node.trust()?;
    let state = node.state()?;
    let sent = ferry::receipt::sent::all(&state, node.id())?;
    let receipts = Store::open(&node.home).summaries(&trust, node.id());
    Ok(ferry::receipt::confirm::Loop::new(node.id(), &sent, &receipts, &trust))
}

/// Where `bundle create` starts sending again, if anywhere (with `--since`
/// given: nowhere else), and in a pruned journal where to resume.
pub fn resend_point(
    node: &Node,
    since: Option<u64>,
    unconfirmed: bool,
    days: u32,
    ui: &Ui,
) -> anyhow::Result<Option<(u64, Option<ferry::capture::Resume>)>> {
    if since.is_some() {
        return Ok(None);
    }
    let l = current_loop(node)?;
    if unconfirmed && !l.has_archive {
        anyhow::bail!(
            "--unconfirmed sends again what the archive has not confirmed, but no computer is trusted as the \
             archive here: run `ferry trust add central KEY --role archive` with the central server's name and key"
        );
    }
    let Some(from) = l.resend_from(ferry::journal::Timestamp::now(), days, unconfirmed) else { return Ok(None) };
    if let Some(a) = l.archive() {
        let name = a.name.as_deref().map_or_else(|| a.node.to_string(), sanitize);
        if let Some(p) = a.pending.iter().find(|p| p.first_seq == from) {
            ui.note(format!(
                "sending again from entry {from}: {} sent on {} and not confirmed by {name}{}",
                super::apply::entries_range(p.first_seq, p.last_seq),
                super::status::local_time(&p.last_sent),
                if unconfirmed { String::new() } else { format!(" within {days} days") }
            ));
        }
    }
    let resume = if from <= 1 {
        None
    } else {
        let state = node.state()?;
        ferry::receipt::sent::all(&state, node.id())?
            .into_iter()
            .filter(|s| s.last_seq + 1 == from)
            .find_map(|s| s.ts_after.map(|ts| ferry::capture::Resume { seq: s.last_seq, chain: s.chain_after, ts }))
    };
    Ok(Some((from, resume)))
}

/// Prints, per receiving node, what it confirmed of this node's entries and
/// what was sent and not confirmed; with `check`, flags entries the archive
/// has not confirmed `days` days after they were first sent. Returns whether
/// something is wrong (overdue entries, a fork, no archive) for `--check`.
pub fn print_loop(
    l: &ferry::receipt::confirm::Loop,
    node: &Node,
    days: u32,
    check: bool,
    fix: &str,
) -> anyhow::Result<bool> {
    use super::apply::entries_range;
    use super::output::out;
    use super::status::local_time;
    let now = ferry::journal::Timestamp::now();
    let ranges = |v: &[(u64, u64)]| v.iter().map(|&(a, b)| entries_range(a, b)).collect::<Vec<_>>().join(", ");
    let ago = |t: &ferry::journal::Timestamp| {
        let d = (now.0 - t.0).max(0) / ferry::receipt::confirm::DAY;
        match d {
            0 => "today".to_owned(),
            1 => "1 day ago".to_owned(),
            n => format!("{n} days ago"),
        }
    };
    let me = sanitize(&node.info.name);
    let mut negative = false;
    if l.receivers.is_empty() {
        out(format!("receipts: none yet (the computers {me} sends to send them back on the sticks)"))?;
    } else {
        out("receipts (what arrived where):")?;
    }
    for r in &l.receivers {
        let name = r.name.as_deref().map_or_else(|| format!("unknown node {}", r.node), sanitize);
        let role = if r.archive { " (archive)" } else { "" };
        let head = match (&r.receipt_at, r.confirmed.is_empty()) {
            (None, _) => format!("{name}{role}: no receipt yet"),
            (Some(at), true) => {
                format!("{name}{role}: confirmed nothing of {me}'s yet (receipt of {})", local_time(at))
            }
            (Some(at), false) => {
                format!("{name}{role}: confirmed {} (receipt of {})", ranges(&r.confirmed), local_time(at))
            }
        };
        out(format!("    {head}"))?;
        for p in &r.pending {
            out(format!(
                "        not confirmed yet: {}, sent {}{}",
                entries_range(p.first_seq, p.last_seq),
                local_time(&p.first_sent),
                if local_time(&p.last_sent) != local_time(&p.first_sent) {
                    format!(" (last sent {})", local_time(&p.last_sent))
                } else {
                    String::new()
                }
            ))?;
        }
        if !r.unchecked.is_empty() {
            out(format!(
                "        holds {} that cannot be checked here (not the end of a bundle this node sent)",
                ranges(&r.unchecked)
            ))?;
        }
        for f in &r.forks {
            negative = true;
            eprintln!(
                "FORK     {name} holds other entries under {me}'s name: {} end with chain hash {}, but this \
                 computer's journal has {} there. Another computer uses this identity (a copied laptop, or a \
                 journal restored from an old copy); nothing is pruned while this stands. See `ferry node \
                 reissue --help` on the computer that should become a new node.",
                entries_range(f.first_seq, f.last_seq),
                f.theirs,
                f.ours
            );
        }
    }
    if check {
        if !l.has_archive {
            negative = true;
            eprintln!(
                "CHECK    no computer is trusted as the archive here, so nothing can be confirmed: run `ferry trust \
                 add central KEY --role archive` with the central server's name and key (as `ferry key export` \
                 prints it there)"
            );
        }
        let overdue = l.overdue(now, days);
        if let Some(a) = l.archive() {
            let name = a.name.as_deref().map_or_else(|| a.node.to_string(), sanitize);
            for p in &overdue {
                negative = true;
                eprintln!(
                    "OVERDUE  {} of {me} were sent {} ({}) and {name} has not confirmed them after {days} days. \
                     The next `{fix}` sends them again; if no receipt came back for long, ask the driver whether \
                     the sticks reached {name}",
                    entries_range(p.first_seq, p.last_seq),
                    ago(&p.first_sent),
                    local_time(&p.first_sent)
                );
            }
            if overdue.is_empty() && a.forks.is_empty() && !negative {
                out(format!("check: ok, nothing sent more than {days} days ago waits for {name}'s receipt"))?;
            }
        }
    }
    Ok(negative)
}
