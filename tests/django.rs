//! Capture of a real Django app: `fixtures/django/` is migrated, tracked, and
//! driven through its ORM by `drive.py`; the bundled journal must hold
//! exactly `fixtures/django/expected_entries.jsonl` (timestamps aside).
//!
//! Needs Python with Django: `FERRY_PYTHON` (a virtualenv's python), else
//! the repository's `.venv` (made by `scripts/setup-test-deps`), else
//! `python3`. Fails, never skips, when Django is missing.

mod common;
mod server_support;

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_HINT: &str = "install it with:\n  scripts/setup-test-deps\nor by hand:\n  python3 -m venv .venv && .venv/bin/pip install -r fixtures/django/requirements.txt\n(the tests find .venv by themselves; another Python can be given with FERRY_PYTHON=path/to/python)";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/django")
}

fn python() -> String {
    if let Ok(p) = std::env::var("FERRY_PYTHON") {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(if cfg!(windows) {
        ".venv/Scripts/python.exe"
    } else {
        ".venv/bin/python"
    });
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".into()
}

/// Runs `python ARGS` in the fixture with the app database at `db`.
fn run_python(db: &Path, args: &[&str]) {
    run_python_on(db, None, args)
}

/// Runs `python ARGS` in the fixture with the app database at `db`, or on
/// the server `server` (a URL).
fn run_python_on(db: &Path, server: Option<&str>, args: &[&str]) {
    let py = python();
    let mut cmd = Command::new(&py);
    if let Some(url) = server {
        cmd.env("FERRY_DJANGO_SERVER", url);
    }
    let out = cmd
        .args(args)
        .current_dir(fixture_dir())
        .env("FERRY_DJANGO_DB", db)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run Python ({py}): {e}\nThis test needs Python with Django; {INSTALL_HINT}")
        });
    assert!(
        out.status.success(),
        "`{py} {}` failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_django() {
    let py = python();
    let ok = Command::new(&py).args(["-c", "import django"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "this test needs Django, which `{py}` cannot import; {INSTALL_HINT}");
}

fn without_ts(line: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(line).expect("entry json");
    v.as_object_mut().expect("object").remove("ts");
    v
}

#[test]
fn django_orm_writes_are_captured_exactly() {
    require_django();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.sqlite3");
    run_python(&db, &["manage.py", "migrate", "--noinput", "-v", "0"]);
    let home = common::init_node(dir.path(), "field-1", Some(5));
    common::ferry(&home).arg("track").arg(&db).assert().success();
    let started = ferry::journal::Timestamp::now();
    run_python(&db, &["drive.py"]);
    let ended = ferry::journal::Timestamp::now();

    let out = dir.path().join("out");
    let bundle = common::create_bundle_db(&home, &db, &out).expect("a bundle");
    let file = bundle.to_str().expect("utf-8 path");
    common::ferry(&home).args(["bundle", "verify", file]).assert().success();
    let o = common::ferry(&home).args(["bundle", "inspect", "--entries", file]).output().expect("run");
    assert!(o.status.success());

    let got: Vec<&[u8]> = o.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let expected = std::fs::read(fixture_dir().join("expected_entries.jsonl")).expect("expected entries");
    let expected: Vec<serde_json::Value> =
        expected.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(without_ts).collect();
    let got_values: Vec<serde_json::Value> = got.iter().map(|l| without_ts(l)).collect();
    for (i, (g, e)) in got_values.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "entry {} differs", i + 1);
    }
    assert_eq!(got_values.len(), expected.len(), "got {got_values:#?}");
    for l in got {
        let e = ferry::journal::Entry::parse(l).expect("valid entry");
        // Millisecond clock: allow the truncation at the start.
        assert!(e.ts.0 >= started.0 - 1000 && e.ts <= ended, "ts {} outside the run", e.ts);
    }
}

#[test]
fn django_migration_makes_capture_stale_until_tracked_again() {
    require_django();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.sqlite3");
    run_python(&db, &["manage.py", "migrate", "survey", "0001", "--noinput", "-v", "0"]);
    let home = common::init_node(dir.path(), "field-1", Some(5));
    common::ferry(&home).arg("track").arg(&db).assert().success();
    common::ferry(&home).args(["track", "--status"]).arg(&db).assert().success();

    // Migration 0002 adds survey_household.phone.
    run_python(&db, &["manage.py", "migrate", "--noinput", "-v", "0"]);
    let o = common::ferry(&home).args(["track", "--status"]).arg(&db).output().expect("run");
    assert_eq!(o.status.code(), Some(1), "stale capture is a negative status");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("columns added: phone"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let out = dir.path().join("out");
    let o =
        common::ferry(&home).args(["bundle", "create", "--db"]).arg(&db).arg("--out").arg(&out).output().expect("run");
    assert!(o.status.success(), "bundling refreshes out-of-date capture itself: {o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("was out of date"), "{}", String::from_utf8_lossy(&o.stderr));

    common::ferry(&home).arg("track").arg(&db).assert().success();
    common::ferry(&home).args(["track", "--status"]).arg(&db).assert().success();
    let script = "from survey.models import Household, Village\n\
                  v = Village.objects.create(name='Kanyadet')\n\
                  h = Household.objects.create(id='00000000-0000-4000-8000-000000000003', village=v, name='Akinyi')\n\
                  h.phone = '+254 700 000000'\n\
                  h.save()\n";
    run_python(&db, &["manage.py", "shell", "-v", "0", "-c", script]);
    let bundle = common::create_bundle_db(&home, &db, &out).expect("a bundle");
    let file = bundle.to_str().expect("utf-8 path");
    let o = common::ferry(&home).args(["bundle", "inspect", "--entries", file]).output().expect("run");
    let last = o.stdout.split(|b| *b == b'\n').rev().find(|l| !l.is_empty()).expect("entries");
    assert_eq!(
        without_ts(last),
        serde_json::json!({"seq":3,"op":"update","table":"survey_household",
            "pk":{"id":"00000000000040008000000000000003"},"fields":{"phone":"+254 700 000000"}})
    );
}

/// Every app table's rows (not ferry's, not Django's bookkeeping), by key.
fn survey_rows(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).expect("db");
    let mut out = Vec::new();
    for t in ferry::schema::tables(&c).expect("tables").into_iter().filter(|t| t.name.starts_with("survey_")) {
        let cols: Vec<String> = t.columns.iter().map(|c| ferry::schema::quote(&c.name)).collect();
        let mut st = c
            .prepare(&format!("SELECT {} FROM {} ORDER BY 1, 2", cols.join(", "), ferry::schema::quote(&t.name)))
            .expect("select");
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("rows");
        for r in rows {
            out.push(format!("{}: {}", t.name, r.expect("row").join("|")));
        }
    }
    out
}

/// A laptop that entered data before tracking, and went on entering data
/// after a migration that rebuilt a table and before anyone ran `ferry
/// track`: with `--include-existing` and the refresh, the central server
/// ends up with every row the laptop has.
#[test]
fn django_data_from_before_tracking_and_across_a_rebuilding_migration_reaches_central() {
    require_django();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.sqlite3");
    let shell = |script: &str| run_python(&db, &["manage.py", "shell", "-v", "0", "-c", script]);
    run_python(&db, &["manage.py", "migrate", "survey", "0002", "--noinput", "-v", "0"]);
    shell(
        "from survey.models import Household, Village\n\
         v = Village.objects.create(name='Kanyadet')\n\
         Household.objects.create(id='00000000-0000-4000-8000-000000000001', village=v, name='Achieng')\n",
    );
    let home = common::init_node(dir.path(), "field-1", Some(5));
    let o = common::ferry(&home).arg("track").arg(&db).output().expect("run");
    assert!(o.status.success());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("survey_village: 1 row from before tracking") && said.contains("--include-existing"),
        "{said}"
    );
    common::ferry(&home).args(["track", "--include-existing"]).arg(&db).assert().success();
    shell(
        "from survey.models import Household, Village\n\
         Household.objects.create(id='00000000-0000-4000-8000-000000000002', village=Village.objects.get(), name='Kamau')\n",
    );
    // Migration 0003 rebuilds survey_household; the app goes on before `ferry track`.
    run_python(&db, &["manage.py", "migrate", "--noinput", "-v", "0"]);
    shell(
        "from survey.models import Household, Village\n\
         Household.objects.filter(name='Kamau').update(members=4, phone='+254 711 000000')\n\
         Household.objects.create(id='00000000-0000-4000-8000-000000000003', village=Village.objects.get(), name='Wanjiru Atieno Odhiambo-Otieno Achieng')\n",
    );
    // `ferry track` was forgotten: bundling refreshes capture itself and
    // finds the writes made since the migration.
    let out = dir.path().join("out");
    let o =
        common::ferry(&home).args(["bundle", "create", "--db"]).arg(&db).arg("--out").arg(&out).output().expect("run");
    assert!(o.status.success(), "{o:?}");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("survey_household") && said.contains("1 inserted, 1 changed"), "{said}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("was out of date"));

    let central = dir.path().join("central.sqlite3");
    run_python(&central, &["manage.py", "migrate", "--noinput", "-v", "0"]);
    let home_c = common::init_node(dir.path(), "central", None);
    common::trust(&home_c, &home, "field-1", &["origin"]);
    common::ferry(&home_c).args(["bundle", "apply", "--db"]).arg(&central).arg(&out).assert().success();
    assert_eq!(survey_rows(&central), survey_rows(&db), "central has every row the laptop has");
    let village_id: i64 = rusqlite::Connection::open(&db)
        .expect("db")
        .query_row("SELECT id FROM survey_village", [], |r| r.get(0))
        .expect("id");
    assert_eq!(village_id >> 32, 5, "the village entered before tracking got an id in the laptop's block");
}

/// The central server's app on PostgreSQL and on MariaDB, its schema made
/// by Django's own migrations there: `verify --against` reads Django's
/// column types as the type mapping expects them, and every value the
/// laptop's Django wrote on SQLite fits them (no false alarm).
#[test]
fn django_central_on_postgres_and_mariadb_takes_every_laptop_value() {
    use ferry::apply::types::ColumnType;
    require_django();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.sqlite3");
    run_python(&db, &["manage.py", "migrate", "--noinput", "-v", "0"]);
    let home = common::init_node(dir.path(), "field-1", Some(5));
    common::ferry(&home).arg("track").arg(&db).assert().success();
    run_python(&db, &["drive.py"]);
    let out = dir.path().join("out");
    let bundle = common::create_bundle_db(&home, &db, &out).expect("a bundle");
    let home_c = common::init_node(dir.path(), "central", None);
    common::trust(&home_c, &home, "field-1", &["origin"]);

    let pg = server_support::PgDb::new("");
    let my = server_support::MyDb::new("");
    for url in [server_support::pg_url(&pg.name), server_support::my_url(&my.name)] {
        run_python_on(&db, Some(&url), &["manage.py", "migrate", "--noinput", "-v", "0"]);
        let Ok(ferry::target::Target::Server(server)) = ferry::target::Target::parse(std::ffi::OsStr::new(&url)) else {
            panic!("{url} names a server")
        };
        let tables = ferry::apply::server::connect(&server).expect("connect").tables(&server).expect("tables");
        let col = |t: &str, c: &str| tables[t].column(c).cloned().unwrap_or_else(|| panic!("{t}.{c} on {url}"));
        assert_eq!(col("survey_household", "id"), ColumnType::Uuid, "{url}");
        assert_eq!(col("survey_household", "income"), ColumnType::Decimal { precision: Some(10), scale: Some(2) });
        assert_eq!(col("survey_household", "visited"), ColumnType::Timestamp, "{url}");
        assert_eq!(col("survey_household", "data"), ColumnType::Json, "{url}");
        assert_eq!(col("survey_household", "members").max_int(), Some(i128::from(i32::MAX)), "{url}");
        assert_eq!(col("survey_village", "id").max_int(), Some(i128::from(i64::MAX)), "{url}");
        assert!(matches!(col("survey_specimen", "weight_g"), ColumnType::Float { double: true, .. }), "{url}");
        assert_eq!(tables["survey_household"].key, ["id"], "{url}");

        let o =
            common::ferry(&home_c).args(["bundle", "verify", "--against", &url]).arg(&bundle).output().expect("run");
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(0), "{url}: {said}");
        assert!(said.contains("ok ") && !said.contains("Sekr1tPw"), "{said}");
    }
}
