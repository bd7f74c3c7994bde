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
    Serve {
        /// Only this part of the work (with `[spool] backend = "rabbitmq"`); default: `role`
        /// of mailetd.toml, else all.
        #[arg(long, value_enum)]
        role: Option<mailetd::config::settings::Role>,
    },
    /// Shows and acts on DAV jobs waiting for delivery and dead letters (server stopped).
    Outbox {
        #[command(subcommand)]
        action: mailetd::cli::outbox::OutboxAction,
    },
    /// Loads the whole configuration and prints the processor graph; non-zero exit on error.
    Check,
    /// Runs .eml files through the processors without SMTP and prints what each mailet did.
    Replay {
        /// Envelope sender (default: the From: address; `<>` for a null sender).
        #[arg(long)]
        from: Option<String>,
        /// Envelope recipient, repeatable (default: the To: and Cc: addresses).
        #[arg(long)]
        to: Vec<String>,
        /// Mailets that call out (DAV, repositories) only print what they would do.
        #[arg(long)]
        dry_run: bool,
        /// The messages.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Inspects a mail repository and sends its mails back through a processor.
    Repo {
        #[command(subcommand)]
        action: RepoAction,
    },
    /// Lists the mails waiting in the embedded spool, shows one, or takes one out into the
    /// error repository (mailetd serve must be stopped).
    Spool {
        #[command(subcommand)]
        action: SpoolAction,
    },
}

#[derive(Subcommand)]
enum SpoolAction {
    /// One line per waiting mail: id, reception time, processing attempts, envelope, subject.
    List,
    /// Envelope, attributes and message of one mail.
    Show {
        /// The mail's id (from `spool list`).
        id: String,
    },
    /// Moves one mail into the error repository; the others stay in the spool.
    Drop {
        /// The mail's id (from `spool list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum RepoAction {
    /// One line per stored mail.
    List {
        /// Repository URL (file://mail/error/) or path under the data directory.
        name: String,
    },
    /// Envelope, attributes and message of one stored mail (all when KEY is omitted).
    Show {
        /// Repository URL or path.
        name: String,
        /// The mail's key (from `repo list`).
        key: Option<String>,
    },
    /// Moves the stored mails back into the spool (mailetd serve must be stopped).
    Reprocess {
        /// Repository URL or path.
        name: String,
        /// The processor to restart them in (default: the state they were stored in).
        #[arg(long)]
        processor: Option<String>,
        /// Only these keys (default: all).
        keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    mailetd::allocator::tune();
    mailetd::logging::init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { role } => {
                mailetd::server::raise_open_files_limit();
                mailetd::server::serve_as(&cli.conf, role).await
            }
            Command::Outbox { action } => mailetd::cli::outbox::run(&cli.conf, action)
                .await
                .map(|out| print!("{out}")),
            Command::Check => {
                print!("{}", mailetd::cli::check::run(&cli.conf)?);
                Ok(())
            }
            Command::Replay {
                from,
                to,
                dry_run,
                files,
            } => {
                let options = mailetd::cli::replay::ReplayOptions {
                    conf_dir: cli.conf.clone(),
                    from,
                    to,
                    dry_run,
                    files,
                };
                let (trace, ok) = mailetd::cli::replay::run(&options).await?;
                print!("{trace}");
                if ok {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("a mail failed with a propagated error"))
                }
            }
            Command::Spool { action } => {
                use mailetd::cli::spool;
                let opened = spool::open(&cli.conf)?;
                let text = match action {
                    SpoolAction::List => spool::list(&opened)?,
                    SpoolAction::Show { id } => spool::show(&opened, &id)?,
                    SpoolAction::Drop { id } => spool::drop(&opened, &id)?,
                };
                print!("{text}");
                Ok(())
            }
            Command::Repo { action } => {
                use mailetd::cli::repo;
                let text = match action {
                    RepoAction::List { name } => repo::list(&repo::open(&cli.conf, &name)?)?,
                    RepoAction::Show { name, key } => {
                        repo::show(&repo::open(&cli.conf, &name)?, key.as_deref())?
                    }
                    RepoAction::Reprocess {
                        name,
                        processor,
                        keys,
                    } => {
                        let r = repo::open(&cli.conf, &name)?;
                        repo::reprocess(&cli.conf, &r, processor.as_deref(), &keys).await?
                    }
                };
                print!("{text}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error may quote a URL (a broker's, a DAV server's): never its password.
            let text = format!("{e:#}");
            eprintln!("mailetd: {}", mailetd::config::secret::redact_urls(&text));
            ExitCode::FAILURE
        }
    }
}
