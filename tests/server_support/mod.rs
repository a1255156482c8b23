//! Test databases on the real PostgreSQL and MariaDB servers (from
//! `scripts/setup-test-deps`): each made fresh and dropped with its guard.
//! A server that does not answer fails the test with instructions.
#![allow(dead_code)]

/// The servers, overridable for a machine whose servers live elsewhere.
pub fn pg_admin() -> String {
    std::env::var("FERRY_TEST_PG").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

pub fn my_admin() -> String {
    std::env::var("FERRY_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into())
}

pub const UNREACHABLE: &str =
    "is not reachable: run `scripts/setup-test-deps` (it starts throwaway local servers when \
                           none answer), or point FERRY_TEST_PG / FERRY_TEST_MYSQL at one";

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), fastrand::u32(..))
}

/// A fresh PostgreSQL database made by `ddl`; dropped when the guard goes.
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    pub fn new(ddl: &str) -> PgDb {
        let mut admin = postgres::Client::connect(&pg_admin(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("PostgreSQL at {} {UNREACHABLE} ({e})", pg_admin()));
        let name = unique("ferry_test");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        let mut c = postgres::Client::connect(&with_db(&pg_admin(), &name), postgres::NoTls)
            .expect("connect to the new database");
        c.batch_execute(ddl).expect("ddl");
        PgDb { name }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&pg_admin(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

pub struct MyDb {
    pub name: String,
}

impl MyDb {
    pub fn new(ddl: &str) -> MyDb {
        use mysql::prelude::Queryable;
        let mut admin = mysql::Conn::new(mysql::Opts::from_url(&my_admin()).expect("FERRY_TEST_MYSQL is a URL"))
            .unwrap_or_else(|e| panic!("MariaDB/MySQL at {} {UNREACHABLE} ({e})", my_admin()));
        let name = unique("ferry_test");
        admin.query_drop(format!("CREATE DATABASE {name}")).expect("create database");
        admin.query_drop(format!("USE {name}")).expect("use");
        for stmt in ddl.split(';').filter(|s| !s.trim().is_empty()) {
            admin.query_drop(stmt).expect("ddl");
        }
        MyDb { name }
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        use mysql::prelude::Queryable;
        if let Ok(mut admin) =
            mysql::Opts::from_url(&my_admin()).map_err(|_| ()).and_then(|o| mysql::Conn::new(o).map_err(|_| ()))
        {
            let _ = admin.query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}

/// `url` naming database `name` instead.
pub fn with_db(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{name}")
}

/// The URL of database `name` on the test server; on the default server
/// (trust auth) with a password it does not need and that must never show.
pub fn pg_url(name: &str) -> String {
    match std::env::var("FERRY_TEST_PG") {
        Ok(u) => with_db(&u, name),
        Err(_) => format!("postgresql://postgres:Sekr1tPw@127.0.0.1:5432/{name}"),
    }
}

pub fn my_url(name: &str) -> String {
    with_db(&my_admin(), name)
}
