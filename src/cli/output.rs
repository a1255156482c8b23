//! Output: data on stdout, messages and progress on stderr, errors with
//! their cause chain and a hint.

use std::io::{IsTerminal, Write};

use ferry::progress::Progress;

pub struct Ui {
    pub quiet: bool,
}

/// Whether to draw a progress bar: only on a terminal, never under CI or `--quiet`.
pub fn want_bar(stderr_is_terminal: bool, quiet: bool, ci: bool) -> bool {
    stderr_is_terminal && !quiet && !ci
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        Ui { quiet }
    }

    /// A progress reporter: an indicatif bar on a terminal, nothing otherwise.
    pub fn progress(&self) -> Box<dyn Progress> {
        let ci = std::env::var_os("CI").is_some();
        if want_bar(std::io::stderr().is_terminal(), self.quiet, ci) {
            Box::new(Bar(None))
        } else {
            Box::new(ferry::progress::Silent)
        }
    }

    /// A message for people, on stderr (suppressed by `--quiet`).
    pub fn note(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// Prints an error, its causes, and a hint.
    pub fn error(&self, e: &anyhow::Error) {
        let mut s = format!("error: {e}");
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !s.contains(&c) {
                s.push_str(&format!("\n  caused by: {c}"));
            }
        }
        eprintln!("{s}");
        if let Some(hint) = hint(e) {
            eprintln!("hint: {hint}");
        }
    }
}

fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use ferry::node::NodeError;
    for cause in e.chain() {
        if let Some(NodeError::NotInitialised(_)) = cause.downcast_ref::<NodeError>() {
            return Some("each computer needs its own node: `ferry node init --name NAME`");
        }
        if let Some(ferry::journal::JournalError::Malformed { .. }) = cause.downcast_ref() {
            return Some("fix or remove the line named above; nothing was written");
        }
    }
    None
}

/// Writes a line of data to stdout; a closed pipe surfaces as an error the
/// boundary turns into a quiet exit.
pub fn out(line: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}")?;
    Ok(())
}

/// One table's operation counts, indented under a segment or an origin.
pub fn table_counts(table: &str, c: &ferry::bundle::OpCounts) -> String {
    format!("    {:<30} insert {:>7}  update {:>7}  delete {:>7}", ferry::sanitize(table), c.insert, c.update, c.delete)
}

/// Writes a value as one JSON document on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut o, value)?;
    writeln!(o)?;
    Ok(())
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

struct Bar(Option<indicatif::ProgressBar>);

impl Progress for Bar {
    fn start(&mut self, label: &str, total: Option<u64>) {
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        self.0 = Some(bar);
    }
    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::want_bar;

    #[test]
    fn bar_only_on_an_interactive_terminal() {
        assert!(want_bar(true, false, false));
        assert!(!want_bar(false, false, false), "pipes get no bar");
        assert!(!want_bar(true, true, false), "--quiet gets no bar");
        assert!(!want_bar(true, false, true), "CI gets no bar");
    }
}
