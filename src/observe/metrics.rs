//! The counters, gauges and histograms of mailetd, kept and exposed by the
//! `prometheus-client` crate.
//!
//! A [`Metrics`] owns its registry: the server creates one (or takes [`Metrics::process`])
//! and hands it to the components, a test makes a fresh one with [`Metrics::new`] and sees
//! only its own counts. Producers push: ingest, the spooler, the pipeline, the mailets, the
//! DAV clients and the outbox call the recording methods below with their own labels; this
//! module imports nothing above it. Recording is a relaxed atomic add (plus a read-locked
//! map lookup for labelled series). Gauges cheaper to read than to maintain (spool and
//! outbox depths) are sampled when `/metrics` is scraped and passed in as a [`Sampled`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::status::Clients;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// The iTIP methods of RFC 5546, the only METHOD values that become a label.
pub const ITIP_METHODS: [&str; 8] = [
    "PUBLISH",
    "REQUEST",
    "REPLY",
    "ADD",
    "CANCEL",
    "REFRESH",
    "COUNTER",
    "DECLINECOUNTER",
];

/// The `method` label of an iTIP METHOD value: one of [`ITIP_METHODS`], `other` for anything
/// else a mail may say (a label per random METHOD would grow `/metrics` without bound), `-`
/// for jobs without one.
pub fn itip_method_label(method: Option<&str>) -> &'static str {
    match method {
        None => "-",
        Some(m) => ITIP_METHODS
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(m.trim()))
            .unwrap_or("other"),
    }
}

/// The outcomes of `caldav-itip` jobs, exposed from the start.
pub const CALDAV_ITIP_OUTCOMES: [&str; 5] = ["no_action", "added", "updated", "error", "conflicts"];

fn latency() -> Histogram {
    Histogram::new(BUCKETS)
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MailetLabels {
    processor: String,
    mailet: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    kind: String,
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: String,
}

/// Values read when `/metrics` is scraped.
#[derive(Clone, Debug, Default)]
pub struct Sampled {
    /// Mails in the spool.
    pub spool_depth: u64,
    /// Seconds since the oldest spooled mail was received (0 when empty).
    pub spool_oldest_age_secs: u64,
    /// Outbox jobs waiting.
    pub outbox_pending: u64,
    /// Outbox jobs given up.
    pub outbox_dead: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
}

/// Every metric of one mailetd process, with the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    uptime: Gauge,
    connections_current: Gauge,
    connections: Counter,
    connections_refused: Family<ReasonLabel, Counter>,
    refused_total: AtomicU64,
    mails_accepted: Counter,
    smtp_rejections: Family<CodeLabel, Counter>,
    rejections_total: AtomicU64,
    spool_depth: Gauge,
    spool_oldest_age: Gauge,
    mails_processed: Family<OutcomeLabel, Counter>,
    mailet_runs: Family<MailetLabels, Counter>,
    mailet_errors: Family<MailetLabels, Counter>,
    mailet_duration: Latencies<MailetLabels>,
    outbox_attempts: Family<AttemptLabels, Counter>,
    outbox_duration: Latencies<KindLabel>,
    outbox_pending: Gauge,
    outbox_dead: Gauge,
    contacts_collected: Counter,
    contact_cache_hits: Counter,
    contact_cache_misses: Counter,
    user_cache_hits: Counter,
    user_cache_misses: Counter,
    user_cache_hit_ratio: Gauge<f64, AtomicU64>,
    user_lookup_duration: Histogram,
    metrics_mailet: Family<MetricLabel, Counter>,
    mime_parts_undecodable: Counter,
    itip_skipped: Family<ReasonLabel, Counter>,
    caldav_itip_outcomes: Family<OutcomeLabel, Counter>,
    /// Mails accepted per client address (`/api/status`).
    pub clients: Clients,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

static PROCESS: LazyLock<Arc<Metrics>> = LazyLock::new(|| Arc::new(Metrics::new()));

impl Metrics {
    /// A fresh set of metrics, every counter at 0, with its own registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoders add it (OpenMetrics names
        // the family without it, the 0.0.4 text format with it).
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("mailetd_build_info", "Build information", build_info);
        let m = Metrics {
            uptime: Gauge::default(),
            connections_current: Gauge::default(),
            connections: Counter::default(),
            connections_refused: Family::default(),
            refused_total: AtomicU64::new(0),
            mails_accepted: Counter::default(),
            smtp_rejections: Family::default(),
            rejections_total: AtomicU64::new(0),
            spool_depth: Gauge::default(),
            spool_oldest_age: Gauge::default(),
            mails_processed: Family::default(),
            mailet_runs: Family::default(),
            mailet_errors: Family::default(),
            mailet_duration: Family::new_with_constructor(latency),
            outbox_attempts: Family::default(),
            outbox_duration: Family::new_with_constructor(latency),
            outbox_pending: Gauge::default(),
            outbox_dead: Gauge::default(),
            contacts_collected: Counter::default(),
            contact_cache_hits: Counter::default(),
            contact_cache_misses: Counter::default(),
            user_cache_hits: Counter::default(),
            user_cache_misses: Counter::default(),
            user_cache_hit_ratio: Gauge::default(),
            user_lookup_duration: latency(),
            metrics_mailet: Family::default(),
            mime_parts_undecodable: Counter::default(),
            itip_skipped: Family::default(),
            caldav_itip_outcomes: Family::default(),
            clients: Clients::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "mailetd_uptime_seconds",
            "Seconds since the process started",
            m.uptime.clone(),
        );
        r.register(
            "mailetd_smtp_connections_current",
            "SMTP sessions open now",
            m.connections_current.clone(),
        );
        r.register(
            "mailetd_smtp_connections",
            "SMTP connections accepted for a session",
            m.connections.clone(),
        );
        r.register(
            "mailetd_smtp_connections_refused",
            "SMTP connections refused, by reason (unauthorized, connectionLimit, connectionLimitPerIP)",
            m.connections_refused.clone(),
        );
        r.register(
            "mailetd_smtp_mails_accepted",
            "Mails answered 250 once durably spooled",
            m.mails_accepted.clone(),
        );
        r.register(
            "mailetd_smtp_rejections",
            "SMTP replies with a 4xx or 5xx code, by code",
            m.smtp_rejections.clone(),
        );
        r.register(
            "mailetd_spool_depth",
            "Mails in the spool (received, not yet fully processed)",
            m.spool_depth.clone(),
        );
        r.register(
            "mailetd_spool_oldest_age_seconds",
            "Age of the oldest mail in the spool",
            m.spool_oldest_age.clone(),
        );
        r.register(
            "mailetd_mails_processed",
            "Mails released by the spooler, by outcome (done, retry, error_repository, poison)",
            m.mails_processed.clone(),
        );
        r.register(
            "mailetd_mailet_runs",
            "Mailet runs, by processor and mailet",
            m.mailet_runs.clone(),
        );
        r.register(
            "mailetd_mailet_errors",
            "Mailet runs that failed, by processor and mailet",
            m.mailet_errors.clone(),
        );
        r.register(
            "mailetd_mailet_duration_seconds",
            "Mailet run time, by processor and mailet",
            m.mailet_duration.clone(),
        );
        r.register(
            "mailetd_outbox_attempts",
            "Outbox delivery attempts, by kind, iTIP method and outcome (done, retry, dead)",
            m.outbox_attempts.clone(),
        );
        r.register(
            "mailetd_outbox_attempt_duration_seconds",
            "Outbox delivery attempt time, by kind",
            m.outbox_duration.clone(),
        );
        r.register(
            "mailetd_outbox_pending",
            "Outbox jobs waiting for delivery",
            m.outbox_pending.clone(),
        );
        r.register(
            "mailetd_outbox_dead_letters",
            "Outbox jobs given up (dead letters)",
            m.outbox_dead.clone(),
        );
        r.register(
            "mailetd_contacts_collected",
            "Contacts confirmed in an address book (written, or found there already)",
            m.contacts_collected.clone(),
        );
        r.register(
            "mailetd_contact_cache_hits",
            "Contacts found in the known-contacts cache (already collected: nothing sent)",
            m.contact_cache_hits.clone(),
        );
        r.register(
            "mailetd_contact_cache_misses",
            "Contacts not in the known-contacts cache (the DAV server is asked)",
            m.contact_cache_misses.clone(),
        );
        r.register(
            "mailetd_user_lookup_cache_hits",
            "User lookups answered from the cache",
            m.user_cache_hits.clone(),
        );
        r.register(
            "mailetd_user_lookup_cache_misses",
            "User lookups that asked the OpenPaaS API",
            m.user_cache_misses.clone(),
        );
        r.register(
            "mailetd_user_lookup_cache_hit_ratio",
            "Share of user lookups answered from the cache",
            m.user_cache_hit_ratio.clone(),
        );
        r.register(
            "mailetd_user_lookup_duration_seconds",
            "OpenPaaS user API lookup time",
            m.user_lookup_duration.clone(),
        );
        r.register(
            "mailetd_metrics_mailet",
            "Counters of the MetricsMailet mailets, by metricName",
            m.metrics_mailet.clone(),
        );
        r.register(
            "mailetd_mime_parts_undecodable",
            "MIME parts that could not be transfer-decoded (dropped, logged at WARN)",
            m.mime_parts_undecodable.clone(),
        );
        r.register(
            "mailetd_itip_skipped",
            "Calendars CalDavCollect did not pass on, by reason (not_itip: PUBLISH or no METHOD without allowPublic; no_event: no VEVENT for esn-sabre)",
            m.itip_skipped.clone(),
        );
        r.register(
            "mailetd_caldav_itip_outcomes",
            "iTIP messages applied by mailetd to standard CalDAV calendars, by outcome (no_action, added, updated, error, conflicts retried)",
            m.caldav_itip_outcomes.clone(),
        );
        for outcome in CALDAV_ITIP_OUTCOMES {
            let _ = m
                .caldav_itip_outcomes
                .get_or_create(&OutcomeLabel { outcome });
        }
        Metrics { registry, ..m }
    }

    /// The metrics of this process, for the components that are not handed an instance
    /// (the DAV clients, ingest and the outbox workers, whose constructors other code and
    /// tests call directly). The server exposes this instance.
    pub fn process() -> Arc<Metrics> {
        PROCESS.clone()
    }

    /// An SMTP session started.
    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_current.inc();
    }

    /// An SMTP session ended.
    pub fn connection_closed(&self) {
        self.connections_current.dec();
    }

    /// A connection was turned away (`unauthorized`, `connectionLimit`, `connectionLimitPerIP`).
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
        self.refused_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A mail was answered 250 (durably spooled).
    pub fn mail_accepted(&self) {
        self.mails_accepted.inc();
    }

    /// An SMTP reply with a 4xx or 5xx code was sent.
    pub fn smtp_rejection(&self, code: u16) {
        self.smtp_rejections
            .get_or_create(&CodeLabel { code })
            .inc();
        self.rejections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// The spooler released a mail (`done`, `retry`, `error_repository`, `poison`).
    pub fn mail_processed(&self, outcome: &'static str) {
        self.mails_processed
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// One mailet run finished.
    pub fn mailet_run(&self, processor: &str, mailet: &str, elapsed: Duration, failed: bool) {
        let labels = MailetLabels {
            processor: processor.to_string(),
            mailet: mailet.to_string(),
        };
        self.mailet_runs.get_or_create(&labels).inc();
        // created at 0 with the first run, so that a rate of errors has a series to work on
        let errors = self.mailet_errors.get_or_create(&labels);
        if failed {
            errors.inc();
        }
        drop(errors);
        self.mailet_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// One outbox attempt finished: counted by job kind, iTIP method (the job's METHOD, made
    /// a bounded label by [`itip_method_label`]) and outcome (`done`, `retry`, `dead`).
    pub fn outbox_attempt(
        &self,
        kind: &str,
        method: Option<&str>,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.outbox_attempts
            .get_or_create(&AttemptLabels {
                kind: kind.to_string(),
                method: itip_method_label(method),
                outcome,
            })
            .inc();
        self.outbox_duration
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A contact was confirmed in an address book (written, or found there already).
    pub fn contact_collected(&self) {
        self.contacts_collected.inc();
    }

    /// Answers of the known-contacts cache (true: already collected).
    pub fn known_contacts(&self, answers: &[bool]) {
        let hits = answers.iter().filter(|known| **known).count() as u64;
        self.contact_cache_hits.inc_by(hits);
        self.contact_cache_misses
            .inc_by(answers.len() as u64 - hits);
    }

    /// A user lookup was answered from the cache.
    pub fn user_cache_hit(&self) {
        self.user_cache_hits.inc();
    }

    /// A user lookup asked the OpenPaaS API, which took `elapsed`.
    pub fn user_cache_miss(&self, elapsed: Duration) {
        self.user_cache_misses.inc();
        self.user_lookup_duration.observe(elapsed.as_secs_f64());
    }

    /// Makes the `MetricsMailet` counter `metric` show up (at 0).
    pub fn metrics_mailet_declared(&self, metric: &str) {
        let _ = self.metrics_mailet.get_or_create(&MetricLabel {
            metric: metric.to_string(),
        });
    }

    /// A mail reached the `MetricsMailet` counting in `metric`.
    pub fn metrics_mailet_count(&self, metric: &str) {
        self.metrics_mailet
            .get_or_create(&MetricLabel {
                metric: metric.to_string(),
            })
            .inc();
    }

    /// The count of the `MetricsMailet` counter `metric` (0 when it does not exist).
    pub fn metrics_mailet_value(&self, metric: &str) -> u64 {
        self.metrics_mailet
            .get(&MetricLabel {
                metric: metric.to_string(),
            })
            .map_or(0, |c| c.get())
    }

    /// A MIME part could not be transfer-decoded.
    pub fn mime_part_undecodable(&self) {
        self.mime_parts_undecodable.inc();
    }

    /// Undecodable MIME parts so far.
    pub fn mime_parts_undecodable(&self) -> u64 {
        self.mime_parts_undecodable.get()
    }

    /// `CalDavCollect` did not pass a calendar on (`not_itip`, `no_event`).
    pub fn itip_skipped(&self, reason: &'static str) {
        self.itip_skipped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A `caldav-itip` job ended (`no_action`, `added`, `updated`, `error`) or met a
    /// conflict (`conflicts`).
    pub fn caldav_itip_outcome(&self, outcome: &'static str) {
        self.caldav_itip_outcomes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The counters `/api/status` shows.
    pub fn status_counters(&self) -> serde_json::Value {
        serde_json::json!({
            "connections_current": self.connections_current.get().max(0),
            "connections_total": self.connections.get(),
            "connections_refused": self.refused_total.load(Ordering::Relaxed),
            "mails_accepted": self.mails_accepted.get(),
            "smtp_rejections": self.rejections_total.load(Ordering::Relaxed),
            "mails_processed": self
                .mails_processed
                .get(&OutcomeLabel { outcome: "done" })
                .map_or(0, |c| c.get()),
            "contacts_collected": self.contacts_collected.get(),
        })
    }

    fn sample(&self, sampled: &Sampled) {
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.uptime, sampled.uptime_secs);
        gauge(&self.spool_depth, sampled.spool_depth);
        gauge(&self.spool_oldest_age, sampled.spool_oldest_age_secs);
        gauge(&self.outbox_pending, sampled.outbox_pending);
        gauge(&self.outbox_dead, sampled.outbox_dead);
        let (hits, misses) = (self.user_cache_hits.get(), self.user_cache_misses.get());
        self.user_cache_hit_ratio.set(if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        });
    }

    /// The Prometheus text exposition (format 0.0.4, [`PROMETHEUS_TEXT`]).
    pub fn render(&self, sampled: &Sampled) -> String {
        self.sample(sampled);
        let mut out = String::with_capacity(16384);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The OpenMetrics text exposition ([`OPENMETRICS_TEXT`]), ending with `# EOF`.
    pub fn render_openmetrics(&self, sampled: &Sampled) -> String {
        self.sample(sampled);
        let mut out = String::with_capacity(16384);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The content type of [`Metrics::render`].
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The content type of [`Metrics::render_openmetrics`].
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn renders_labelled_counters_and_cumulative_histograms() {
        let m = Metrics::new();
        m.smtp_rejection(552);
        m.smtp_rejection(552);
        m.connection_refused("unauthorized");
        m.mailet_run("root", "Null", Duration::from_micros(300), false);
        m.mailet_run("root", "Null", Duration::from_millis(20), true);
        m.mailet_run("root", "Null", Duration::from_secs(60), false);
        let out = m.render(&Sampled::default());
        assert_eq!(
            value(&out, "mailetd_smtp_rejections_total{code=\"552\"}"),
            Some("2"),
            "{out}"
        );
        assert!(out.contains("# TYPE mailetd_smtp_rejections_total counter\n"));
        let mailet = "processor=\"root\",mailet=\"Null\"";
        assert_eq!(
            value(&out, &format!("mailetd_mailet_runs_total{{{mailet}}}")),
            Some("3")
        );
        assert_eq!(
            value(&out, &format!("mailetd_mailet_errors_total{{{mailet}}}")),
            Some("1")
        );
        let bucket = |le: &str| {
            value(
                &out,
                &format!("mailetd_mailet_duration_seconds_bucket{{{mailet},le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.0005"), Some("1"), "{out}");
        assert_eq!(bucket("0.025"), Some("2"));
        assert_eq!(bucket("30"), Some("2"));
        assert_eq!(bucket("+Inf"), Some("3"));
        assert_eq!(
            value(
                &out,
                &format!("mailetd_mailet_duration_seconds_count{{{mailet}}}")
            ),
            Some("3")
        );
        let status = m.status_counters();
        assert_eq!(status["smtp_rejections"], 2);
        assert_eq!(status["connections_refused"], 1);
    }

    #[test]
    fn every_documented_metric_is_exposed_from_the_start() {
        let out = Metrics::new().render(&Sampled {
            uptime_secs: 7,
            ..Sampled::default()
        });
        for name in [
            "mailetd_build_info{version=\"",
            "mailetd_uptime_seconds 7",
            "mailetd_smtp_connections_current 0",
            "mailetd_smtp_connections_total 0",
            "mailetd_smtp_mails_accepted_total 0",
            "mailetd_spool_depth 0",
            "mailetd_outbox_pending 0",
            "mailetd_outbox_dead_letters 0",
            "mailetd_contacts_collected_total 0",
            "mailetd_user_lookup_cache_hit_ratio 0",
            "mailetd_user_lookup_duration_seconds_count 0",
            "mailetd_mime_parts_undecodable_total 0",
            "mailetd_caldav_itip_outcomes_total{outcome=\"conflicts\"} 0",
        ] {
            assert!(out.contains(name), "{name} missing from\n{out}");
        }
        // the crate ends each help text with a period
        assert!(out.contains("# HELP mailetd_spool_depth Mails in the spool (received, not yet fully processed).\n"), "{out}");
    }

    #[test]
    fn openmetrics_names_counter_families_without_total() {
        let m = Metrics::new();
        m.mail_accepted();
        let out = m.render_openmetrics(&Sampled::default());
        assert!(
            out.contains("# TYPE mailetd_smtp_mails_accepted counter\n"),
            "{out}"
        );
        assert_eq!(value(&out, "mailetd_smtp_mails_accepted_total"), Some("1"));
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn instances_do_not_share_counts() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.metrics_mailet_count("x");
        a.metrics_mailet_count("x");
        b.metrics_mailet_declared("x");
        assert_eq!(a.metrics_mailet_value("x"), 2);
        assert_eq!(b.metrics_mailet_value("x"), 0);
    }

    #[test]
    fn the_method_label_is_bounded() {
        assert_eq!(itip_method_label(Some("reply")), "REPLY");
        assert_eq!(itip_method_label(Some(" declinecounter")), "DECLINECOUNTER");
        assert_eq!(itip_method_label(Some("X-RANDOM-4711")), "other");
        assert_eq!(itip_method_label(None), "-");
        let m = Metrics::new();
        m.outbox_attempt("esn-itip", Some("X-RANDOM-4711"), "done", Duration::ZERO);
        let out = m.render(&Sampled::default());
        assert!(
            out.contains(
                "mailetd_outbox_attempts_total{kind=\"esn-itip\",method=\"other\",outcome=\"done\"} 1\n"
            ),
            "{out}"
        );
    }
}
