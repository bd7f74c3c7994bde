//! `mailetd outbox list|retry|purge`: shows and acts on pending jobs and dead letters.
//! The embedded store is a single-writer file, so there they run while `mailetd serve` is
//! stopped; on RabbitMQ they run while the nodes run.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::config::Settings;
use crate::config::settings::SpoolBackend;
use crate::mail::job::OutboxJob;
use crate::mail::now_ms;
use crate::outbox::admin::{EmbeddedOutbox, OutboxAdmin};
use crate::outbox::rabbitmq::BrokerOutbox;
use crate::outbox::store::JobState;
use crate::store::Store;

/// What to do with the outbox.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum OutboxAction {
    /// Lists pending jobs and dead letters (id, kind, target, attempts, next attempt, last error).
    List,
    /// Requeues dead letters (all, or the given ids) for delivery at the next start.
    Retry {
        /// Dead-letter ids; none means all.
        ids: Vec<u64>,
    },
    /// Deletes dead letters (all, or the given ids); with --pending, pending jobs instead.
    Purge {
        /// Purge pending jobs instead of dead letters.
        #[arg(long)]
        pending: bool,
        /// Job ids; none means all.
        ids: Vec<u64>,
    },
}

/// Runs `action` on the store of the configuration in `conf_dir`; returns the printout.
pub async fn run(conf_dir: &Path, action: OutboxAction) -> anyhow::Result<String> {
    let settings = Settings::load(conf_dir)?;
    let outbox: Box<dyn OutboxAdmin> = match settings.spool.backend {
        SpoolBackend::Embedded => Box::new(EmbeddedOutbox(open_store(&settings)?)),
        SpoolBackend::Rabbitmq => {
            let broker = crate::broker::Broker::new(&settings.spool);
            broker
                .connect()
                .await
                .context("cannot reach the outbox on RabbitMQ ([spool] uri)")?;
            Box::new(BrokerOutbox::new(broker, &settings.spool.outbox_queue))
        }
    };
    let out = match action {
        OutboxAction::List => {
            let pending = outbox.list(JobState::Pending).await?;
            let dead = outbox.list(JobState::Dead).await?;
            format_listing(&pending, &dead, now_ms())
        }
        OutboxAction::Retry { ids } => {
            let n = outbox.retry(ids).await?;
            format!("{n} dead letter(s) requeued\n")
        }
        OutboxAction::Purge { pending, ids } => {
            let state = if pending {
                JobState::Pending
            } else {
                JobState::Dead
            };
            let n = outbox.purge(state, ids).await?;
            let what = if pending {
                "pending job(s)"
            } else {
                "dead letter(s)"
            };
            format!("{n} {what} deleted\n")
        }
    };
    Ok(out)
}

fn open_store(settings: &Settings) -> anyhow::Result<std::sync::Arc<Store>> {
    let path = settings.data_dir.join("spool.redb");
    if !path.exists() {
        // Not created here: a typo in --conf should not leave an empty store behind.
        anyhow::bail!(
            "no store at {} (wrong --conf, or mailetd never ran with this configuration)",
            path.display()
        );
    }
    Store::open(&path).with_context(|| {
        format!(
            "cannot open the outbox in {} (is `mailetd serve` running? stop it first)",
            path.display()
        )
    })
}

/// A job's target; a job for many recipients not split into their jobs yet shows how many.
fn target_label(job: &OutboxJob) -> String {
    match job.fan_out.len() {
        0 => job.target.clone(),
        more => format!("{} and {more} more (not split yet)", job.target),
    }
}

/// The `list` printout. Payloads are not shown: they hold mail content, and nothing in a
/// job is a secret, but a listing is for operators, not for reading invitations.
pub fn format_listing(pending: &[OutboxJob], dead: &[OutboxJob], now: u64) -> String {
    let mut out = String::new();
    let header = "ID\tKIND\tTARGET\tATTEMPTS\tNEXT ATTEMPT\tLAST ERROR";
    let targets: usize = pending.iter().map(OutboxJob::target_count).sum();
    let _ = writeln!(out, "pending: {targets}");
    if !pending.is_empty() {
        let _ = writeln!(out, "{header}");
    }
    for job in pending {
        let next = if job.next_attempt_ms <= now {
            "due".to_string()
        } else {
            utc(job.next_attempt_ms)
        };
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{next}\t{}",
            job.id,
            job.kind,
            target_label(job),
            job.attempts,
            last_error(job)
        );
    }
    let _ = writeln!(out, "dead: {}", dead.len());
    if !dead.is_empty() {
        let _ = writeln!(out, "{header}");
    }
    for job in dead {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t-\t{}",
            job.id,
            job.kind,
            job.target,
            job.attempts,
            last_error(job)
        );
    }
    out
}

/// The last error, URL passwords hidden (a store written by an older version may hold one).
fn last_error(job: &OutboxJob) -> std::borrow::Cow<'_, str> {
    crate::config::secret::redact_urls(job.last_error.as_deref().unwrap_or("-"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for milliseconds since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_312_345_000), "2026-11-22T01:52:25Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn listing_shows_pending_and_dead_jobs() {
        let mut p = OutboxJob::new(
            "esn-itip",
            "bob@x.org",
            serde_json::json!({"body": "{\"ical\":\"SECRET-CONTENT\"}"}),
        );
        p.id = 7;
        p.attempts = 2;
        p.next_attempt_ms = 2_000;
        p.last_error = Some("HTTP 503: down".into());
        let mut d = OutboxJob::new("esn-itip", "eve@x.org", serde_json::json!({}));
        d.id = 3;
        d.attempts = 1;
        d.last_error = Some("ITIP /calendars/u1: HTTP 400: ".into());
        let text = format_listing(&[p], &[d], 1_000);
        assert!(text.contains("pending: 1\n"), "{text}");
        assert!(
            text.contains("7\tesn-itip\tbob@x.org\t2\t1970-01-01T00:00:02Z\tHTTP 503: down\n"),
            "{text}"
        );
        assert!(text.contains("dead: 1\n"), "{text}");
        assert!(
            text.contains("3\tesn-itip\teve@x.org\t1\t-\tITIP /calendars/u1: HTTP 400: \n"),
            "{text}"
        );
        assert!(!text.contains("SECRET-CONTENT"));
    }

    #[test]
    fn a_job_for_many_recipients_not_split_yet_counts_each() {
        let mut fan = OutboxJob::new("esn-itip", "r0@x.org", serde_json::json!({}));
        fan.id = 9;
        fan.fan_out = (1..100).map(|i| format!("r{i}@x.org")).collect();
        let text = format_listing(&[fan], &[], 1_000);
        assert!(text.contains("pending: 100\n"), "{text}");
        assert!(
            text.contains("9\tesn-itip\tr0@x.org and 99 more (not split yet)\t"),
            "{text}"
        );
    }
}
