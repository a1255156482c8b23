//! Output: data on stdout, messages and progress on stderr, errors with
//! their cause chain and a hint.

use std::io::{IsTerminal, Write};

use ferry::progress::Progress;

pub struct Ui {
    pub quiet: bool,
    /// Errors with their whole chain of causes.
    pub verbose: bool,
}

/// Whether to draw a progress bar: only on a terminal, never under CI or `--quiet`.
pub fn want_bar(stderr_is_terminal: bool, quiet: bool, ci: bool) -> bool {
    stderr_is_terminal && !quiet && !ci
}

impl Ui {
    pub fn new(quiet: bool, verbose: bool) -> Ui {
        Ui { quiet, verbose }
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

    /// Prints an error as one line a person can act on (what failed and
    /// its root cause), then a hint when there is one; `--verbose` adds
    /// every cause in between.
    pub fn error(&self, e: &anyhow::Error) {
        eprintln!("{}", error_text(e, self.verbose));
        if let Some(hint) = hint(e) {
            eprintln!("hint: {hint}");
        }
    }
}

/// `error: WHAT: ROOT CAUSE` on one line (control characters escaped); with
/// `verbose`, every cause on a line of its own.
pub fn error_text(e: &anyhow::Error, verbose: bool) -> String {
    let top = e.to_string();
    let mut s = format!("error: {}", ferry::sanitize(&top));
    if verbose {
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !s.contains(&c) {
                s.push_str(&format!("\n  caused by: {}", ferry::sanitize(&c)));
            }
        }
    } else if let Some(root) = e.chain().skip(1).last().map(ToString::to_string) {
        if !top.contains(&root) {
            s.push_str(": ");
            s.push_str(&ferry::sanitize(&root));
        }
    }
    s
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
    // A serde_json error hides the io::Error (a closed pipe) from the
    // boundary's check: hand the io error itself back.
    serde_json::to_writer_pretty(&mut o, value).map_err(|e| match e.io_error_kind() {
        Some(kind) => anyhow::Error::new(std::io::Error::new(kind, e)),
        None => e.into(),
    })?;
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
    use super::{error_text, want_bar};

    #[test]
    fn errors_are_one_line_unless_verbose() {
        let root = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = anyhow::Error::new(root).context("middle layer").context("failed to write a bundle into /media/usb");
        assert_eq!(error_text(&e, false), "error: failed to write a bundle into /media/usb: No space left on device");
        let v = error_text(&e, true);
        assert!(v.contains("\n  caused by: middle layer") && v.contains("\n  caused by: No space left"), "{v}");
        let lone = anyhow::anyhow!("no bundles (*.tar) found in x\u{1b}[2J");
        assert_eq!(error_text(&lone, false), "error: no bundles (*.tar) found in x\\u{1b}[2J");
    }

    #[test]
    fn bar_only_on_an_interactive_terminal() {
        assert!(want_bar(true, false, false));
        assert!(!want_bar(false, false, false), "pipes get no bar");
        assert!(!want_bar(true, true, false), "--quiet gets no bar");
        assert!(!want_bar(true, false, true), "CI gets no bar");
    }
}
