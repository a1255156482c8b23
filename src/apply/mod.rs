//! `ferry bundle apply`: verified, exactly-once, convergent, crash-safe replay
//! of bundles into a target SQLite database (rules in `docs/APPLY.md`).
//!
//! One apply run is one SQLite transaction (`BEGIN IMMEDIATE` …
//! `COMMIT`, `synchronous=FULL`), holding a savepoint per bundle and per
//! segment: a bundle that fails verification or names a table or column the
//! target lacks is rolled back alone, the others still apply, and a kill at
//! any instant leaves the database as before the run or after it. The ledger
//! tables (`_ferry_*`, see [`ledger`]) are written in the same transaction as
//! the data, so a re-run skips exactly what was applied.
//!
//! Verification and apply are one streaming pass: the seal, every origin and
//! hop signature are checked before any entry is read
//! ([`crate::verify::check_signatures`]); every entry is checked as it is
//! decompressed ([`crate::verify::check_entries`]) and applied inside the
//! bundle's savepoint, which is released only once the whole bundle verified.

pub mod engine;
pub mod ledger;
pub mod merge;
pub mod server;
pub mod session;
pub mod status;
pub mod types;

use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::args;
use crate::bundle::{BundleReader, SegmentMember};
use crate::chain::ChainHash;
use crate::crashpoint;
use crate::keys::TrustStore;
use crate::progress::Progress;
use crate::schema;
use crate::verify::{check_entries, check_entries_chained, check_signatures_each, error_chain, VerifyError};
pub use engine::{Counts, Events};
use engine::{Engine, Fail};
use ledger::Hashes;
use session::Session;

/// Errors that stop an apply run (nothing of the run is committed).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("failed to open the target database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no target database at {}: create it with the app's migrations first", .0.display())]
    Missing(PathBuf),
    #[error("failed to apply to {}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: session::DbError,
    },
    #[error("cannot apply to {}", path.display())]
    NewerLedger {
        path: PathBuf,
        #[source]
        source: ledger::NewerLedger,
    },
    #[error(
        "ferry cannot {what} a {kind} server yet ({target}): this version of ferry writes SQLite files only (what \
         works with servers so far: docs/APPLY.md, \"Engines\")"
    )]
    ServerNotYet { kind: &'static str, target: String, what: String },
    #[error(transparent)]
    Server(server::ServerError),
    #[error(
        "another `ferry bundle apply` is applying bundles to {target} right now; nothing was applied. Run this \
         again once it has finished"
    )]
    Busy { target: String },
    #[error("cannot read the edits captured in {}: {reason}", path.display())]
    LocalJournal { path: PathBuf, reason: String },
}

/// What `bundle apply` should do.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Try the quarantined entries again first (after the target was
    /// migrated, or a wrong key fixed at the origin).
    pub retry_quarantined: bool,
    /// The time to judge entries' dates by (entries dated more than a day
    /// after it wait); `None`: this computer's clock.
    pub now: Option<crate::journal::Timestamp>,
    /// This node's encryption identities: they open the segments encrypted
    /// to it (none: only plain segments apply).
    pub keyring: crate::crypt::Keyring,
    /// Pass over segments encrypted to other nodes instead of refusing them
    /// (`bundle relay --apply`: the relay carries them on to their recipients).
    pub pass_closed: bool,
}

/// A fork: the same origin and seq with a different chain hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForkReport {
    pub origin: String,
    pub seq: u64,
    /// The first bytes of the chain hash applied before at `seq` (hex).
    pub known_hash: String,
    /// The first bytes of the chain hash this segment has at `seq` (hex).
    pub new_hash: String,
    pub segment: String,
    /// The first seq not known to be the same in both journals: the copy
    /// whose segment was refused must send its entries again from here under
    /// a new identity (`ferry node reissue`).
    pub reissue_from: u64,
}

/// What happened to one segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentApply {
    pub origin: String,
    /// The origin's name in this node's trust store.
    #[serde(default)]
    pub origin_name: Option<String>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub counts: Counts,
    /// Set when the segment forks from what was applied: it was not applied.
    pub fork: Option<ForkReport>,
    /// Why the segment was refused (nothing of it was applied), while the
    /// bundle's other segments applied: a signer this node does not trust
    /// for it, or rows in an id block another origin uses.
    pub refused: Option<String>,
    /// When this database first refused this part for the same reason (it
    /// was reported then; a second report is not a new alarm).
    #[serde(default)]
    pub refused_before: Option<String>,
    /// Set for a part encrypted to other nodes that `bundle relay --apply`
    /// carries on unread: the nodes it is encrypted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_unread: Option<String>,
}

/// What happened to one bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleApply {
    pub file: PathBuf,
    /// Applied (possibly with forked segments quarantined).
    pub ok: bool,
    /// Why the bundle was refused (nothing of it was applied).
    pub error: Option<String>,
    /// When this database first refused this bundle for the same reason.
    #[serde(default)]
    pub refused_before: Option<String>,
    pub counts: Counts,
    pub segments: Vec<SegmentApply>,
}

/// What an apply run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyReport {
    pub db: PathBuf,
    pub bundles: Vec<BundleApply>,
    /// The sum of the applied bundles' counts.
    pub totals: Counts,
    /// Entries captured in the target itself since the last run, merged
    /// with their own versions (a tracked target).
    pub local: Counts,
    /// What the run changed about entries and rows counted before.
    pub events: Events,
    /// Bundles refused (verification failed or not applicable), and
    /// segments refused inside bundles that otherwise applied, for a reason
    /// not reported before.
    pub refused: u64,
    /// Refusals this database had already recorded, for the same reason.
    #[serde(default)]
    pub refused_again: u64,
    /// Quarantined entries tried again (`retry_quarantined`) and what became of them.
    pub retried: Counts,
    /// Segments quarantined as forks.
    pub forks: u64,
}

impl ApplyReport {
    /// Whether the run had a negative verdict (a refused bundle or a fork).
    pub fn negative(&self) -> bool {
        self.refused > 0 || self.forks > 0
    }
}

/// How a refused segment is recorded in `_ferry_refused`.
fn segment_reason(s: &SegmentApply, why: &str) -> String {
    format!("entries {}–{} of origin {}: {why}", s.first_seq, s.last_seq, s.origin)
}

/// When this database first recorded a refusal with exactly this reason
/// (the same part refused again, in this bundle or another carrying it).
fn refused_before(conn: &dyn Session, reason: &str) -> session::Result<Option<String>> {
    conn.query_one("SELECT min(recorded_at) FROM _ferry_refused WHERE reason = ?1", args![reason])?.get(0)
}

/// Opens a target database: it must exist; double-quoted string literals
/// off, `synchronous=FULL`. Foreign-key enforcement is off for ferry's own
/// connection: origins journal what their cascades did, and apply checks
/// parents itself (see [`engine`]'s held rows).
pub fn open_target(path: &Path) -> Result<Connection, ApplyError> {
    if !path.is_file() {
        return Err(ApplyError::Missing(path.to_path_buf()));
    }
    let err = |source| ApplyError::Open { path: path.to_path_buf(), source };
    let conn = Connection::open(path).map_err(err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false).map_err(err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
    // 16 MiB of page cache, and 14 MiB for the row ledger's groups (see
    // ledger::CACHE_BYTES), where a hit costs no statement at all. Text keys
    // (UUIDs) land at random places in both the table's key index and the
    // row ledger: with 4 MiB, SQLite spilled and re-read pages all the time
    // (docs/PERFORMANCE.md, "Apply (issue 10)").
    conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA synchronous = FULL; PRAGMA cache_size = -16384;")
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// The file name of a bundle, how refusals are matched with a later success.
fn bundle_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Applies bundle files to the database at `db` in one transaction.
pub fn apply(
    db: &Path,
    files: &[PathBuf],
    trust: &TrustStore,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> Result<ApplyReport, ApplyError> {
    let mut conn = open_target(db)?;
    let sql_err = |source: session::DbError| ApplyError::Sqlite { path: db.to_path_buf(), source };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| sql_err(e.into()))?;
    if let Err(source) = ledger::check_version(&*tx).map_err(sql_err)? {
        return Err(ApplyError::NewerLedger { path: db.to_path_buf(), source });
    }
    let target_tables = schema::tables(&tx).map_err(|e| sql_err(e.into()))?;
    ledger::prepare(&*tx, &target_tables).map_err(sql_err)?;
    // Capture triggers skip ferry's own writes (no echoes); see docs/CAPTURE.md.
    crate::capture::suppress(&tx, true).map_err(|e| sql_err(e.into()))?;
    let report = run(&*tx, db, files, trust, opts, progress)?;
    crate::capture::suppress(&tx, false).map_err(|e| sql_err(e.into()))?;
    crashpoint::hit("apply: before commit");
    tx.commit().map_err(|e| sql_err(e.into()))?;
    crashpoint::hit("apply: after commit");
    Ok(report)
}

/// Applies bundle files to a PostgreSQL server in one transaction, under an
/// advisory lock that keeps a second apply to the same database out (it is
/// refused, nothing applied, and says to run again). The ledger tables are
/// created in the target's current schema on first use. Before commit, the
/// sequences of the tables written are raised above every id applied, so
/// the app's own next insert cannot collide.
pub fn apply_server(
    target: &crate::target::Server,
    files: &[PathBuf],
    trust: &TrustStore,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> Result<ApplyReport, ApplyError> {
    let db = PathBuf::from(target.to_string());
    let session = server::session(target).map_err(ApplyError::Server)?;
    let conn: &dyn Session = &*session;
    let sql_err = |source: session::DbError| ApplyError::Sqlite { path: db.clone(), source };
    server::begin(conn).map_err(sql_err)?;
    if !server::lock(conn).map_err(sql_err)? {
        return Err(ApplyError::Busy { target: target.to_string() });
    }
    if let Err(source) = ledger::check_version(conn).map_err(sql_err)? {
        return Err(ApplyError::NewerLedger { path: db, source });
    }
    let tables = engine::load_server_tables(conn).map_err(sql_err)?;
    let mut listed: Vec<schema::Table> = tables
        .values()
        .map(|t| schema::Table {
            name: t.name.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| schema::Column { name: c.clone(), decl_type: String::new(), notnull: false, pk: 0 })
                .collect(),
            autoincrement: false,
        })
        .collect();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    ledger::prepare(conn, &listed).map_err(sql_err)?;
    let report = run(conn, &db, files, trust, opts, progress)?;
    crashpoint::hit("apply: before commit");
    conn.batch("COMMIT").map_err(sql_err)?;
    crashpoint::hit("apply: after commit");
    Ok(report)
}

/// One apply run over an open transaction, from the first step (a tracked
/// target's own edits, waiting entries) to the last (held rows settled,
/// what the engine holds written, a server's sequences raised).
fn run(
    conn: &dyn Session,
    db: &Path,
    files: &[PathBuf],
    trust: &TrustStore,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> Result<ApplyReport, ApplyError> {
    let sql_err = |source: session::DbError| ApplyError::Sqlite { path: db.to_path_buf(), source };
    let fail = |f: Fail| match f {
        Fail::Db(source) => ApplyError::Sqlite { path: db.to_path_buf(), source },
        Fail::Refused(reason) | Fail::Segment(reason) => ApplyError::LocalJournal { path: db.to_path_buf(), reason },
    };
    let tx = conn;
    let now = opts.now.unwrap_or_else(crate::journal::Timestamp::now);
    let mut eng = Engine::new(tx, now).map_err(sql_err)?;
    eng.names = trust.keys.iter().map(|k| (k.node.to_string(), k.name.clone())).collect();
    eng.fold_local(&db.display().to_string()).map_err(fail)?;
    eng.release_waiting().map_err(fail)?;
    let local = eng.counts;
    eng.counts = Counts::default();
    if opts.retry_quarantined {
        eng.retry_quarantined().map_err(fail)?;
    }
    let retried = eng.counts;
    let mut report = ApplyReport {
        db: db.to_path_buf(),
        bundles: Vec::new(),
        totals: Counts::default(),
        local,
        events: Events::default(),
        refused: 0,
        refused_again: 0,
        forks: 0,
        retried,
    };
    for file in files {
        crashpoint::hit("apply: bundle start");
        eng.savepoint("ferry_bundle").map_err(sql_err)?;
        eng.counts = Counts::default();
        let total = std::fs::metadata(file).map(|m| m.len()).ok();
        progress.start("applying", total);
        let mut segments = Vec::new();
        let result = apply_bundle(&mut eng, file, trust, opts, &mut segments, progress);
        progress.finish();
        let result = match result {
            Err(Fail::Db(e)) if !engine::is_fatal(&e) => {
                Err(Fail::Refused(format!("the target database refused it: {}", error_chain(&e))))
            }
            r => r,
        };
        match result {
            Ok(()) => {
                crashpoint::hit("apply: bundle done, savepoint not released");
                let mut earlier = Vec::new();
                for s in segments.iter_mut() {
                    s.origin_name = eng.names.get(&s.origin).cloned();
                    let before = match &s.refused {
                        Some(why) => refused_before(tx, &segment_reason(s, why)).map_err(sql_err)?,
                        None => None,
                    };
                    earlier.push(before);
                }
                Session::execute(tx, "DELETE FROM _ferry_refused WHERE name = ?1", args![bundle_name(file)])
                    .map_err(sql_err)?;
                for (s, before) in segments.iter_mut().zip(earlier) {
                    let Some(why) = &s.refused else { continue };
                    let reason = segment_reason(s, why);
                    let at = before.clone().unwrap_or_else(|| crate::journal::Timestamp::now().to_rfc3339());
                    Session::execute(
                        tx,
                        "INSERT INTO _ferry_refused (bundle, reason, recorded_at, name) VALUES (?1, ?2, ?3, ?4)",
                        args![file.display().to_string(), reason, at, bundle_name(file)],
                    )
                    .map_err(sql_err)?;
                    match before {
                        Some(_) => report.refused_again += 1,
                        None => report.refused += 1,
                    }
                    s.refused_before = before;
                }
                eng.release("ferry_bundle").map_err(sql_err)?;
                report.forks += segments.iter().filter(|s| s.fork.is_some()).count() as u64;
                report.totals.add(&eng.counts);
                report.bundles.push(BundleApply {
                    file: file.clone(),
                    ok: true,
                    error: None,
                    refused_before: None,
                    counts: eng.counts,
                    segments,
                });
            }
            Err(Fail::Refused(reason) | Fail::Segment(reason)) => {
                eng.rollback_to("ferry_bundle").and_then(|()| eng.release("ferry_bundle")).map_err(sql_err)?;
                let before = refused_before(tx, &reason).map_err(sql_err)?;
                let at = before.clone().unwrap_or_else(|| crate::journal::Timestamp::now().to_rfc3339());
                Session::execute(
                    tx,
                    "INSERT INTO _ferry_refused (bundle, reason, recorded_at, name) VALUES (?1, ?2, ?3, ?4)",
                    args![file.display().to_string(), reason, at, bundle_name(file)],
                )
                .map_err(sql_err)?;
                match before {
                    Some(_) => report.refused_again += 1,
                    None => report.refused += 1,
                }
                report.bundles.push(BundleApply {
                    file: file.clone(),
                    ok: false,
                    error: Some(reason),
                    refused_before: before,
                    counts: Counts::default(),
                    segments: Vec::new(),
                });
            }
            Err(Fail::Db(e)) => return Err(sql_err(e)),
        }
    }
    let written = eng.written_tables();
    report.events = eng.finish().map_err(fail)?;
    server::raise_counters(tx, &written).map_err(sql_err)?;
    Ok(report)
}

fn refuse(e: impl std::error::Error) -> Fail {
    Fail::Refused(error_chain(&e))
}

fn apply_bundle(
    eng: &mut Engine,
    path: &Path,
    trust: &TrustStore,
    opts: &ApplyOptions,
    segments: &mut Vec<SegmentApply>,
    progress: &mut dyn Progress,
) -> Result<(), Fail> {
    let mut reader = BundleReader::open(path).map_err(refuse)?;
    // A signer this node does not trust for its part refuses its segment
    // only; a bad signature or broken custody refuses the bundle.
    let mut verdicts = check_signatures_each(&reader, trust).map_err(refuse)?;
    // Encrypted segments: decrypted here, once every byte proved unchanged;
    // one encrypted to other nodes is refused, naming them.
    crate::verify::open_encrypted(&mut reader, path, &opts.keyring).map_err(refuse)?;
    if !opts.pass_closed {
        crate::verify::refuse_closed(&reader, trust, &mut verdicts);
    }
    crashpoint::hit("apply: signatures verified");
    for d in reader.descriptors() {
        // Tables ferry must never write are refused before anything is written.
        for table in d.tables.keys() {
            let why = eng
                .unwritable
                .get(table)
                .copied()
                .or_else(|| schema::is_internal(table).then_some("internal to SQLite or ferry"));
            if let Some(why) = why {
                return Err(Fail::Refused(format!(
                    "entries {}–{} of origin {} write table {table:?}, which is {why}; ferry never writes it \
                     (leave it out of capture on that computer: `ferry track --exclude {table}`)",
                    d.first_seq, d.last_seq, d.origin
                )));
            }
        }
    }
    let bundle_name = path.display().to_string();
    let mut verdicts = verdicts.into_iter();
    while let Some(member) = reader.next_segment().map_err(refuse)? {
        let d = member.descriptor().clone();
        match verdicts.next() {
            // Encrypted to other nodes, passed on by the relay: not this node's to read.
            Some(Ok(_)) if !d.is_readable() => {
                crate::verify::read_through(member, progress).map_err(refuse)?;
                segments.push(SegmentApply {
                    carried_unread: Some(crate::verify::recipients_text(&d, trust)),
                    ..SegmentApply::not_applied(&d)
                });
            }
            Some(Err(why)) => {
                // Read through it (every byte is still checked), apply nothing.
                crate::verify::read_through(member, progress).map_err(refuse)?;
                segments.push(SegmentApply { refused: Some(error_chain(&why)), ..SegmentApply::not_applied(&d) });
            }
            _ => segments.push(apply_segment(eng, member, &bundle_name, progress)?),
        }
    }
    reader.finish().map_err(refuse)?;
    Ok(())
}

impl SegmentApply {
    /// A part of a bundle read through without applying anything of it
    /// (the caller says why).
    fn not_applied(d: &crate::bundle::format::SegmentDescriptor) -> SegmentApply {
        SegmentApply {
            origin: d.origin.to_string(),
            origin_name: None,
            first_seq: d.first_seq,
            last_seq: d.last_seq,
            counts: Counts::default(),
            fork: None,
            refused: None,
            refused_before: None,
            carried_unread: None,
        }
    }
}

fn apply_segment<R: std::io::Read + Send>(
    eng: &mut Engine,
    member: SegmentMember<'_, R>,
    bundle: &str,
    progress: &mut dyn Progress,
) -> Result<SegmentApply, Fail> {
    let d = member.descriptor().clone();
    // Seqs start at 1; a descriptor claiming 0 fails verification below,
    // and must not underflow on the way there.
    let before_first = d.first_seq.saturating_sub(1);
    let conn = eng.conn;
    let origin = d.origin.as_str().to_owned();
    let oid = eng.origin_id(&origin)?;
    let counts_before = eng.counts;
    eng.counts = Counts::default();
    let applied = ledger::ranges(conn, oid)?;
    let mut hashes = Hashes::new(conn, oid);
    let chain_before = d.chain_before().unwrap_or_default();
    let mut fork: Option<ForkReport> = None;
    // The last seq known to be the same in this segment and what was
    // applied: a fork lies after it.
    let mut last_match = 0u64;
    let fork_at = |seq: u64, known: [u8; ledger::hashes::PREFIX], new: &ChainHash, last_match: u64| ForkReport {
        origin: origin.clone(),
        seq,
        known_hash: hex::encode(known),
        new_hash: hex::encode(ledger::hashes::prefix(new)),
        segment: d.member_name(),
        reissue_from: last_match + 1,
    };
    if before_first > 0 {
        match hashes.get(before_first)? {
            Some(known) if known != ledger::hashes::prefix(&chain_before) => {
                fork = Some(fork_at(before_first, known, &chain_before, 0));
            }
            Some(_) => last_match = before_first,
            None => {}
        }
    }
    // A fork shows once a chain hash differs from a known one. Only when
    // one is known inside the segment's range can that happen after entries
    // were applied, and only then does the segment need its own savepoint
    // (pages written under a savepoint are copied to its journal first).
    // A segment of an origin whose id block this target has not seen yet
    // may turn out to share another origin's block: it is refused alone,
    // so it needs its own savepoint too.
    let guarded = fork.is_none() && (Hashes::any_known(conn, oid, d.first_seq, d.last_seq)? || !eng.has_block(oid));
    if guarded {
        eng.savepoint("ferry_segment")?;
    }
    let mut chain = chain_before;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut stop: Option<Fail> = None;
    let mut n = 0u64;
    // The checking thread computes the chain; apply keeps it for fork checks.
    let verified = check_entries_chained(member, progress, |entry, line, after| {
        chain = *after;
        let seq = entry.seq;
        let mut step = || -> Result<(), Fail> {
            if fork.is_some() {
                return Ok(());
            }
            match hashes.get(seq)? {
                Some(known) if known != ledger::hashes::prefix(&chain) => {
                    fork = Some(fork_at(seq, known, &chain, last_match));
                    hashes.discard();
                    eng.rollback_to("ferry_segment")?;
                    return Ok(());
                }
                Some(_) => last_match = seq,
                None => {}
            }
            let i = applied.partition_point(|r| r.1 < seq);
            if applied.get(i).is_some_and(|r| r.0 <= seq) {
                eng.skipped(oid, 1);
                return Ok(());
            }
            eng.apply(oid, entry, line)?;
            hashes.set(seq, &chain)?;
            match runs.last_mut() {
                Some(run) if run.1 + 1 == seq => run.1 = seq,
                _ => runs.push((seq, seq)),
            }
            n += 1;
            if n.is_multiple_of(512) {
                crashpoint::hit("apply: entry batch");
            }
            Ok(())
        };
        match step() {
            Ok(()) => Ok(()),
            Err(f) => {
                stop = Some(match f {
                    Fail::Db(e) if !engine::is_fatal(&e) => Fail::Refused(format!(
                        "origin {origin} seq {seq} (table {:?}): the target database refused it: {}",
                        entry.table,
                        error_chain(&e)
                    )),
                    f => f,
                });
                Err(VerifyError::Custody("apply stopped".into()))
            }
        }
    });
    let refused = match stop {
        Some(Fail::Segment(why)) if guarded => {
            // Refused on its own: nothing of it stays, the bundle goes on.
            hashes.discard();
            eng.rollback_to("ferry_segment")?;
            eng.release("ferry_segment")?;
            Some(why)
        }
        Some(Fail::Segment(why)) => return Err(Fail::Refused(why)),
        Some(f) => return Err(f),
        None => None,
    };
    if refused.is_some() {
        // The rest of the segment's bytes are still checked.
        let _ = verified;
        eng.counts = counts_before;
        return Ok(SegmentApply {
            origin,
            origin_name: None,
            first_seq: d.first_seq,
            last_seq: d.last_seq,
            counts: Counts::default(),
            fork: None,
            refused,
            refused_before: None,
            carried_unread: None,
        });
    }
    verified.map_err(refuse)?;
    let mut counts = eng.counts;
    if let Some(f) = &fork {
        if guarded {
            eng.rollback_to("ferry_segment")?;
            eng.release("ferry_segment")?;
        }
        eng.counts = Counts::default();
        eng.forked(oid, d.count);
        counts = eng.counts;
        conn.execute(
            "INSERT INTO _ferry_forks (origin, seq, known_hash, new_hash, segment, bundle, recorded_at, entries)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![
                f.origin,
                f.seq as i64,
                f.known_hash,
                f.new_hash,
                f.segment,
                bundle,
                crate::journal::Timestamp::now().to_rfc3339(),
                d.count as i64
            ],
        )?;
    } else {
        for (a, b) in &runs {
            ledger::add_range(conn, oid, *a, *b)?;
        }
        if before_first > 0 {
            hashes.set(before_first, &chain_before)?;
        }
        hashes.flush()?;
        let sql = conn.dialect().pick(
            "UPDATE _ferry_origins SET last_ts = max(coalesce(last_ts, ?2), ?2), last_apply = ?3 WHERE id = ?1",
            "UPDATE _ferry_origins SET last_ts = greatest(coalesce(last_ts, ?2), ?2), last_apply = ?3 WHERE id = ?1",
            "UPDATE _ferry_origins SET last_ts = greatest(coalesce(last_ts, ?2), ?2), last_apply = ?3 WHERE id = ?1",
        );
        conn.execute(sql, args![oid, d.ts_max.0, crate::journal::Timestamp::now().to_rfc3339()])?;
        crashpoint::hit("apply: segment done");
        if guarded {
            eng.release("ferry_segment")?;
        }
    }
    eng.counts = counts_before;
    eng.counts.add(&counts);
    Ok(SegmentApply {
        origin,
        origin_name: None,
        first_seq: d.first_seq,
        last_seq: d.last_seq,
        counts,
        fork,
        refused: None,
        refused_before: None,
        carried_unread: None,
    })
}

/// What `bundle verify --against` knows of a target: its tables, their
/// columns (with their types on a server) and the tables ferry never writes.
pub struct TargetShape {
    tables: std::collections::HashMap<String, ShapeTable>,
    unwritable: std::collections::HashMap<String, &'static str>,
}

struct ShapeTable {
    columns: Vec<(String, Option<types::ColumnType>)>,
    /// Keyed by SQLite's `rowid` (no declared key).
    rowid_key: bool,
    key: Vec<String>,
}

impl TargetShape {
    /// A SQLite target's tables (types are SQLite's to judge: any value fits).
    pub fn sqlite(conn: &Connection) -> rusqlite::Result<TargetShape> {
        let tables = engine::load_tables(conn)?
            .into_iter()
            .map(|(name, t)| {
                let shape = ShapeTable {
                    columns: t.columns.iter().map(|c| (c.clone(), None)).collect(),
                    rowid_key: t.key == ["rowid"],
                    key: t.key.clone(),
                };
                (name, shape)
            })
            .collect();
        Ok(TargetShape { tables, unwritable: schema::unwritable_tables(conn)? })
    }

    /// A server target's tables, with their column types.
    pub fn server(tables: std::collections::HashMap<String, server::ServerTable>) -> TargetShape {
        let tables = tables
            .into_iter()
            .map(|(name, t)| {
                let columns = t.columns.into_iter().map(|(c, ty)| (c, Some(ty))).collect();
                (name, ShapeTable { columns, rowid_key: false, key: t.key })
            })
            .collect();
        TargetShape { tables, unwritable: Default::default() }
    }
}

/// Will these bundles apply to the target `shape` describes? For each
/// bundle, every problem found: verification, unknown tables or columns,
/// and on a server, values its columns cannot hold (see [`types::fits`]).
/// Reads everything, writes nothing. Encrypted parts are opened with
/// `keyring`; a part encrypted to other nodes is a problem here (this
/// target's node would refuse it), named with its recipients.
pub fn check_against(
    path: &Path,
    trust: &TrustStore,
    keyring: &crate::crypt::Keyring,
    shape: &TargetShape,
    progress: &mut dyn Progress,
) -> Vec<String> {
    let mut problems = Vec::new();
    let tables = &shape.tables;
    let unwritable = &shape.unwritable;
    // (table, column) → (index of its problem, values like it after the first).
    let mut misfits: std::collections::HashMap<(String, String), (usize, u64)> = Default::default();
    let result = (|| -> Result<(), VerifyError> {
        let mut reader = BundleReader::open(path)?;
        let mut verdicts = check_signatures_each(&reader, trust)?;
        crate::verify::open_encrypted(&mut reader, path, keyring)?;
        crate::verify::refuse_closed(&reader, trust, &mut verdicts);
        if let Some(e) = verdicts.into_iter().find_map(Result::err) {
            return Err(e);
        }
        // A different schema fingerprint alone is no problem (the target may
        // have more columns): what matters is whether every entry fits,
        // which the checks below say table by table and column by column.
        while let Some(member) = reader.next_segment()? {
            let id = member.descriptor().origin.clone();
            let origin = trust.keys.iter().find(|k| k.node == id).map_or_else(|| id.to_string(), |k| k.name.clone());
            let mut seen = std::collections::BTreeSet::new();
            check_entries(member, progress, |e, _| {
                let Some(t) = tables.get(&e.table) else {
                    if seen.insert((e.table.clone(), String::new())) {
                        let why = match unwritable.get(&e.table) {
                            Some(why) => format!("is {why}; ferry never writes it"),
                            None => "does not exist in the target".into(),
                        };
                        problems.push(format!(
                            "{origin}'s entry {}: table {:?} {why} (its entries would wait in quarantine until the \
                             target is migrated, then `--retry-quarantined`)",
                            e.seq, e.table
                        ));
                    }
                    return Ok(());
                };
                let values = e.pk.0.iter().chain(e.fields.iter().flat_map(|f| f.0.iter()));
                for (c, v) in values {
                    let column = t.columns.iter().find(|x| x.0 == *c);
                    let known = column.is_some() || (c == "rowid" && t.rowid_key);
                    if !known && seen.insert((e.table.clone(), c.to_owned())) {
                        problems.push(format!(
                            "{origin}'s entry {}: table {:?} has no column {c:?} in the target (its entries would \
                             wait in quarantine until the target is migrated, then `--retry-quarantined`)",
                            e.seq, e.table
                        ));
                    }
                    let Some((_, Some(ty))) = column else { continue };
                    let Err(types::Misfit(why)) = types::fits(v, ty) else { continue };
                    let slot = (e.table.clone(), c.clone());
                    if let Some((_, more)) = misfits.get_mut(&slot) {
                        *more += 1;
                        continue;
                    }
                    let mut text = format!(
                        "{origin}'s entry {} (origin {id}, seq {}): table {:?} column {c:?}: {why}; the bundle would \
                         be refused there",
                        e.seq, e.seq, e.table
                    );
                    let is_key = t.key.iter().any(|k| k == c);
                    if let (true, Some(max), crate::value::Value::Integer(i)) = (is_key, ty.max_int(), v) {
                        if max < i128::from(u32::MAX) && *i > (1 << 32) - 1 {
                            text.push_str(&format!(
                                ". The id lies in id block {} (ids from block × 2^32), but this server's {:?}.{c} \
                                 is a 32-bit integer (Django's AutoField): make \
                                 it 64-bit on the server and on every laptop, best before field work starts \
                                 (Django: DEFAULT_AUTO_FIELD = \"django.db.models.BigAutoField\", or a \
                                 BigAutoField id on the model; then makemigrations, and migrate everywhere)",
                                i >> 32,
                                e.table
                            ));
                        }
                    }
                    misfits.insert(slot, (problems.len(), 0));
                    problems.push(text);
                }
                Ok(())
            })?;
        }
        reader.finish()?;
        Ok(())
    })();
    for (i, more) in misfits.into_values() {
        if more > 0 {
            problems[i].push_str(&format!(" (and {more} more values of this column like it)"));
        }
    }
    if let Err(e) = result {
        problems.insert(0, error_chain(&e));
    }
    problems
}
