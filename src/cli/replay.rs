//! `mailetd replay`: runs `.eml` files through the processors without SMTP and prints what
//! each mailet did.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mail_parser::{Address, MessageParser};

use crate::config::ConfDir;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{Container, MailetContext, Run};

/// What to replay.
pub struct ReplayOptions {
    /// The configuration directory.
    pub conf_dir: PathBuf,
    /// Envelope sender; default: the first `From:` address. `<>` is the null sender.
    pub from: Option<String>,
    /// Envelope recipients; default: the `To:` and `Cc:` addresses.
    pub to: Vec<String>,
    /// Mailets that call out only describe what they would do.
    pub dry_run: bool,
    /// The messages.
    pub files: Vec<PathBuf>,
}

/// Replays every file; returns the printed trace and whether every mail was processed
/// without a propagated error.
pub async fn run(options: &ReplayOptions) -> anyhow::Result<(String, bool)> {
    let conf = ConfDir::load(&options.conf_dir)?;
    let mut ctx = MailetContext::new(&conf);
    ctx.dry_run = options.dry_run;
    let container = Container::build(&conf.container, &ctx, crate::server::loaders())?;
    let mut out = String::new();
    let mut all_ok = true;
    for (i, file) in options.files.iter().enumerate() {
        let message =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut mail = envelope(options, message, file)?;
        mail.name = format!("replay-{}", i + 1);
        all_ok &= replay_one(&container, mail, file, &mut out).await;
    }
    Ok((out, all_ok))
}

fn envelope(options: &ReplayOptions, message: Vec<u8>, file: &Path) -> anyhow::Result<Mail> {
    let parsed = MessageParser::new()
        .with_address_headers()
        .parse_headers(&message);
    let header_addresses = |a: Option<&Address>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address.as_deref().map(String::from))
                .collect()
        })
        .unwrap_or_default()
    };
    let sender = match &options.from {
        Some(f) if f.trim() == "<>" => None,
        Some(f) => Some(MailAddress::parse(f).map_err(|e| anyhow::anyhow!("--from: {e}"))?),
        None => parsed
            .as_ref()
            .and_then(|m| header_addresses(m.from()).into_iter().next())
            .and_then(|a| MailAddress::parse(&a).ok()),
    };
    let recipients: Vec<String> = if options.to.is_empty() {
        let mut r = Vec::new();
        if let Some(m) = &parsed {
            r.extend(header_addresses(m.to()));
            r.extend(header_addresses(m.cc()));
        }
        r
    } else {
        options.to.clone()
    };
    let recipients = recipients
        .iter()
        .map(|r| MailAddress::parse(r).map_err(|e| anyhow::anyhow!("recipient {r}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if recipients.is_empty() {
        anyhow::bail!(
            "{}: no recipients: give --to ADDRESS (or a To:/Cc: header)",
            file.display()
        );
    }
    Ok(Mail::new(sender, recipients, message))
}

fn short(value: &str) -> String {
    let one_line = value.replace("\r\n", "\\r\\n").replace('\n', "\\n");
    if one_line.chars().count() > 120 {
        format!(
            "{}… ({} bytes)",
            one_line.chars().take(120).collect::<String>(),
            value.len()
        )
    } else {
        one_line
    }
}

async fn replay_one(container: &Container, mail: Mail, file: &Path, out: &mut String) -> bool {
    let _ = writeln!(
        out,
        "mail {} ({}): from {} to {}",
        mail.name,
        file.display(),
        mail.sender_text(),
        mail.recipients_text(", ")
    );
    let mut run = Run::traced();
    let result = container.process(mail, &mut run).await;
    for e in run.trace.as_deref().unwrap_or_default() {
        let _ = writeln!(
            out,
            "  [{}] {} {} {} recipients: {}",
            e.processor,
            e.mail,
            e.matcher,
            e.mailet,
            e.recipients.join(", ")
        );
        for (name, value) in &e.changes {
            match value {
                Some(v) => {
                    let _ = writeln!(out, "      attribute {name} = {}", short(v));
                }
                None => {
                    let _ = writeln!(out, "      attribute {name} removed");
                }
            }
        }
        if let Some((before, after)) = e.message_change {
            let _ = writeln!(out, "      message changed: {before} -> {after} bytes");
        }
        if let Some(err) = &e.error {
            let _ = writeln!(out, "      error: {}", short(err));
        }
        if e.state != e.processor {
            let _ = writeln!(out, "      state -> {}", e.state);
        }
    }
    for job in &run.jobs {
        for target in job.targets() {
            let _ = writeln!(
                out,
                "  outbox job: {} for {} {}",
                job.kind,
                target,
                short(&job.payload.to_string())
            );
        }
    }
    match result {
        Ok(()) => {
            for end in &run.endings {
                let how = if end.how == "ghost" {
                    format!("ghost in {}", end.processor)
                } else {
                    format!("reached the end of processor {} (deleted)", end.processor)
                };
                let _ = writeln!(out, "  final: {} {how}", end.mail);
            }
            true
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "  final: propagated error, the spooler would retry the mail: {e:#}"
            );
            false
        }
    }
}
