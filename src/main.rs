//! The `ferry` command: a thin clap layer over the `ferry` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
