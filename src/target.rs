//! Where `--db` points: a SQLite file, or a PostgreSQL or MariaDB/MySQL
//! server named by a URL (`postgres://`, `postgresql://`, `mysql://`,
//! `mariadb://`), with the password found where that engine's own clients
//! look for it (see `docs/APPLY.md`, "Engines").
//!
//! A password is never shown: [`Server`]'s `Display` and `Debug` print the
//! URL without it, and every message names a target through them. Its
//! value is only handed to the client crate when connecting
//! ([`Server::password`]).

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// A `--db` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A database on a PostgreSQL or MariaDB/MySQL server.
    Server(Server),
}

/// The server engines ferry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Postgres,
    /// MariaDB or MySQL (one protocol; the differences are asked of the server).
    Mysql,
}

impl Kind {
    /// The engine's name for people.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "PostgreSQL",
            Kind::Mysql => "MariaDB/MySQL",
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Kind::Postgres => "postgresql",
            Kind::Mysql => "mysql",
        }
    }

    /// The engine's usual port.
    pub fn default_port(self) -> u16 {
        match self {
            Kind::Postgres => 5432,
            Kind::Mysql => 3306,
        }
    }
}

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or address, over TCP.
    Tcp(String),
    /// A Unix socket: for PostgreSQL the folder holding `.s.PGSQL.PORT`,
    /// for MariaDB/MySQL the socket file itself.
    Socket(PathBuf),
}

/// Where a password was found (shown in messages instead of the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// In the URL itself.
    Url,
    /// In an environment variable (`PGPASSWORD`, `MYSQL_PWD`).
    Env(&'static str),
    /// In a password or option file (`~/.pgpass`, `~/.my.cnf`).
    File(PathBuf),
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::Url => write!(f, "the URL"),
            PasswordSource::Env(v) => write!(f, "${v}"),
            PasswordSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A password, printed as `****` whatever asks (`Debug` included).
#[derive(Clone, PartialEq, Eq)]
pub struct Password {
    secret: String,
    pub source: PasswordSource,
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Password(****, from {})", self.source)
    }
}

/// A database on a server, from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub kind: Kind,
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub database: String,
    /// Found in the URL, the environment or the engine's password files;
    /// `None`: the server is asked without one (trust or socket peer auth).
    pub password: Option<Password>,
}

/// A `--db` value that names a server but cannot be read. Its message never
/// holds the password.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the database URL {shown}: {why}")]
pub struct TargetError {
    /// The URL with any password replaced by `****`.
    pub shown: String,
    pub why: String,
}

/// Where the environment is read: the process's own, or a test's.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    /// The user's home folder.
    fn home(&self) -> Option<PathBuf>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        dirs::home_dir()
    }
}

impl Target {
    /// Reads a `--db` argument: a URL of a known scheme names a server,
    /// anything else is a SQLite file's path (so `C:\data\app.sqlite3` and
    /// paths that are not UTF-8 stay paths).
    pub fn parse(arg: &OsStr) -> Result<Target, TargetError> {
        Target::parse_with(arg, &ProcessEnv)
    }

    /// [`Target::parse`] with the environment given.
    pub fn parse_with(arg: &OsStr, env: &dyn Env) -> Result<Target, TargetError> {
        let Some(text) = arg.to_str() else { return Ok(Target::Sqlite(PathBuf::from(arg))) };
        match scheme_of(text) {
            Some((kind, rest)) => Server::parse(kind, text, rest, env).map(Target::Server),
            None => Ok(Target::Sqlite(PathBuf::from(arg))),
        }
    }

    /// The SQLite file, when the target is one.
    pub fn sqlite(&self) -> Option<&Path> {
        match self {
            Target::Sqlite(p) => Some(p),
            Target::Server(_) => None,
        }
    }
}

impl fmt::Display for Target {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "{}", p.display()),
            Target::Server(s) => write!(f, "{s}"),
        }
    }
}

/// The engine a URL names, and the rest after `scheme://`.
fn scheme_of(text: &str) -> Option<(Kind, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let kind = match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => Kind::Postgres,
        "mysql" | "mariadb" => Kind::Mysql,
        _ => return None,
    };
    Some((kind, rest))
}

/// `text` with the password part of its user info replaced by `****`.
fn redact(text: &str) -> String {
    let Some((head, rest)) = text.split_once("://") else { return text.to_owned() };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{head}://{user}:****@{host}{tail}"),
            None => text.to_owned(),
        },
        None => text.to_owned(),
    }
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("{s:?} is not UTF-8 once its %-escapes are decoded"))
}

impl Server {
    fn parse(kind: Kind, text: &str, rest: &str, env: &dyn Env) -> Result<Server, TargetError> {
        let err = |why: String| TargetError { shown: redact(text), why };
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match main.find('/') {
            Some(i) => (&main[..i], &main[i + 1..]),
            None => (main, ""),
        };
        let (info, hostport) = match authority.rsplit_once('@') {
            Some((i, h)) => (Some(i), h),
            None => (None, authority),
        };
        let (user, url_password) = match info {
            Some(i) => match i.split_once(':') {
                Some((u, p)) => (Some(decode(u).map_err(err)?), Some(decode(p).map_err(err)?)),
                None => (Some(decode(i).map_err(err)?), None),
            },
            None => (None, None),
        };
        if hostport.contains(',') {
            return Err(err("ferry connects to one server: give one host, not a list".into()));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return Err(err("an IPv6 address opened with [ is not closed with ]".into()));
            };
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(err(format!("unexpected {after:?} after the address"))),
            };
            (Some(addr.to_owned()), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (Some(decode(h).map_err(err)?), Some(p)),
                None => (Some(decode(hostport).map_err(err)?), None),
            }
        };
        let mut host = host.filter(|h| !h.is_empty());
        let mut port: Option<u16> = match port {
            None | Some("") => None,
            Some(p) => Some(p.parse().map_err(|_| err(format!("the port {p:?} is not a number from 1 to 65535")))?),
        };
        let mut database = decode(path).map_err(err)?;
        if database.contains('/') {
            return Err(err(format!("{database:?} is not a database name (it holds a /)")));
        }
        let mut user = user.filter(|u| !u.is_empty());
        let mut password = url_password.map(|secret| Password { secret, source: PasswordSource::Url });
        let mut socket: Option<PathBuf> = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v).map_err(err)?;
            match (kind, k) {
                (_, "user") => user = Some(v),
                (_, "password") => password = Some(Password { secret: v, source: PasswordSource::Url }),
                (_, "port") => {
                    port = Some(v.parse().map_err(|_| err(format!("the port {v:?} is not a number from 1 to 65535")))?)
                }
                (Kind::Postgres, "host") if v.starts_with('/') => socket = Some(PathBuf::from(v)),
                (Kind::Postgres, "host") => host = Some(v),
                (Kind::Postgres, "dbname") => database = v,
                (Kind::Mysql, "socket") => socket = Some(PathBuf::from(v)),
                (Kind::Postgres, "sslmode") if matches!(v.as_str(), "disable" | "allow" | "prefer") => {}
                (Kind::Postgres, "sslmode") | (Kind::Mysql, "ssl-mode" | "ssl_mode" | "require_ssl") => {
                    return Err(err(format!(
                        "{k}={v} asks for TLS, which this version of ferry does not speak: reach the server \
                         through its Unix socket or an SSH tunnel instead"
                    )))
                }
                (Kind::Postgres, "application_name" | "connect_timeout") => {}
                _ => {
                    return Err(err(format!(
                        "ferry does not know the URL option {k:?} (it knows user, password, port{})",
                        match kind {
                            Kind::Postgres => ", host, dbname",
                            Kind::Mysql => ", socket",
                        }
                    )))
                }
            }
        }
        if socket.is_none() && host.as_deref().is_some_and(|h| h.starts_with('/')) {
            socket = host.take().map(PathBuf::from);
        }
        // What the engine's own clients take when the URL leaves it out.
        let os_user = || env.var("USER").or_else(|| env.var("USERNAME"));
        let mut options = OptionFile::default();
        if kind == Kind::Mysql {
            options = OptionFile::read(env);
        }
        match kind {
            Kind::Postgres => {
                if host.is_none() && socket.is_none() {
                    match env.var("PGHOST") {
                        Some(h) if h.starts_with('/') => socket = Some(PathBuf::from(h)),
                        Some(h) => host = Some(h),
                        None => {}
                    }
                }
                port = port.or_else(|| env.var("PGPORT").and_then(|p| p.parse().ok()));
                user = user.or_else(|| env.var("PGUSER")).or_else(os_user);
                // Unlike psql, no falling back to a database named after the
                // user: ferry writes into it, so it must be named.
                if database.is_empty() {
                    database = env.var("PGDATABASE").unwrap_or_default();
                }
            }
            Kind::Mysql => {
                if host.is_none() && socket.is_none() {
                    host = env.var("MYSQL_HOST").or_else(|| options.get("host"));
                    if host.is_none() {
                        socket = env.var("MYSQL_UNIX_PORT").or_else(|| options.get("socket")).map(PathBuf::from);
                    }
                }
                port = port
                    .or_else(|| env.var("MYSQL_TCP_PORT").and_then(|p| p.parse().ok()))
                    .or_else(|| options.get("port").and_then(|p| p.parse().ok()));
                user = user.or_else(|| options.get("user")).or_else(os_user);
            }
        }
        let port = port.unwrap_or(kind.default_port());
        let host = match (socket, host) {
            (Some(s), _) => Host::Socket(s),
            (None, Some(h)) => Host::Tcp(h),
            (None, None) => default_host(kind, port),
        };
        let Some(user) = user else {
            return Err(err("no user name: give one in the URL (`user@host`)".into()));
        };
        if database.is_empty() {
            return Err(err(format!(
                "no database name: end the URL with /DATABASE, as in {}://{user}@localhost/central",
                kind.scheme()
            )));
        }
        let mut server = Server { kind, host, port, user, database, password };
        if server.password.is_none() {
            server.password = match kind {
                Kind::Postgres => server.pg_password(env),
                Kind::Mysql => env
                    .var("MYSQL_PWD")
                    .map(|secret| Password { secret, source: PasswordSource::Env("MYSQL_PWD") })
                    .or_else(|| {
                        let (secret, file) = options.password?;
                        Some(Password { secret, source: PasswordSource::File(file) })
                    }),
            };
        }
        Ok(server)
    }

    /// The password to connect with (only for the client crate).
    pub fn password(&self) -> Option<&str> {
        self.password.as_ref().map(|p| p.secret.as_str())
    }

    /// `PGPASSWORD`, else the first matching line of the password file
    /// (`PGPASSFILE`, else `~/.pgpass`; on Windows
    /// `%APPDATA%\postgresql\pgpass.conf`), as libpq reads them.
    fn pg_password(&self, env: &dyn Env) -> Option<Password> {
        if let Some(secret) = env.var("PGPASSWORD") {
            return Some(Password { secret, source: PasswordSource::Env("PGPASSWORD") });
        }
        let file = match env.var("PGPASSFILE") {
            Some(f) => PathBuf::from(f),
            None if cfg!(windows) => PathBuf::from(env.var("APPDATA")?).join("postgresql").join("pgpass.conf"),
            None => env.home()?.join(".pgpass"),
        };
        if !private(&file) {
            return None;
        }
        let text = std::fs::read_to_string(&file).ok()?;
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            // libpq matches a socket connection as "localhost".
            Host::Socket(_) => "localhost".into(),
        };
        let port = self.port.to_string();
        let wanted = [host.as_str(), port.as_str(), self.database.as_str(), self.user.as_str()];
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let fields = pgpass_fields(line);
            if fields.len() < 5 {
                continue;
            }
            if fields[..4].iter().zip(wanted).all(|(f, w)| f == "*" || f == w) {
                return Some(Password { secret: fields[4].clone(), source: PasswordSource::File(file) });
            }
        }
        None
    }
}

/// libpq ignores a password file that others can read.
fn private(file: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(file) {
            Ok(m) => m.is_file() && m.permissions().mode() & 0o077 == 0,
            Err(_) => false,
        }
    }
    #[cfg(not(unix))]
    {
        file.is_file()
    }
}

/// The fields of a `.pgpass` line: `:` separates, `\` escapes the next
/// character; the last field (the password) takes the rest of the line.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(f)) = (chars.next(), out.last_mut()) {
                    f.push(n);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => {
                if let Some(f) = out.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    out
}

/// Where a server is when the URL names no host: PostgreSQL's and
/// MariaDB's usual Unix sockets when they are there, else localhost.
fn default_host(kind: Kind, port: u16) -> Host {
    if cfg!(unix) {
        let candidates: &[&str] = match kind {
            Kind::Postgres => &["/var/run/postgresql", "/tmp"],
            Kind::Mysql => &["/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/tmp/mysql.sock"],
        };
        for c in candidates {
            let p = Path::new(c);
            let there = match kind {
                Kind::Postgres => p.join(format!(".s.PGSQL.{port}")).exists(),
                Kind::Mysql => p.exists(),
            };
            if there {
                return Host::Socket(p.to_path_buf());
            }
        }
    }
    Host::Tcp("localhost".into())
}

/// The `[client]`, `[client-server]` and `[client-mariadb]` groups of the MariaDB/MySQL option
/// files (`/etc/my.cnf`, `/etc/mysql/my.cnf`, `~/.my.cnf`; a later file
/// wins), as the engine's clients read them.
#[derive(Default)]
struct OptionFile {
    values: Vec<(String, String)>,
    password: Option<(String, PathBuf)>,
}

impl OptionFile {
    fn read(env: &dyn Env) -> OptionFile {
        let mut files: Vec<PathBuf> = Vec::new();
        if cfg!(unix) {
            files.push("/etc/my.cnf".into());
            files.push("/etc/mysql/my.cnf".into());
        }
        if let Some(h) = env.home() {
            files.push(h.join(".my.cnf"));
        }
        let mut out = OptionFile::default();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else { continue };
            let mut in_client = false;
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with('!') {
                    continue;
                }
                if let Some(group) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    in_client = matches!(group.trim(), "client" | "client-server" | "client-mariadb");
                    continue;
                }
                if !in_client {
                    continue;
                }
                let (k, v) = line.split_once('=').unwrap_or((line, ""));
                let k = k.trim().replace('_', "-");
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v)
                    .to_owned();
                if k == "password" {
                    out.password = Some((v, file.clone()));
                } else {
                    out.values.retain(|(x, _)| *x != k);
                    out.values.push((k, v));
                }
            }
        }
        out
    }

    fn get(&self, key: &str) -> Option<String> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }
}

impl fmt::Display for Server {
    /// The URL, without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, COMPONENT).to_string();
        let pw = if self.password.as_ref().is_some_and(|p| p.source == PasswordSource::Url) { ":****" } else { "" };
        write!(f, "{}://{}{pw}@", self.kind.scheme(), enc(&self.user))?;
        match &self.host {
            Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port)?,
            Host::Tcp(h) => write!(f, "{}:{}", enc(h), self.port)?,
            Host::Socket(_) => {}
        }
        write!(f, "/{}", enc(&self.database))?;
        if let Host::Socket(s) = &self.host {
            let key = match self.kind {
                Kind::Postgres => "host",
                Kind::Mysql => "socket",
            };
            write!(f, "?{key}={}", s.display())?;
        }
        Ok(())
    }
}

/// What is escaped in a URL part.
const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'/').add(b'?').add(b'#').add(b'@').add(b':').add(b'%');

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, String>, Option<PathBuf>);

    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            self.1.clone()
        }
    }

    fn env(vars: &[(&'static str, &str)]) -> FakeEnv {
        FakeEnv(vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(), None)
    }

    fn server(url: &str, e: &FakeEnv) -> Server {
        match Target::parse_with(OsStr::new(url), e).expect("parses") {
            Target::Server(s) => s,
            t => panic!("not a server: {t:?}"),
        }
    }

    #[test]
    fn paths_stay_paths_and_known_schemes_name_servers() {
        let e = env(&[("USER", "ana")]);
        for p in ["central.sqlite3", "C:\\data\\app.sqlite3", "/srv/app.db", "sqlite://x.db", "http://x/y"] {
            assert_eq!(Target::parse_with(OsStr::new(p), &e).expect("path"), Target::Sqlite(PathBuf::from(p)));
        }
        for (url, kind) in [
            ("postgres://h/db", Kind::Postgres),
            ("PostgreSQL://h/db", Kind::Postgres),
            ("mysql://h/db", Kind::Mysql),
            ("mariadb://h/db", Kind::Mysql),
        ] {
            assert_eq!(server(url, &e).kind, kind, "{url}");
        }
    }

    #[test]
    fn url_parts_are_read_with_the_engines_defaults() {
        let e = env(&[("USER", "ana")]);
        let s = server("postgresql://bob:s%40cret@db.example.org:6543/central", &e);
        assert_eq!(s.host, Host::Tcp("db.example.org".into()));
        assert_eq!((s.port, s.user.as_str(), s.database.as_str()), (6543, "bob", "central"));
        assert_eq!(s.password(), Some("s@cret"));
        let s = server("mysql://root@127.0.0.1/central", &e);
        assert_eq!((s.port, s.user.as_str(), s.password()), (3306, "root", None));
        let s = server("postgres://[::1]:5433/x", &e);
        assert_eq!((s.host.clone(), s.port, s.user.as_str()), (Host::Tcp("::1".into()), 5433, "ana"));
        let s = server("postgresql:///central?host=/var/run/postgresql&user=postgres", &e);
        assert_eq!(s.host, Host::Socket("/var/run/postgresql".into()));
        assert_eq!(s.user, "postgres");
        let s = server("mysql://root@localhost/central?socket=/run/mysqld/mysqld.sock", &e);
        assert_eq!(s.host, Host::Socket("/run/mysqld/mysqld.sock".into()));
        let s = server("postgresql://u@%2Ftmp/central", &e);
        assert_eq!(s.host, Host::Socket("/tmp".into()));
    }

    #[test]
    fn bad_urls_are_refused_naming_the_problem_without_the_password() {
        let e = env(&[("USER", "ana")]);
        for (url, why) in [
            ("postgres://u:topsecret@h:99999/db", "port"),
            ("postgres://u:topsecret@h/", "no database name"),
            ("mysql://u:topsecret@h/db?sslx=1", "sslx"),
            ("postgres://u:topsecret@a,b/db", "one host"),
            ("postgres://u:topsecret@[::1/db", "not closed"),
            ("postgres://u:topsecret@h/db?sslmode=require", "TLS"),
        ] {
            let e = Target::parse_with(OsStr::new(url), &e).expect_err(url);
            let text = e.to_string();
            assert!(text.contains(why), "{text}");
            assert!(!text.contains("topsecret"), "{text}");
            assert!(text.contains("u:****@"), "{text}");
        }
    }

    #[test]
    fn the_password_never_shows_in_display_or_debug() {
        let e = env(&[]);
        let t = Target::parse_with(OsStr::new("postgres://u:hunter2@h/db"), &e).expect("parses");
        let shown = format!("{t} {t:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(t.to_string(), "postgresql://u:****@h:5432/db");
        let e = env(&[("PGPASSWORD", "hunter3")]);
        let t = Target::parse_with(OsStr::new("postgres://u@h/db"), &e).expect("parses");
        assert_eq!(t.to_string(), "postgresql://u@h:5432/db", "a password from elsewhere is not hinted at");
        assert!(!format!("{t:?}").contains("hunter3"));
    }

    #[test]
    fn passwords_come_from_the_url_then_the_environment_then_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pgpass = dir.path().join(".pgpass");
        std::fs::write(&pgpass, "# comment\nother:*:*:*:wrong\nh:5432:central:u:pa\\:ss\n*:*:*:*:fallback\n")
            .expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let mut e = env(&[]);
        e.1 = Some(dir.path().to_path_buf());
        assert_eq!(server("postgres://u@h/central", &e).password(), Some("pa:ss"));
        assert_eq!(server("postgres://u@h/other", &e).password(), Some("fallback"));
        assert_eq!(server("postgres://u:inurl@h/central", &e).password(), Some("inurl"));
        e.0.insert("PGPASSWORD", "fromenv".into());
        let s = server("postgres://u@h/central", &e);
        assert_eq!(
            (s.password(), s.password.as_ref().map(|p| p.source.clone())),
            (Some("fromenv"), Some(PasswordSource::Env("PGPASSWORD")))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            e.0.remove("PGPASSWORD");
            std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert_eq!(server("postgres://u@h/central", &e).password(), None, "libpq ignores a file others can read");
        }

        std::fs::write(
            dir.path().join(".my.cnf"),
            "[mysqld]\npassword=server\n[client]\nuser = carla\npassword = \"my pass\"\n",
        )
        .expect("write");
        let s = server("mysql://h/central", &e);
        assert_eq!((s.user.as_str(), s.password()), ("carla", Some("my pass")));
        e.0.insert("MYSQL_PWD", "envpw".into());
        assert_eq!(server("mysql://h/central", &e).password(), Some("envpw"));
    }
}
