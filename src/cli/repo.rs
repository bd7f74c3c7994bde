//! `mailetd repo list|show|reprocess`: inspect a mail repository and send its mails back
//! through a processor (James webadmin "reprocess").

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use crate::config::ConfDir;
use crate::mail::{AttributeValue, attributes};
use crate::repository::Repository;
use crate::spool::{EmbeddedSpool, Spool};

/// Opens the repository `name`: a URL (`file://mail/error/`, `postgres://var/mail/error/`) or
/// a path (`mail/error`, meaning `file://mail/error`).
pub fn open(conf_dir: &Path, name: &str) -> anyhow::Result<Repository> {
    let conf = ConfDir::load(conf_dir)?;
    let url = if name.contains("://") {
        name.to_string()
    } else {
        format!("file://{name}")
    };
    Repository::open(&url, conf.data_dir()).map_err(anyhow::Error::msg)
}

/// One line per stored mail.
pub fn list(repo: &Repository) -> anyhow::Result<String> {
    let mut out = String::new();
    let keys = repo.list()?;
    for key in &keys {
        let mail = repo.load(key)?;
        let _ = writeln!(
            out,
            "{key}  state={}  from={}  to={}  error={}",
            mail.state,
            mail.sender_text(),
            mail.recipients_text(","),
            mail.error_message
                .as_deref()
                .unwrap_or("-")
                .replace(['\r', '\n'], " ")
        );
    }
    let _ = writeln!(out, "{} mail(s) in {}", keys.len(), repo.dir.display());
    Ok(out)
}

/// Envelope, attributes and message of one mail (or of all when `key` is `None`).
pub fn show(repo: &Repository, key: Option<&str>) -> anyhow::Result<String> {
    let keys = match key {
        Some(k) => vec![k.to_string()],
        None => repo.list()?,
    };
    let mut out = String::new();
    for key in keys {
        let mail = repo.load(&key)?;
        let json = std::fs::read_to_string(repo.dir.join(format!("{key}.json")))?;
        let _ = writeln!(out, "== {key}\n{json}");
        // Byte attributes are base64 in the JSON; show the ones that are text (the calendar
        // JSONs CalDavCollect would send, raw ICS parts) as they are.
        for (name, value) in &mail.attributes {
            if let AttributeValue::CalendarJson(jsons) = value {
                for d in jsons.documents() {
                    let text = String::from_utf8_lossy(&d.render()).into_owned();
                    let _ = writeln!(out, "-- attribute {name}[{}]\n{text}", d.key);
                }
                continue;
            }
            let entries: Vec<(String, &AttributeValue)> = match value {
                AttributeValue::Map(map) => map
                    .iter()
                    .map(|(k, v)| (format!("{name}[{k}]"), v))
                    .collect(),
                other => vec![(name.clone(), other)],
            };
            for (label, value) in entries {
                if let AttributeValue::Bytes(bytes) = value
                    && let Ok(text) = std::str::from_utf8(bytes)
                {
                    let _ = writeln!(out, "-- attribute {label}\n{text}");
                }
            }
        }
        let _ = writeln!(
            out,
            "-- message ({} bytes)\n{}",
            mail.message.len(),
            String::from_utf8_lossy(&mail.message)
        );
    }
    Ok(out)
}

/// Moves every mail of the repository (or only `keys`) back into the spool, in `processor`
/// (default: the state it was stored in). The server must be stopped: the spool is a single
/// file opened by one process.
pub async fn reprocess(
    conf_dir: &Path,
    repo: &Repository,
    processor: Option<&str>,
    keys: &[String],
) -> anyhow::Result<String> {
    let conf = ConfDir::load(conf_dir)?;
    if let Some(p) = processor
        && !conf.container.processors.iter().any(|c| c.state == p)
    {
        anyhow::bail!("processor {p} does not exist in the configuration");
    }
    let data_dir = conf.data_dir();
    std::fs::create_dir_all(data_dir)?;
    let (_store, spool) = EmbeddedSpool::open_path(&data_dir.join("spool.redb"), crate::outbox::store::OutboxSink::shared())
        .with_context(|| "cannot open the spool (stop mailetd serve first: the spool is used by one process at a time)")?;
    let keys = if keys.is_empty() {
        repo.list()?
    } else {
        keys.to_vec()
    };
    let mut out = String::new();
    for key in &keys {
        let mut mail = repo.load(key)?;
        if let Some(p) = processor {
            mail.state = p.to_string();
        }
        mail.attributes.remove(attributes::PROCESSING_ERROR_COUNT);
        let state = mail.state.clone();
        let id = spool.enqueue(mail).await?;
        repo.remove(key)?;
        let _ = writeln!(out, "{key} -> spool (mail {id}, processor {state})");
    }
    let _ = writeln!(out, "{} mail(s) reprocessed", keys.len());
    Ok(out)
}
