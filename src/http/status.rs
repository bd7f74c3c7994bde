//! `GET /metrics` (Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it) and
//! `GET /api/status` (JSON for humans and scripts).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Admin;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::broker::{self, Broker, BrokerError, RETRY_STEPS};
use crate::mail::now_ms;
use crate::observe::Sampled;
use crate::observe::metrics::{OPENMETRICS_TEXT, PROMETHEUS_TEXT};
use crate::outbox::store::{DEAD, pending_since, pending_targets, rows};
use crate::store::{Store, StoreError};

/// Outbox sizes, read from the store.
pub(super) struct OutboxCounts {
    pub pending: u64,
    pub dead: u64,
    /// The earliest due time of a pending job (readiness only: it reads every job).
    pub oldest_due_ms: Option<u64>,
}

/// Pending and dead job counts, plus the oldest due time.
pub(super) fn outbox_counts(store: &Store) -> Result<OutboxCounts, StoreError> {
    Ok(OutboxCounts {
        pending: pending_targets(store)?,
        dead: rows(store, DEAD)?,
        oldest_due_ms: pending_since(store, 0)?.into_iter().map(|(_, at)| at).min(),
    })
}

/// Pending and dead outbox jobs: the store's tables, or on RabbitMQ the messages ready in
/// the outbox queue and its retry queues, and in its dead-letter queue (the same figures on
/// every node: the queues are shared).
async fn outbox_sizes(admin: &Admin) -> (u64, u64) {
    let Some(broker) = &admin.broker else {
        return (
            pending_targets(&admin.store).unwrap_or(0),
            rows(&admin.store, DEAD).unwrap_or(0),
        );
    };
    let counted = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        broker_outbox_sizes(broker, &admin.outbox_queue),
    )
    .await;
    match counted {
        Ok(Ok(sizes)) => sizes,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cannot count the outbox queues");
            (0, 0)
        }
        Err(_) => {
            tracing::debug!("the broker did not tell the outbox queue depths within 5 s");
            (0, 0)
        }
    }
}

async fn broker_outbox_sizes(broker: &Broker, queue: &str) -> Result<(u64, u64), BrokerError> {
    let channel = broker.channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut depths = Vec::with_capacity(RETRY_STEPS.len() + 2);
    let queues = std::iter::once(queue.to_string())
        .chain(RETRY_STEPS.iter().map(|s| broker::retry_queue(queue, *s)))
        .chain(std::iter::once(broker::dead_queue(queue)));
    for name in queues {
        let declared = channel
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await;
        depths.push(u64::from(declared?.message_count()));
    }
    let _ = channel.close(200, "counted".into()).await;
    let dead = depths.pop().unwrap_or(0);
    Ok((depths.iter().sum(), dead))
}

async fn sample(admin: &Admin) -> Sampled {
    let now = now_ms();
    let (outbox_pending, outbox_dead) = outbox_sizes(admin).await;
    Sampled {
        spool_depth: admin.spool.depth() as u64,
        spool_oldest_age_secs: admin
            .spool
            .oldest_received_ms()
            .map_or(0, |at| now.saturating_sub(at) / 1000),
        outbox_pending,
        outbox_dead,
        uptime_secs: admin.started.elapsed().as_secs(),
    }
}

/// The exposition: OpenMetrics when the `Accept` header names it (Prometheus asks for it
/// first), else the Prometheus text format 0.0.4 that every scraper and `curl` reads.
pub(super) async fn prometheus(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let sampled = sample(&admin).await;
    let (content_type, body) = if openmetrics {
        (OPENMETRICS_TEXT, admin.metrics.render_openmetrics(&sampled))
    } else {
        (PROMETHEUS_TEXT, admin.metrics.render(&sampled))
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// RFC 3339 (UTC) of a time in ms since epoch.
fn rfc3339(ms: u64) -> String {
    mail_parser::DateTime::from_timestamp((ms / 1000) as i64).to_rfc3339()
}

/// Uptime, version, configuration summary, queues, counters, recent errors and clients.
pub(super) async fn status(State(admin): State<Arc<Admin>>) -> Json<serde_json::Value> {
    let sampled = sample(&admin).await;
    let errors: Vec<_> = admin
        .errors
        .recent()
        .into_iter()
        .map(|e| {
            json!({
                "at": rfc3339(e.at_ms), "at_ms": e.at_ms, "source": e.source,
                "mail": e.mail, "reason": e.reason,
            })
        })
        .collect();
    let clients: Vec<_> = admin
        .metrics
        .clients
        .list()
        .into_iter()
        .map(|c| {
            json!({
                "ip": c.ip.to_string(), "mails": c.mails,
                "last_seen": rfc3339(c.last_seen_ms), "last_seen_ms": c.last_seen_ms,
            })
        })
        .collect();
    let started_ms = now_ms().saturating_sub(admin.started.elapsed().as_millis() as u64);
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(started_ms),
        "uptime_secs": sampled.uptime_secs,
        "config": admin.config_summary,
        "queues": {
            "spool": sampled.spool_depth,
            "spool_oldest_age_secs": sampled.spool_oldest_age_secs,
            "outbox_pending": sampled.outbox_pending,
            "outbox_dead": sampled.outbox_dead,
        },
        "counters": admin.metrics.status_counters(),
        "errors": errors,
        "clients": clients,
        "sources": crate::consolidate::stats::status_json(),
    }))
}
