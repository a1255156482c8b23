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
    let t = Store::open(&node.home)?.take_in(folders, &trust, node.id())?;
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
    loop_of(node, &node.trust()?)
}

/// [`current_loop`] with the trust store read already.
pub fn loop_of(node: &Node, trust: &ferry::keys::TrustStore) -> anyhow::Result<ferry::receipt::confirm::Loop> {
    let state = node.state()?;
    let sent = ferry::receipt::sent::all(&state, node.id())?;
    let receipts = Store::open(&node.home)?.summaries(trust, node.id())?;
    Ok(ferry::receipt::confirm::Loop::new(node.id(), &sent, &receipts, trust))
}

/// The pictures of what this node carried onward as a relay, per origin,
/// and what the nodes further down confirmed of it (this node's own
/// receipt says nothing here: it holds what it carried).
pub fn carried_loops(node: &Node) -> anyhow::Result<Vec<ferry::receipt::confirm::Loop>> {
    let trust = node.trust()?;
    let carried = ferry::receipt::sent::carried(node)?;
    if carried.is_empty() {
        return Ok(Vec::new());
    }
    let store = Store::open(&node.home)?;
    let mut v = Vec::new();
    for (origin, sent) in carried {
        let receipts: Vec<_> = store.summaries(&trust, &origin)?.into_iter().filter(|s| &s.node != node.id()).collect();
        v.push(ferry::receipt::confirm::Loop::new(&origin, &sent, &receipts, &trust));
    }
    Ok(v)
}

/// The name of `origin` for people: this node's, or its trust store's.
pub fn origin_name(node: &Node, trust: &ferry::keys::TrustStore, origin: &ferry::keys::NodeId) -> Option<String> {
    if origin == node.id() {
        return Some(node.info.name.clone());
    }
    trust.name_of(origin).map(str::to_owned)
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

/// Whose entries a picture is about.
pub enum Whose<'a> {
    /// This node's own, sent by `bundle create`; `fix` is the command that sends again.
    Own { fix: &'a str },
    /// An origin's that this node carried onward as a relay.
    Carried,
}

/// Prints, per receiving node, what it confirmed of the entries and what
/// was sent and not confirmed; with `check`, flags entries the archive has
/// not confirmed `days` days after they were sent. Returns whether
/// something is wrong (overdue entries, a fork, no archive) for `--check`.
pub fn print_loop(
    l: &ferry::receipt::confirm::Loop,
    node: &Node,
    days: u32,
    check: bool,
    whose: Whose<'_>,
    trust: &ferry::keys::TrustStore,
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
    let who =
        origin_name(node, trust, &l.origin).map_or_else(|| format!("unknown node {}", l.origin), |n| sanitize(&n));
    let (sent_word, own) = match whose {
        Whose::Own { .. } => ("sent", true),
        Whose::Carried => ("passed on", false),
    };
    let mut negative = false;
    match (own, l.receivers.is_empty()) {
        (true, true) => out(format!("receipts: none yet (the computers {who} sends to send them back on the sticks)"))?,
        (true, false) => out("receipts (what arrived where):")?,
        (false, true) => out(format!("receipts for {who}'s entries carried onward: none yet"))?,
        (false, false) => out(format!("receipts for {who}'s entries carried onward (what arrived where):"))?,
    }
    // Receiving nodes that say the same (not the archive, no fork) share
    // one line: a road has a few, but a node may hold receipts from many.
    let mut shown: Vec<Vec<&ferry::receipt::confirm::Receiver>> = Vec::new();
    for r in &l.receivers {
        let same = |g: &Vec<&ferry::receipt::confirm::Receiver>| {
            let o = g[0];
            !r.archive
                && !o.archive
                && r.forks.is_empty()
                && o.forks.is_empty()
                && r.receipt_at.is_some()
                && o.confirmed == r.confirmed
                && o.pending == r.pending
                && o.unchecked == r.unchecked
        };
        match shown.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(r),
            None => shown.push(vec![r]),
        }
    }
    // A road's few nodes each keep their own line.
    let shown: Vec<Vec<&ferry::receipt::confirm::Receiver>> = shown
        .into_iter()
        .flat_map(|g| if g.len() > 3 { vec![g] } else { g.into_iter().map(|r| vec![r]).collect() })
        .collect();
    let name_of = |r: &ferry::receipt::confirm::Receiver| {
        r.name.as_deref().map_or_else(|| format!("unknown node {}", r.node), sanitize)
    };
    for group in &shown {
        let r = group[0];
        let name = if group.len() > 1 {
            format!("{}, {} and {} other nodes", name_of(group[0]), name_of(group[1]), group.len() - 2)
        } else {
            name_of(r)
        };
        let role = if r.archive { " (archive)" } else { "" };
        let when = || {
            let times: Vec<_> = group.iter().filter_map(|r| r.receipt_at).collect();
            match (times.iter().min(), times.iter().max()) {
                (Some(a), Some(b)) if local_time(a) != local_time(b) => {
                    format!("receipts of {} to {}", local_time(a), local_time(b))
                }
                (Some(a), _) => format!("receipt of {}", local_time(a)),
                _ => String::new(),
            }
        };
        let head = match (&r.receipt_at, r.confirmed.is_empty()) {
            (None, _) => format!("{name}{role}: no receipt yet"),
            (Some(_), true) => format!("{name}{role}: confirmed nothing of {who}'s yet ({})", when()),
            (Some(_), false) => format!("{name}{role}: confirmed {} ({})", ranges(&r.confirmed), when()),
        };
        out(format!("    {head}"))?;
        for p in &r.pending {
            out(format!(
                "        not confirmed yet: {}, {sent_word} {}{}",
                entries_range(p.first_seq, p.last_seq),
                local_time(&p.first_sent),
                if local_time(&p.last_sent) != local_time(&p.first_sent) {
                    format!(" (last {sent_word} {})", local_time(&p.last_sent))
                } else {
                    String::new()
                }
            ))?;
        }
        if !r.unchecked.is_empty() {
            out(format!(
                "        holds {} that cannot be checked here (not the end of a part this node {sent_word})",
                ranges(&r.unchecked)
            ))?;
        }
        for f in &r.forks {
            negative = true;
            if own {
                eprintln!(
                    "FORK     {name} holds other entries under {who}'s name: {} end with chain hash {}, but this \
                     computer's journal has {} there. Another computer uses this identity (a copied laptop, or a \
                     journal restored from an old copy); nothing is pruned while this stands. See `ferry node \
                     reissue --help` on the computer that should become a new node.",
                    entries_range(f.first_seq, f.last_seq),
                    f.theirs,
                    f.ours
                );
            } else {
                eprintln!(
                    "FORK     {name} holds other entries under {who}'s name than this node carried: {} end with \
                     chain hash {} there, but the part passed on from here ends with {}. Two computers use {who}'s \
                     identity (a copied laptop); the one that is a copy should become a new node (`ferry node \
                     reissue --help` there). Nothing of {who}'s is pruned here while this stands.",
                    entries_range(f.first_seq, f.last_seq),
                    f.theirs,
                    f.ours
                );
            }
        }
    }
    if check {
        if !l.has_archive && own {
            negative = true;
            eprintln!("{}", no_archive_message());
        }
        let overdue = l.overdue(now, days);
        if let Some(a) = l.archive() {
            let name = a.name.as_deref().map_or_else(|| a.node.to_string(), sanitize);
            for p in &overdue {
                negative = true;
                match whose {
                    Whose::Own { fix } => eprintln!(
                        "OVERDUE  {} of {who} were sent {} ({}) and {name} has not confirmed them after {days} days. \
                         The next `{fix}` sends them again; if no receipt came back for long, ask the driver whether \
                         the sticks reached {name}",
                        entries_range(p.first_seq, p.last_seq),
                        ago(&p.first_sent),
                        local_time(&p.first_sent)
                    ),
                    Whose::Carried => eprintln!(
                        "OVERDUE  {who}'s {} were passed on from here {} ({}) and {name} has not confirmed them \
                         after {days} days. Ask whether that stick reached {name}; {who}'s next `ferry bundle create` \
                         sends them again, and the next `ferry bundle relay` here passes them on again",
                        entries_range(p.first_seq, p.last_seq),
                        ago(&p.first_sent),
                        local_time(&p.first_sent)
                    ),
                }
            }
            if overdue.is_empty() && a.forks.is_empty() && !negative {
                let what = if own {
                    format!("nothing sent more than {days} days ago")
                } else {
                    format!("nothing of {who}'s passed on more than {days} days ago")
                };
                out(format!("check: ok, {what} waits for {name}'s receipt"))?;
            }
        }
    }
    Ok(negative)
}

/// What `--check` says when no computer is trusted as the archive.
pub fn no_archive_message() -> &'static str {
    "CHECK    no computer is trusted as the archive here, so nothing can be confirmed: run `ferry trust add central \
     KEY --role archive` with the central server's name and key (as `ferry key export` prints it there)"
}
