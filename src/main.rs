//! The `croissant` command: parse arguments, start logging, hand off to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use croissant::config::{Config, LoadError};
use croissant::sinks::registry::TYPES;

/// Camera streaming daemon: live MJPEG to browsers over WebSockets, with recording.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML). Without it, built-in defaults serve a test pattern.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and exit: 0 if valid, 2 with the errors if not.
    Check,
    /// Read a password from standard input (one line) and print its argon2 hash, for
    /// `password_hash` in `[auth.users.<name>]`.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        return hash_password();
    }
    let config = match &cli.config {
        Some(path) => Config::load(path, &TYPES),
        None => Ok(Config::builtin(&TYPES)),
    };
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            let errors = match &error {
                LoadError::Invalid(errors) => errors.len(),
                LoadError::Read { .. } => 1,
            };
            eprintln!("{error}");
            eprintln!(
                "croissant: config has {errors} error{}",
                if errors == 1 { "" } else { "s" }
            );
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Check) = cli.command {
        let source = &config.source;
        // A command's own arguments decide its picture.
        let size = match source.kind {
            croissant::config::SourceKind::Command => String::new(),
            _ => format!(" {}x{}@{}", source.width, source.height, source.framerate),
        };
        println!(
            "{}: ok (source {}{size}, sinks: {})",
            config.origin,
            source.kind_name(),
            config
                .sinks
                .iter()
                .map(|s| format!("{} ({})", s.name, s.kind))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::SUCCESS;
    }

    init_logging();
    match croissant::run(config, cli.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "croissant cannot run");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; under systemd (which timestamps the journal itself) without our own
/// timestamps. `RUST_LOG` overrides the default `info` level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log redirected to a file stays plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // The journal stamps every line itself.
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// `croissant hash-password`: the password comes on stdin so it never shows in `ps` or the
/// shell history (`read -rs P; echo "$P" | croissant hash-password`).
fn hash_password() -> ExitCode {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprintln!("Password (input is shown; pipe it in to avoid that):");
    }
    let mut line = String::new();
    if let Err(error) = std::io::stdin().read_line(&mut line) {
        eprintln!("croissant: cannot read the password: {error}");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("croissant: empty password");
        return ExitCode::from(2);
    }
    match croissant::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("croissant: {error}");
            ExitCode::FAILURE
        }
    }
}
