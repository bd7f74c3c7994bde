//! `MetricsMailet`: counts the mails that reach it in a named, process-wide counter
//! (exposed by [`metric_counts`] for `/metrics`).
//!
//! ```xml
//! <mailet match="All" class="MetricsMailet">
//!   <metricName>mailetContainerErrors</metricName>
//! </mailet>
//! ```

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

fn counters() -> &'static Mutex<BTreeMap<String, u64>> {
    static COUNTERS: OnceLock<Mutex<BTreeMap<String, u64>>> = OnceLock::new();
    COUNTERS.get_or_init(Default::default)
}

/// Every MetricsMailet counter: metric name → mails counted since start.
pub fn metric_counts() -> BTreeMap<String, u64> {
    counters().lock().unwrap().clone()
}

/// Increments one counter.
pub struct MetricsMailet {
    metric: String,
}

impl MetricsMailet {
    /// `metricName` is required; the counter shows up (at 0) as soon as the mailet is built.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        let metric = config.require("metricName")?.trim().to_string();
        counters()
            .lock()
            .unwrap()
            .entry(metric.clone())
            .or_insert(0);
        Ok(Box::new(MetricsMailet { metric }))
    }
}

#[async_trait]
impl Mailet for MetricsMailet {
    async fn service(&self, _: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        *counters()
            .lock()
            .unwrap()
            .entry(self.metric.clone())
            .or_insert(0) += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn counts() {
        let mut m = mail("Subject: s\r\n\r\n");
        service("MetricsMailet", &[("metricName", "unitTestMetric")], &mut m)
            .await
            .unwrap();
        service("MetricsMailet", &[("metricName", "unitTestMetric")], &mut m)
            .await
            .unwrap();
        assert_eq!(super::metric_counts()["unitTestMetric"], 2);
        assert_eq!(m.state, "root");
    }
}
