//! `ferry demo`: the whole story on built-in fixtures, in a temporary folder.

use std::path::{Path, PathBuf};

use clap::Args;
use ferry::bundle::create::{create_from_journal, CreateOptions};
use ferry::keys::Role;
use ferry::node::Node;
use ferry::progress::Silent;
use ferry::verify::verify_file;

use super::output::out;
use super::{Outcome, Ui};

const FIELD_1_JOURNAL: &str = include_str!("../../fixtures/journals/field-1.jsonl");
const FIELD_2_LEGACY: &str = include_str!("../../fixtures/journals/field-2-legacy.txt");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work in this folder and keep it (default: a temporary folder, removed after).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(a: DemoArgs, _ui: &Ui) -> anyhow::Result<Outcome> {
    let tmp;
    let root: &Path = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path()
        }
    };
    out(format!("ferry demo in {}", root.display()))?;

    let f1 = Node::init(&root.join("field-1"), "field-1", Some(1))?;
    let f2 = Node::init(&root.join("field-2"), "field-2", Some(2))?;
    let central = Node::init(&root.join("central"), "central", None)?;
    out(format!("1. three nodes: field-1 ({}), field-2 ({}), central ({})", f1.id(), f2.id(), central.id()))?;

    let mut trust = central.trust()?;
    for n in [&f1, &f2] {
        trust.add(&n.info.name, &n.signing_key().verifying_key(), &[Role::Origin])?;
    }
    central.save_trust(&trust)?;
    out("2. central trusts both field laptops (ferry key export → ferry trust add)")?;

    let journals = root.join("journals");
    std::fs::create_dir_all(journals.join("field-2"))?;
    std::fs::write(journals.join("field-1.jsonl"), FIELD_1_JOURNAL)?;
    std::fs::write(journals.join("field-2").join("journal.txt"), FIELD_2_LEGACY)?;
    let usb = root.join("usb");
    let opts = CreateOptions { out_dir: usb.clone(), since: None };
    let r1 = create_from_journal(&f1, &journals.join("field-1.jsonl"), &opts, &mut Silent)?;
    let r2 = create_from_journal(&f2, &journals.join("field-2"), &opts, &mut Silent)?;
    for (name, r) in [("field-1", &r1), ("field-2 (legacy journal)", &r2)] {
        let file = r.file.as_deref().map(|f| f.file_name().unwrap_or_default().to_string_lossy().into_owned());
        out(format!("3. {name}: bundle create → {} ({} entries)", file.unwrap_or_default(), r.entries))?;
    }
    let again = create_from_journal(&f1, &journals.join("field-1.jsonl"), &opts, &mut Silent)?;
    out(format!("   field-1 again: {} new entries, no file", again.entries))?;

    let mut all_ok = true;
    for f in ferry::bundle::find_bundles(std::slice::from_ref(&usb))? {
        let r = verify_file(&f, &trust, &mut Silent);
        all_ok &= r.ok;
        let verdict = if r.ok { "ok".to_string() } else { format!("FAIL: {}", r.error.unwrap_or_default()) };
        out(format!("4. central: bundle verify {} → {verdict}", f.file_name().unwrap_or_default().to_string_lossy()))?;
        let i = ferry::bundle::inspect::inspect(&f, Some(&trust))?;
        for s in &i.segments {
            let tables: Vec<String> = s.tables.iter().map(|(t, c)| format!("{t}: {}", c.total())).collect();
            out(format!(
                "   inspect: origin {} seq {}..={}, {} .. {}, {}",
                s.origin.name.as_deref().unwrap_or("?"),
                s.first_seq,
                s.last_seq,
                s.ts_min,
                s.ts_max,
                tables.join(", ")
            ))?;
        }
    }
    if !all_ok {
        anyhow::bail!("the demo's bundles did not verify");
    }
    out("done: every bundle verified against central's trust store")?;
    Ok(Outcome::Ok)
}
