//! The `mailetd` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mailetd: collects calendar invitations and contacts from mirrored mail into CalDAV/CardDAV.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration directory (mailetcontainer.xml, smtpserver.xml, domainlist.xml, *.properties, mailetd.toml).
    #[arg(long, global = true, default_value = "conf", env = "MAILETD_CONF")]
    conf: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the SMTP listener, the spooler and the outbox until SIGTERM.
    Serve,
    /// Shows and acts on DAV jobs waiting for delivery and dead letters (server stopped).
    Outbox {
        #[command(subcommand)]
        action: mailetd::outbox::cli::OutboxAction,
    },
}

fn main() -> ExitCode {
    mailetd::logging::init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => mailetd::server::serve(&cli.conf).await,
            Command::Outbox { action } => mailetd::outbox::cli::run(&cli.conf, action)
                .await
                .map(|out| print!("{out}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailetd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
