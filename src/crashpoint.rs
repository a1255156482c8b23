//! Crash injection for durability tests.
//!
//! Long operations call [`hit`] at every point where a crash would be
//! interesting (after a temp file is written, before a rename, inside a
//! transaction, …). Normally this is one relaxed atomic increment. With
//! `FERRY_CRASH_AT=N` in the environment, the Nth point reached kills the
//! process on the spot with SIGKILL (on Unix; elsewhere `abort`), exactly as
//! `kill -9` would: no destructors, no buffered writes, no cleanup. With
//! `FERRY_CRASH_TRACE=1`, every point reached is printed to stderr, so a test
//! can count them and then crash at each one in turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static COUNT: AtomicU64 = AtomicU64::new(0);

struct Config {
    crash_at: Option<u64>,
    trace: bool,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config {
        crash_at: std::env::var("FERRY_CRASH_AT").ok().and_then(|v| v.parse().ok()),
        trace: std::env::var_os("FERRY_CRASH_TRACE").is_some(),
    })
}

/// A point where the process may be killed in a durability test.
pub fn hit(name: &str) {
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let c = config();
    if c.trace {
        eprintln!("ferry-crashpoint {n} {name}");
    }
    if c.crash_at == Some(n) {
        kill_self();
    }
}

fn kill_self() -> ! {
    #[cfg(unix)]
    {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
        // The signal is on its way; never return into the operation.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    #[cfg(not(unix))]
    std::process::abort()
}
