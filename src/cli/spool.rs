//! `mailetd spool list|show|drop`: look at the mails waiting in the embedded spool and take
//! one out (a poison mail, a mail stuck behind a bug) without touching its neighbours. The
//! server must be stopped: the spool is opened by one process at a time.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::ConfDir;
use crate::config::settings::SpoolBackend;
use crate::mail::{Mail, MailId};
use crate::repository::Repository;
use crate::spool::EmbeddedSpool;
use crate::store::Store;

/// The embedded spool of the configuration in `conf_dir`, and its error repository.
pub struct Opened {
    _store: Arc<Store>,
    spool: Arc<EmbeddedSpool>,
    errors: Repository,
}

/// Opens the spool (refused while `mailetd serve` holds it).
pub fn open(conf_dir: &Path) -> anyhow::Result<Opened> {
    let conf = ConfDir::load(conf_dir)?;
    if conf.settings.spool.backend == SpoolBackend::Rabbitmq {
        anyhow::bail!(
            "the spool is on RabbitMQ ([spool] backend): its mails are messages of queue {}; use the RabbitMQ management tools",
            conf.settings.spool.queue
        );
    }
    let data_dir = conf.data_dir();
    let path = data_dir.join("spool.redb");
    if !path.exists() {
        anyhow::bail!("no spool at {}", path.display());
    }
    let (store, spool) = EmbeddedSpool::open_path(&path, crate::outbox::store::OutboxSink::shared()).with_context(|| {
        "cannot open the spool (stop mailetd serve first: the spool is used by one process at a time)"
    })?;
    let errors = Repository::open(&conf.container.error_repository, data_dir)
        .map_err(|e| anyhow::anyhow!("errorRepository: {e}"))?;
    Ok(Opened {
        _store: store,
        spool,
        errors,
    })
}

fn subject(mail: &Mail) -> String {
    mail_parser::MessageParser::new()
        .parse_headers(mail.header_block())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

fn received(ms: u64) -> String {
    mail_parser::DateTime::from_timestamp((ms / 1000) as i64).to_rfc3339()
}

/// One line per waiting mail, oldest due first.
pub fn list(opened: &Opened) -> anyhow::Result<String> {
    let mut out = String::new();
    let stored = opened.spool.stored();
    for entry in &stored {
        let Some(mail) = opened.spool.read(entry.id)? else {
            continue;
        };
        let due = if entry.due_ms == 0 {
            "now".to_string()
        } else {
            received(entry.due_ms)
        };
        let _ = writeln!(
            out,
            "{}  received={}  attempts={}  due={due}  from={}  to={}  size={}  subject={:?}",
            entry.id,
            received(mail.received_at_ms),
            entry.attempts,
            mail.sender_text(),
            mail.recipients_text(","),
            mail.size(),
            subject(&mail),
        );
    }
    let _ = writeln!(out, "{} mail(s) in the spool", stored.len());
    Ok(out)
}

fn parse_id(id: &str) -> anyhow::Result<MailId> {
    id.parse()
        .with_context(|| format!("{id:?} is not a spool id (the first column of `spool list`)"))
}

fn find(opened: &Opened, id: &str) -> anyhow::Result<(MailId, u32, Mail)> {
    let id = parse_id(id)?;
    let entry = opened.spool.stored().into_iter().find(|e| e.id == id);
    match (entry, opened.spool.read(id)?) {
        (Some(entry), Some(mail)) => Ok((id, entry.attempts, mail)),
        _ => anyhow::bail!("no mail {id} in the spool"),
    }
}

/// Envelope, attributes and message of one mail.
pub fn show(opened: &Opened, id: &str) -> anyhow::Result<String> {
    let (id, attempts, mail) = find(opened, id)?;
    let mut meta = serde_json::to_value(&mail)?;
    meta["processing_attempts"] = attempts.into();
    Ok(format!(
        "== {id}\n{}\n-- message ({} bytes)\n{}\n",
        serde_json::to_string_pretty(&meta)?,
        mail.size(),
        String::from_utf8_lossy(&mail.message)
    ))
}

/// Takes one mail out of the spool into the error repository (from where `repo reprocess`
/// can bring it back); the other mails stay.
pub fn drop(opened: &Opened, id: &str) -> anyhow::Result<String> {
    let (id, _, mut mail) = find(opened, id)?;
    mail.error_message = Some("taken out of the spool by `mailetd spool drop`".into());
    let key = opened.errors.store(&mail)?;
    opened.spool.remove(id)?;
    Ok(format!(
        "mail {id} moved to {} as {key}\n",
        opened.errors.url
    ))
}
