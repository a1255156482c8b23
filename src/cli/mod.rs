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
mod prune;
mod receipts;
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
#[command(after_help = "The usual journey:
  ferry node init --name field-1 --kind field --id-block 1
  ferry track app.sqlite3
  ferry bundle create --db app.sqlite3 --out /media/usb
  ferry bundle relay --from /media/usb --out outbox          (middleman)
  ferry bundle relay --from /media/usb --out /media/to-town \\
        --apply clinic.sqlite3                               (community server)
  ferry bundle apply --db central.sqlite3 inbox              (central server)
  ferry status --db central.sqlite3

Words:
  node         one computer running ferry, with its own name and key:
               a field laptop, a middleman, a server
  id block     a node's own range of row numbers, so two laptops never
               number rows alike (laptops 1 to 999, servers from 1000)
  entry        one change to one row, as the app made it on one computer
  journal      a node's entries, numbered 1, 2, 3 ...
  bundle       a file carrying entries, signed by the computer that wrote
               them and by each that carried them
  part         one node's entries inside a bundle (in docs/FORMAT.md: a
               segment)
  waiting      an update whose row has not arrived (or was deleted), or an
               entry dated ahead of this computer's clock; it applies by
               itself when it can
  held back    a row that cannot stand in its table yet (its parent row is
               missing, or another row had its unique value first); it goes
               in by itself when it can
  quarantined  an entry the database refused (a table or column it lacks, a
               bad key): `ferry status --db DB --list` shows why,
               `ferry bundle apply --db DB --retry-quarantined` tries again
  conflict     a value that lost to a later write; `ferry conflicts --db DB`
               keeps it
  fork         two computers writing under one identity (a copied laptop);
               the server prints how to part them
  set aside    a bundle file a relay could not pass on, copied into
               HOME/quarantine/ with the reason

Exit codes: 0 ok, 1 a negative verdict (verification failed, input refused, a fork), 2 error.")]
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
    /// Remove journal rows and bundle files the archive (central server) has confirmed it holds.
    #[command(after_help = prune::AFTER_HELP)]
    Prune(prune::PruneArgs),
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
    let result = dispatch(cli, &ui);
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

/// Runs one command line (`args` after `ferry`) in this process, as `ferry
/// demo` does with the commands it shows.
pub(crate) fn run_line(args: &[String], ui: &Ui) -> anyhow::Result<Outcome> {
    let cli = Cli::try_parse_from(std::iter::once("ferry".to_owned()).chain(args.iter().cloned()))?;
    dispatch(cli, ui)
}

fn dispatch(cli: Cli, ui: &Ui) -> anyhow::Result<Outcome> {
    let ui = &Ui::new(ui.quiet || cli.quiet, ui.verbose || cli.verbose);
    match cli.command {
        Command::Node(c) => node::run_node(c, cli.home, ui),
        Command::Key(c) => node::run_key(c, cli.home, ui),
        Command::Trust(c) => trust::run(c, cli.home, ui),
        Command::Track(a) => track::track(a, cli.home, ui),
        Command::Untrack(a) => track::untrack(a, ui),
        Command::Bundle(c) => bundle::run(c, cli.home, ui),
        Command::Conflicts(a) => apply::run_conflicts(a, cli.home),
        Command::Status(a) => status::run(a, cli.home, ui),
        Command::Prune(a) => prune::run(a, cli.home, ui),
        Command::Demo(a) => demo::run(a, ui),
        Command::Generate(a) => generate(a),
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
