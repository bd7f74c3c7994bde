//! Process-wide counters, gauges and histograms, rendered as Prometheus text.
//!
//! A handful of atomics per series: recording is one `fetch_add` (plus a read-locked map
//! lookup for labelled series), so ingest, the spooler and the outbox call it on every mail.
//! Gauges that are cheaper to read than to maintain (spool and outbox depths) are sampled
//! when `/metrics` is scraped and passed in as a [`Sampled`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A monotonic counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `delta`.
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram with fixed buckets ([`BUCKETS`]).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Series of one metric, by label values.
pub struct Family<T> {
    labels: &'static [&'static str],
    series: RwLock<BTreeMap<Vec<String>, Arc<T>>>,
}

impl<T: Default> Family<T> {
    const fn new(labels: &'static [&'static str]) -> Self {
        Family {
            labels,
            series: RwLock::new(BTreeMap::new()),
        }
    }

    /// The series for these label values (created at the first use).
    pub fn with(&self, values: &[&str]) -> Arc<T> {
        debug_assert_eq!(values.len(), self.labels.len());
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        if let Some(s) = self.series.read().unwrap().get(&key) {
            return s.clone();
        }
        self.series.write().unwrap().entry(key).or_default().clone()
    }

    fn snapshot(&self) -> Vec<(String, Arc<T>)> {
        self.series
            .read()
            .unwrap()
            .iter()
            .map(|(values, s)| (label_text(self.labels, values), s.clone()))
            .collect()
    }
}

impl Family<Counter> {
    /// The sum over all label values (tests and `/api/status`).
    pub fn total(&self) -> u64 {
        self.series.read().unwrap().values().map(|c| c.get()).sum()
    }
}

/// What is counted per mailet (one map lookup per run for all three).
#[derive(Default)]
pub struct MailetStats {
    /// Runs.
    pub runs: Counter,
    /// Runs that returned an error.
    pub errors: Counter,
    /// Run time.
    pub duration: Histogram,
}

/// Every metric mailetd keeps.
pub struct Metrics {
    /// SMTP connections open now.
    pub connections_current: Gauge,
    /// SMTP connections accepted for a session.
    pub connections_total: Counter,
    /// SMTP connections refused, by reason.
    pub connections_refused: Family<Counter>,
    /// Mails answered 250 (spooled).
    pub mails_accepted: Counter,
    /// SMTP replies of 4xx/5xx, by code.
    pub smtp_rejections: Family<Counter>,
    /// Mails released by the spooler, by outcome.
    pub mails_processed: Family<Counter>,
    /// Mailet runs, failures and run time, by processor and mailet.
    pub mailets: Family<MailetStats>,
    /// Outbox delivery attempts, by kind, iTIP method and outcome.
    pub outbox_attempts: Family<Counter>,
    /// Outbox attempt time, by kind.
    pub outbox_duration: Family<Histogram>,
    /// Contacts confirmed in an address book (written, or found there already).
    pub contacts_collected: Counter,
    /// "Contact already collected" answers found in the known-contacts cache.
    pub contact_cache_hits: Counter,
    /// Contacts not in the known-contacts cache (the DAV server is asked).
    pub contact_cache_misses: Counter,
    /// User lookups answered from the cache.
    pub user_cache_hits: Counter,
    /// User lookups that asked the OpenPaaS API.
    pub user_cache_misses: Counter,
    /// OpenPaaS API lookup time.
    pub user_lookup_duration: Histogram,
    /// MIME parts `MimeDecodingMailet` could not decode (dropped).
    pub mime_parts_undecodable: Counter,
    /// Calendars `CalDavCollect` did not pass on, by reason (`not_itip`: PUBLISH or no
    /// METHOD without `allowPublic`; `no_event`: no VEVENT for esn-sabre).
    pub itip_skipped: Family<Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    connections_current: Gauge::default(),
    connections_total: Counter::default(),
    connections_refused: Family::new(&["reason"]),
    mails_accepted: Counter::default(),
    smtp_rejections: Family::new(&["code"]),
    mails_processed: Family::new(&["outcome"]),
    mailets: Family::new(&["processor", "mailet"]),
    outbox_attempts: Family::new(&["kind", "method", "outcome"]),
    outbox_duration: Family::new(&["kind"]),
    contacts_collected: Counter::default(),
    contact_cache_hits: Counter::default(),
    contact_cache_misses: Counter::default(),
    user_cache_hits: Counter::default(),
    user_cache_misses: Counter::default(),
    user_lookup_duration: Histogram::default(),
    mime_parts_undecodable: Counter::default(),
    itip_skipped: Family::new(&["reason"]),
});

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// One mailet run finished.
pub fn mailet_run(processor: &str, mailet: &str, elapsed: Duration, failed: bool) {
    let stats = metrics().mailets.with(&[processor, mailet]);
    stats.runs.inc();
    stats.duration.observe(elapsed);
    if failed {
        stats.errors.inc();
    }
}

/// Answers of the known-contacts cache (true: already collected).
pub fn known_contacts(answers: &[bool]) {
    let m = metrics();
    for known in answers {
        if *known {
            m.contact_cache_hits.inc();
        } else {
            m.contact_cache_misses.inc();
        }
    }
}

/// One outbox attempt finished: counts it by kind, iTIP method (`-` for other jobs) and
/// outcome (`done`, `retry`, `dead`).
pub fn outbox_attempt(job: &crate::outbox::OutboxJob, outcome: &str, elapsed: Duration) {
    let method = itip_method(&job.payload);
    let m = metrics();
    m.outbox_attempts.with(&[&job.kind, method, outcome]).inc();
    m.outbox_duration.with(&[&job.kind]).observe(elapsed);
}

/// The iTIP methods of RFC 5546, the only METHOD values that become a label.
const ITIP_METHODS: [&str; 8] = [
    "PUBLISH",
    "REQUEST",
    "REPLY",
    "ADD",
    "CANCEL",
    "REFRESH",
    "COUNTER",
    "DECLINECOUNTER",
];

/// The iTIP method of a job payload (`method`, inside the esn `document`, or inside the esn
/// `body` JSON) as a label:
/// one of [`ITIP_METHODS`], `other` for anything else a mail may say (a label per random
/// METHOD would grow `/metrics` without bound), `-` for jobs without one.
fn itip_method(payload: &serde_json::Value) -> &'static str {
    let body;
    let method = match payload
        .get("method")
        .or_else(|| payload.get("document")?.get("method"))
        .and_then(|m| m.as_str())
    {
        Some(m) => Some(m),
        None => {
            // the esn body, or the esn document as JSON text (see esn_itip::shared_payload)
            body = payload
                .get("body")
                .or_else(|| payload.get("document"))
                .and_then(|b| b.as_str())
                .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok());
            body.as_ref().and_then(|b| b.get("method")?.as_str())
        }
    };
    match method {
        None => "-",
        Some(m) => ITIP_METHODS
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(m.trim()))
            .unwrap_or("other"),
    }
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

/// The Prometheus text exposition of every metric.
pub fn render(sampled: &Sampled) -> String {
    let m = metrics();
    let mut out = String::with_capacity(8192);
    let info = format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    single(
        &mut out,
        "mailetd_build_info",
        "gauge",
        "Build information.",
        &info,
        1,
    );
    single(
        &mut out,
        "mailetd_uptime_seconds",
        "gauge",
        "Seconds since the process started.",
        "",
        sampled.uptime_secs,
    );
    single(
        &mut out,
        "mailetd_smtp_connections_current",
        "gauge",
        "SMTP sessions open now.",
        "",
        m.connections_current.get().max(0) as u64,
    );
    single(
        &mut out,
        "mailetd_smtp_connections_total",
        "counter",
        "SMTP connections accepted for a session.",
        "",
        m.connections_total.get(),
    );
    counters(
        &mut out,
        "mailetd_smtp_connections_refused_total",
        "SMTP connections refused, by reason (unauthorized, connectionLimit, connectionLimitPerIP).",
        &m.connections_refused,
    );
    single(
        &mut out,
        "mailetd_smtp_mails_accepted_total",
        "counter",
        "Mails answered 250 once durably spooled.",
        "",
        m.mails_accepted.get(),
    );
    counters(
        &mut out,
        "mailetd_smtp_rejections_total",
        "SMTP replies with a 4xx or 5xx code, by code.",
        &m.smtp_rejections,
    );
    single(
        &mut out,
        "mailetd_spool_depth",
        "gauge",
        "Mails in the spool (received, not yet fully processed).",
        "",
        sampled.spool_depth,
    );
    single(
        &mut out,
        "mailetd_spool_oldest_age_seconds",
        "gauge",
        "Age of the oldest mail in the spool.",
        "",
        sampled.spool_oldest_age_secs,
    );
    counters(
        &mut out,
        "mailetd_mails_processed_total",
        "Mails released by the spooler, by outcome (done, retry, error_repository, poison).",
        &m.mails_processed,
    );
    let mailets = m.mailets.snapshot();
    header(
        &mut out,
        "mailetd_mailet_runs_total",
        "counter",
        "Mailet runs, by processor and mailet.",
    );
    for (labels, s) in &mailets {
        let _ = writeln!(
            out,
            "mailetd_mailet_runs_total{{{labels}}} {}",
            s.runs.get()
        );
    }
    header(
        &mut out,
        "mailetd_mailet_errors_total",
        "counter",
        "Mailet runs that failed, by processor and mailet.",
    );
    for (labels, s) in &mailets {
        let _ = writeln!(
            out,
            "mailetd_mailet_errors_total{{{labels}}} {}",
            s.errors.get()
        );
    }
    header(
        &mut out,
        "mailetd_mailet_duration_seconds",
        "histogram",
        "Mailet run time, by processor and mailet.",
    );
    for (labels, s) in &mailets {
        histogram_lines(
            &mut out,
            "mailetd_mailet_duration_seconds",
            labels,
            &s.duration,
        );
    }
    counters(
        &mut out,
        "mailetd_outbox_attempts_total",
        "Outbox delivery attempts, by kind, iTIP method and outcome (done, retry, dead).",
        &m.outbox_attempts,
    );
    histograms(
        &mut out,
        "mailetd_outbox_attempt_duration_seconds",
        "Outbox delivery attempt time, by kind.",
        &m.outbox_duration,
    );
    single(
        &mut out,
        "mailetd_outbox_pending",
        "gauge",
        "Outbox jobs waiting for delivery.",
        "",
        sampled.outbox_pending,
    );
    single(
        &mut out,
        "mailetd_outbox_dead_letters",
        "gauge",
        "Outbox jobs given up (dead letters).",
        "",
        sampled.outbox_dead,
    );
    single(
        &mut out,
        "mailetd_contacts_collected_total",
        "counter",
        "Contacts confirmed in an address book (written, or found there already).",
        "",
        m.contacts_collected.get(),
    );
    single(
        &mut out,
        "mailetd_contact_cache_hits_total",
        "counter",
        "Contacts found in the known-contacts cache (already collected: nothing sent).",
        "",
        m.contact_cache_hits.get(),
    );
    single(
        &mut out,
        "mailetd_contact_cache_misses_total",
        "counter",
        "Contacts not in the known-contacts cache (the DAV server is asked).",
        "",
        m.contact_cache_misses.get(),
    );
    let (hits, misses) = (m.user_cache_hits.get(), m.user_cache_misses.get());
    single(
        &mut out,
        "mailetd_user_lookup_cache_hits_total",
        "counter",
        "User lookups answered from the cache.",
        "",
        hits,
    );
    single(
        &mut out,
        "mailetd_user_lookup_cache_misses_total",
        "counter",
        "User lookups that asked the OpenPaaS API.",
        "",
        misses,
    );
    let ratio = if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    };
    header(
        &mut out,
        "mailetd_user_lookup_cache_hit_ratio",
        "gauge",
        "Share of user lookups answered from the cache.",
    );
    let _ = writeln!(out, "mailetd_user_lookup_cache_hit_ratio {ratio}");
    header(
        &mut out,
        "mailetd_user_lookup_duration_seconds",
        "histogram",
        "OpenPaaS user API lookup time.",
    );
    histogram_lines(
        &mut out,
        "mailetd_user_lookup_duration_seconds",
        "",
        &m.user_lookup_duration,
    );
    header(
        &mut out,
        "mailetd_metrics_mailet_total",
        "counter",
        "Counters of the MetricsMailet mailets, by metricName.",
    );
    for (name, value) in crate::mailets::metric_counts() {
        let _ = writeln!(
            out,
            "mailetd_metrics_mailet_total{{metric=\"{}\"}} {value}",
            escape(&name)
        );
    }
    single(
        &mut out,
        "mailetd_mime_parts_undecodable_total",
        "counter",
        "MIME parts that could not be transfer-decoded (dropped, logged at WARN).",
        "",
        m.mime_parts_undecodable.get(),
    );
    counters(
        &mut out,
        "mailetd_itip_skipped_total",
        "Calendars CalDavCollect did not pass on, by reason (not_itip: PUBLISH or no METHOD without allowPublic; no_event: no VEVENT for esn-sabre).",
        &m.itip_skipped,
    );
    header(
        &mut out,
        "mailetd_caldav_itip_outcomes_total",
        "counter",
        "iTIP messages applied by mailetd to standard CalDAV calendars, by outcome (no_action, added, updated, error, conflicts retried).",
    );
    for (outcome, value) in crate::dav::caldav::handler::outcome_counts() {
        let _ = writeln!(
            out,
            "mailetd_caldav_itip_outcomes_total{{outcome=\"{outcome}\"}} {value}"
        );
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, labels: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name}{labels} {value}");
}

fn counters(out: &mut String, name: &str, help: &str, family: &Family<Counter>) {
    header(out, name, "counter", help);
    for (labels, c) in family.snapshot() {
        let _ = writeln!(out, "{name}{{{labels}}} {}", c.get());
    }
}

fn histograms(out: &mut String, name: &str, help: &str, family: &Family<Histogram>) {
    header(out, name, "histogram", help);
    for (labels, h) in family.snapshot() {
        histogram_lines(out, name, &labels, &h);
    }
}

fn histogram_lines(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
        cumulative += n.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(
        out,
        "{name}_sum{braces} {sum}\n{name}_count{braces} {count}"
    );
}

fn label_text(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Prometheus label-value escaping.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_and_cumulative_histograms() {
        let family: Family<Counter> = Family::new(&["code"]);
        family.with(&["552"]).inc();
        family.with(&["552"]).inc();
        family.with(&["5\"x"]).inc();
        let mut out = String::new();
        counters(&mut out, "t_total", "help", &family);
        assert!(out.contains("t_total{code=\"552\"} 2\n"), "{out}");
        assert!(out.contains("t_total{code=\"5\\\"x\"} 1\n"), "{out}");
        assert_eq!(family.total(), 3);

        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        histogram_lines(&mut out, "h", "k=\"v\"", &h);
        assert!(out.contains("h_bucket{k=\"v\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{k=\"v\",le=\"0.025\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{k=\"v\",le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{k=\"v\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("h_count{k=\"v\"} 3\n"), "{out}");
    }

    #[test]
    fn itip_method_comes_from_the_payload_or_the_esn_body() {
        let esn = serde_json::json!({"recipient": "b@x", "body": "{\"method\":\"CANCEL\"}"});
        assert_eq!(itip_method(&esn), "CANCEL");
        let shared = serde_json::json!({"recipient": "b@x", "document": {"method": "REQUEST"}});
        assert_eq!(itip_method(&shared), "REQUEST");
        let text = serde_json::json!({"recipient": "b@x", "document": "{\"method\":\"COUNTER\"}"});
        assert_eq!(itip_method(&text), "COUNTER");
        assert_eq!(
            itip_method(&serde_json::json!({"method": "reply"})),
            "REPLY"
        );
        assert_eq!(itip_method(&serde_json::json!({"vcard": "…"})), "-");
        assert_eq!(
            itip_method(&serde_json::json!({"method": "X-RANDOM-4711"})),
            "other"
        );
        assert_eq!(
            itip_method(&serde_json::json!({"method": " declinecounter"})),
            "DECLINECOUNTER"
        );
    }
}
