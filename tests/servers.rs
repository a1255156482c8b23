//! `bundle verify --against` a real PostgreSQL and a real MariaDB server:
//! tables and column types are read from the server, values that its
//! columns cannot hold exactly are named (origin, seq, table, column,
//! value), 64-bit ids against 32-bit keys are caught before field work
//! starts, and the password never shows. The servers come from
//! `scripts/setup-test-deps` (127.0.0.1:5432 user postgres, 127.0.0.1:3306
//! user root); these tests fail, with instructions, when one does not
//! answer. Each test makes its own database and drops it.

mod apply_support;
mod common;
mod server_support;

use apply_support::*;
use ferry::journal::Op;
use ferry::value::Value;
use server_support::*;

/// Django's models on each server: an AutoField id, a DecimalField(5, 2),
/// a UUIDField, a DateTimeField, a BooleanField, a CharField(10), a
/// JSONField, a BinaryField and a FloatField.
const PG_DDL: &str = "CREATE TABLE survey_household (
    id integer PRIMARY KEY, name varchar(10) NOT NULL, score numeric(5, 2), uid uuid, seen timestamptz,
    visited boolean, doc jsonb, raw bytea, ratio double precision)";
const MY_DDL: &str = "CREATE TABLE survey_household (
    id int PRIMARY KEY, name varchar(10) NOT NULL, score decimal(5, 2), uid uuid, seen datetime(6),
    visited tinyint(1), doc longtext CHECK (json_valid(doc)), raw longblob, ratio double precision)";

struct Field {
    dir: tempfile::TempDir,
    home: std::path::PathBuf,
    laptop: Origin,
}

fn field() -> Field {
    let dir = tempfile::tempdir().expect("tmp");
    let laptop = Origin::new(dir.path(), "field-1");
    let home = common::init_node(dir.path(), "central", None);
    common::trust(&home, &dir.path().join("field-1"), "field-1", &["origin"]);
    Field { dir, home, laptop }
}

fn household(o: &mut Origin, id: i64, fields: &[(&str, Value)]) -> u64 {
    o.push(1_700_000_000_000_000 + id, Op::Insert, "survey_household", id_row(id), Some(row(fields)))
}

/// Values as Django writes them on a laptop's SQLite.
fn good(id: i64) -> Vec<(&'static str, Value)> {
    vec![
        ("name", text("Ama")),
        ("score", Value::Real(123.45)),
        ("uid", text("0123456789abcdef0123456789abcdef")),
        ("seen", text("2026-11-30 10:11:12.123456")),
        ("visited", Value::Integer(id % 2)),
        ("doc", text("{\"rooms\": [1, 2]}")),
        ("raw", Value::Blob(vec![0, 159, 255])),
        ("ratio", Value::Real(0.1)),
    ]
}

fn verify(f: &Field, url: &str, bundle: &std::path::Path) -> (i32, String) {
    let o = common::ferry(&f.home).args(["bundle", "verify", "--against", url]).arg(bundle).output().expect("run");
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!all.contains("Sekr1tPw"), "the password shows: {all}");
    (o.status.code().unwrap_or(-1), all)
}

fn fitting_and_misfitting(url: &str) {
    let mut f = field();
    household(&mut f.laptop, 1, &good(1));
    household(&mut f.laptop, 2, &good(2));
    let ok = f.laptop.bundle(f.dir.path(), &[(1, 2)], None);
    let (code, out) = verify(&f, url, &ok);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok ") && out.contains("applies to"), "{out}");

    let mut f = field();
    let mut bad = good(3);
    bad[0] = ("name", text("far too long a name"));
    bad[1] = ("score", Value::Real(1.005));
    bad[2] = ("uid", text("not-a-uuid"));
    household(&mut f.laptop, 3, &bad);
    household(&mut f.laptop, 4, &[("visited", Value::Integer(2)), ("name", text("x"))]);
    household(&mut f.laptop, 5, &[("seen", text("yesterday")), ("name", text("x"))]);
    household(&mut f.laptop, (1 << 32) + 5, &good(5));
    household(&mut f.laptop, 6, &[("nosuch", text("x"))]);
    let b = f.laptop.bundle(f.dir.path(), &[(1, 5)], None);
    let (code, out) = verify(&f, url, &b);
    assert_eq!(code, 1, "{out}");
    for want in [
        "field-1's entry 1 (origin ",
        "table \"survey_household\" column \"name\": the value \"far too long a name\" is 19 characters long; the \
         column keeps 10",
        "column \"score\": the value 1.005 has 3 decimal places; the column keeps 2",
        "column \"uid\": the value \"not-a-uuid\" is not a UUID",
        "entry 2 (origin",
        "column \"visited\": the value 2 is not a boolean",
        "column \"seen\": the value \"yesterday\" is not a date and time",
        "column \"id\": the value 4294967301 is outside this integer column's range",
        "id block 1",
        "BigAutoField",
        "has no column \"nosuch\"",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn postgres_columns_judge_values_and_ids_before_anyone_travels() {
    let db = PgDb::new(PG_DDL);
    fitting_and_misfitting(&pg_url(&db.name));
}

#[test]
fn mariadb_columns_judge_values_and_ids_before_anyone_travels() {
    let db = MyDb::new(MY_DDL);
    fitting_and_misfitting(&my_url(&db.name));
}

#[test]
fn an_unreachable_server_or_wrong_database_is_named_without_the_password() {
    let f = field();
    let mut o = Origin::new(f.dir.path(), "x");
    household(&mut o, 1, &good(1));
    let b = o.bundle(f.dir.path(), &[(1, 1)], None);
    for url in [
        "postgresql://postgres:Sekr1tPw@127.0.0.1:1/central".to_owned(),
        pg_url("ferry_no_such_database"),
        "mysql://root:Sekr1tPw@127.0.0.1:1/central".to_owned(),
    ] {
        let (code, out) = verify(&f, &url, &b);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("failed to connect") && out.contains(":****@127.0.0.1:"), "{out}");
    }
}

/// `ferry track APP --central URL` catches, at setup, a laptop whose id
/// block numbers rows beyond the server's 32-bit keys (Django's AutoField),
/// names the table and the fix, and passes once the server's ids are 64-bit.
#[test]
fn track_with_central_catches_ids_too_large_for_32_bit_server_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = common::init_node(dir.path(), "field-1", Some(5));
    let app = dir.path().join("app.sqlite3");
    rusqlite::Connection::open(&app)
        .expect("open")
        .execute_batch(
            "CREATE TABLE survey_village (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
             CREATE TABLE survey_household (id CHAR(32) PRIMARY KEY, name TEXT);",
        )
        .expect("ddl");
    let small = PgDb::new(
        "CREATE TABLE survey_village (id integer PRIMARY KEY, name text);
         CREATE TABLE survey_household (id uuid PRIMARY KEY, name text);",
    );
    let o =
        common::ferry(&home).arg("track").arg(&app).args(["--central", &pg_url(&small.name)]).output().expect("run");
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(!all.contains("Sekr1tPw"), "{all}");
    assert!(
        all.contains("PROBLEM  table survey_village: this node numbers its new rows from 21474836480 (id block 5)")
            && all.contains("BigAutoField")
            && !all.contains("table survey_household:"),
        "{all}"
    );
    let big = MyDb::new(
        "CREATE TABLE survey_village (id bigint PRIMARY KEY, name text);
         CREATE TABLE survey_household (id uuid PRIMARY KEY, name text)",
    );
    let o = common::ferry(&home).arg("track").arg(&app).args(["--central", &my_url(&big.name)]).output().expect("run");
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{all}");
    assert!(all.contains("the ids this node gives out fit its tables"), "{all}");
}

fn ferry_out(home: &std::path::Path, args: &[&std::ffi::OsStr]) -> (i32, String) {
    let o = common::ferry(home).args(args).output().expect("run");
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!all.contains("Sekr1tPw"), "the password shows: {all}");
    (o.status.code().unwrap_or(-1), all)
}

fn apply_to(f: &Field, url: &str, bundle: &std::path::Path) -> (i32, String) {
    ferry_out(&f.home, &["bundle".as_ref(), "apply".as_ref(), "--db".as_ref(), url.as_ref(), bundle.as_os_str()])
}

fn pg(db: &PgDb) -> postgres::Client {
    postgres::Client::connect(&with_db(&pg_admin(), &db.name), postgres::NoTls).expect("connect")
}

/// Values captured on a laptop's SQLite land in PostgreSQL's typed columns
/// exactly as Django stores them there; a second apply of the same bundle
/// skips every entry; updates and deletes follow by last writer; a value a
/// column cannot hold refuses its bundle (origin, seq, table, column and
/// value named) and leaves nothing; the sequence is raised above the ids
/// applied; `status` and `conflicts` read the ledger in the server.
#[test]
fn postgres_apply_lands_typed_values_exactly_once() {
    let db = PgDb::new(&format!(
        "{};
        CREATE SEQUENCE survey_household_id_seq OWNED BY survey_household.id;
        ALTER TABLE survey_household ALTER COLUMN id SET DEFAULT nextval('survey_household_id_seq')",
        PG_DDL
    ));
    let url = pg_url(&db.name);
    let mut f = field();
    household(&mut f.laptop, 1, &good(1));
    household(&mut f.laptop, 2, &good(2));
    let first = f.laptop.bundle(f.dir.path(), &[(1, 2)], None);
    let (code, out) = apply_to(&f, &url, &first);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied ") && out.contains("2 applied"), "{out}");
    let mut c = pg(&db);
    let r = c
        .query_one(
            "SELECT name, score::text, uid::text, seen = '2026-11-30 10:11:12.123456+00', visited, doc::text, raw,
                    ratio, (SELECT count(*) FROM survey_household)
             FROM survey_household WHERE id = 1",
            &[],
        )
        .expect("row");
    assert_eq!(r.get::<_, String>(0), "Ama");
    assert_eq!(r.get::<_, String>(1), "123.45");
    assert_eq!(r.get::<_, String>(2), "01234567-89ab-cdef-0123-456789abcdef");
    assert!(r.get::<_, bool>(3), "the time is UTC to the microsecond");
    assert!(r.get::<_, bool>(4));
    assert_eq!(r.get::<_, String>(5), "{\"rooms\": [1, 2]}");
    assert_eq!(r.get::<_, Vec<u8>>(6), vec![0, 159, 255]);
    assert_eq!(r.get::<_, f64>(7).to_bits(), 0.1f64.to_bits());
    assert_eq!(r.get::<_, i64>(8), 2);
    let next: i64 = c.query_one("SELECT nextval('survey_household_id_seq')", &[]).expect("seq").get(0);
    assert!(next > 2, "the app's next id is above the ids applied: {next}");

    let (code, out) = apply_to(&f, &url, &first);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 applied, 2 already applied before"), "the same bundle again applies nothing: {out}");

    // An update from the laptop, and an older one from another origin that loses.
    f.laptop.push(
        1_700_000_000_000_100,
        Op::Update,
        "survey_household",
        id_row(1),
        Some(row(&[("name", text("Kofi"))])),
    );
    f.laptop.push(1_700_000_000_000_200, Op::Delete, "survey_household", id_row(2), None);
    let second = f.laptop.bundle(f.dir.path(), &[(3, 4)], None);
    let mut other = Origin::new(f.dir.path(), "field-2");
    common::trust(&f.home, &f.dir.path().join("field-2"), "field-2", &["origin"]);
    other.push(1_700_000_000_000_050, Op::Update, "survey_household", id_row(1), Some(row(&[("name", text("Old"))])));
    let late = other.bundle(f.dir.path(), &[(1, 1)], None);
    let (code, out) = apply_to(&f, &url, &second);
    assert_eq!(code, 0, "{out}");
    let (code, out) = apply_to(&f, &url, &late);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 superseded"), "{out}");
    let names: Vec<String> =
        c.query("SELECT name FROM survey_household ORDER BY id", &[]).expect("rows").iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["Kofi"]);

    let (code, out) = ferry_out(&f.home, &["conflicts".as_ref(), "--db".as_ref(), url.as_ref()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("survey_household") && out.contains("\"Old\""), "{out}");
    let (code, out) = ferry_out(&f.home, &["status".as_ref(), "--db".as_ref(), url.as_ref()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("field-1") && out.contains("field-2"), "{out}");

    // A value the column cannot hold refuses the bundle and leaves nothing.
    let mut bad = good(7);
    bad[1] = ("score", Value::Real(1.005));
    household(&mut f.laptop, 7, &[("name", text("Esi"))]);
    household(&mut f.laptop, 8, &bad);
    let third = f.laptop.bundle(f.dir.path(), &[(5, 6)], None);
    let (code, out) = apply_to(&f, &url, &third);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("REFUSED")
            && out.contains("field-1's entry 6 (origin ")
            && out.contains("table \"survey_household\" column \"score\": the value 1.005 has 3 decimal places"),
        "{out}"
    );
    let n: i64 = c.query_one("SELECT count(*) FROM survey_household", &[]).expect("count").get(0);
    assert_eq!(n, 1, "nothing of the refused bundle stayed");
}

/// Two applies to one PostgreSQL database never run at once: while one
/// holds the apply lock, another is refused with a clear message (exit 2)
/// and applies nothing.
#[test]
fn a_second_apply_to_the_same_postgres_database_waits_its_turn() {
    let db = PgDb::new(PG_DDL);
    let url = pg_url(&db.name);
    let mut f = field();
    household(&mut f.laptop, 1, &good(1));
    let b = f.laptop.bundle(f.dir.path(), &[(1, 1)], None);
    let mut holder = pg(&db);
    let mut tx = holder.transaction().expect("tx");
    tx.query_one("SELECT pg_advisory_xact_lock(439788663417)", &[]).expect("lock");
    let (code, out) = apply_to(&f, &url, &b);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("another `ferry bundle apply` is applying bundles to") && out.contains("nothing was applied"),
        "{out}"
    );
    tx.rollback().expect("release");
    let (code, out) = apply_to(&f, &url, &b);
    assert_eq!(code, 0, "once the other has finished, it applies: {out}");
}

/// MariaDB/MySQL are not applied to yet: `bundle apply`, `status` and
/// `conflicts` with such a URL say so (exit 2), change nothing and never
/// show the password.
#[test]
fn mariadb_apply_status_and_conflicts_are_refused_clearly() {
    let db = MyDb::new(MY_DDL);
    let url = my_url(&db.name);
    let mut f = field();
    household(&mut f.laptop, 1, &good(1));
    let b = f.laptop.bundle(f.dir.path(), &[(1, 1)], None);
    for args in [
        vec!["bundle".as_ref(), "apply".as_ref(), "--db".as_ref(), url.as_ref(), b.as_os_str()],
        vec!["status".as_ref(), "--db".as_ref(), url.as_ref()],
        vec!["conflicts".as_ref(), "--db".as_ref(), url.as_ref()],
    ] {
        let (code, out) = ferry_out(&f.home, &args);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains("ferry does not apply to MariaDB/MySQL servers yet")
                && out.contains("ferry bundle verify --against URL"),
            "{out}"
        );
    }
    use mysql::prelude::Queryable;
    let mut c = mysql::Conn::new(mysql::Opts::from_url(&my_url(&db.name)).expect("url")).expect("connect");
    let n: Option<i64> = c.query_first("SELECT count(*) FROM survey_household").expect("count");
    assert_eq!(n, Some(0), "nothing was applied");
}
