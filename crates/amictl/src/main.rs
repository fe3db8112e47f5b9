//! `amictl`: the command line. Thin: parsing, config overrides, rendering and exit codes; the
//! logic lives in `amictl-core`.

mod cli;
mod commands;
#[allow(dead_code)] // the tests use more of the client than the benchmark does
mod emulator;
mod out;
mod progress;
mod render;

use std::process::ExitCode;

use clap::Parser;

// glibc's allocator spends much of a million-image plan consolidating freed chunks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes scripts can rely on.
pub mod exit {
    /// Clean.
    pub const OK: u8 = 0;
    /// Findings at or above `--fail-on`.
    pub const FINDINGS: u8 = 1;
    /// Error: bad input, AWS unreachable, incomplete inventory.
    pub const ERROR: u8 = 2;
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            out::eprint_line(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(exit::ERROR);
        }
    };
    let code = match runtime.block_on(Box::pin(commands::run(cli))) {
        Ok(code) => code,
        Err(e) => {
            out::eprint_line(&format!("error: {e}"));
            exit::ERROR
        }
    };
    if let Some(e) = out::write_error() {
        out::eprint_line(&format!("error: cannot write to standard output: {e}"));
        return ExitCode::from(exit::ERROR);
    }
    ExitCode::from(code)
}

/// Help and version print as clap prints them; a usage error is one line (what was wrong, and
/// the values accepted), exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let line: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
        .collect();
    out::eprint_line(&line.join(" "));
    ExitCode::from(exit::ERROR)
}

/// Colour on stderr only for a person at a terminal who did not ask for none (NO_COLOR).
fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing(verbose: u8) {
    // Quiet by default about the SDK's own chatter (e.g. three warnings about the instance
    // metadata service before "no region"): amictl says what went wrong in one line.
    let default = match verbose {
        0 => "amictl=warn,amictl_core=warn,error",
        1 => "amictl=info,amictl_core=info,warn",
        2 => "amictl=debug,amictl_core=debug,info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMICTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr_colour())
        .with_target(false)
        .init();
}
