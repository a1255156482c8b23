//! The command-line interface: the whole clap tree, the error boundary and
//! exit codes. Each command group's handlers live in their own file.
//!
//! Exit codes: 0 success; 1 a negative verdict (a bundle failed
//! verification, something was rejected or quarantined); 2 an error (bad
//! usage, missing node, I/O).

mod apply;
mod bundle;
mod demo;
mod node;
mod output;
mod relay;
mod status;
mod track;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use output::Ui;

/// Carry database changes between rarely-online computers, on files.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "The usual journey:\n  ferry node init --name field-1 --id-block 1\n  ferry track app.sqlite3\n  ferry bundle create --db app.sqlite3 --out /media/usb\n  ferry bundle relay --from /media/usb --out outbox      (middleman)\n  ferry bundle apply --db central.sqlite3 inbox          (server)\n  ferry status --db central.sqlite3\n\nExit codes: 0 ok, 1 a negative verdict (verification failed, input rejected), 2 error."
)]
pub struct Cli {
    /// The node's home folder [default: the per-user data folder, e.g. ~/.local/share/ferry].
    #[arg(long, global = true, env = "FERRY_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// No progress bars and no messages on stderr except errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Show every cause of an error, not only the first and the last.
    #[arg(long, short, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or show this node's identity.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Export this node's public key.
    #[command(subcommand)]
    Key(node::KeyCommand),
    /// Manage the keys this node accepts.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Capture every committed change of an app's SQLite database (or refresh, or show status).
    Track(track::TrackArgs),
    /// Remove capture from an app database, leaving its data as it is.
    Untrack(track::UntrackArgs),
    /// Create, verify, inspect bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// List the conflicts recorded in a database bundles were applied to.
    #[command(after_help = "Example:\n  ferry conflicts --db central.sqlite3 --json")]
    Conflicts(apply::ConflictsArgs),
    /// What this node knows per origin: as a relay, what it carried; with --db, what a database holds.
    Status(status::StatusArgs),
    /// Run the whole story on built-in fixtures in a temporary folder.
    Demo(demo::DemoArgs),
    /// Write man pages or shell completions (for packagers).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// `man` or a shell name (bash, zsh, fish, powershell, elvish).
    #[arg(value_name = "WHAT")]
    pub what: String,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// What a command handler returns: success, or a negative verdict.
pub enum Outcome {
    Ok,
    Negative,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(cli.quiet, cli.verbose);
    let result = match cli.command {
        Command::Node(c) => node::run_node(c, cli.home, &ui),
        Command::Key(c) => node::run_key(c, cli.home, &ui),
        Command::Trust(c) => trust::run(c, cli.home, &ui),
        Command::Track(a) => track::track(a, cli.home, &ui),
        Command::Untrack(a) => track::untrack(a, &ui),
        Command::Bundle(c) => bundle::run(c, cli.home, &ui),
        Command::Conflicts(a) => apply::run_conflicts(a, cli.home),
        Command::Status(a) => status::run(a, cli.home, &ui),
        Command::Demo(a) => demo::run(a, &ui),
        Command::Generate(a) => generate(a),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            ui.error(&e);
            ExitCode::from(2)
        }
    }
}

/// The node home from `--home`/`FERRY_HOME`, else the per-user default.
pub fn home_dir(home: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match home {
        Some(h) => Ok(h),
        None => Ok(ferry::node::default_home()?),
    }
}

fn generate(a: GenerateArgs) -> anyhow::Result<Outcome> {
    use clap::CommandFactory;
    std::fs::create_dir_all(&a.out)?;
    let cmd = Cli::command();
    if a.what == "man" {
        clap_mangen::generate_to(cmd, &a.out)?;
    } else {
        let shell: clap_complete::Shell = a.what.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        clap_complete::generate_to(shell, &mut Cli::command(), "ferry", &a.out)?;
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
