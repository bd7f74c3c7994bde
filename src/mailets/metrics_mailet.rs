//! `MetricsMailet`: counts the mails that reach it in a named counter, exposed as
//! `mailetd_metrics_mailet_total{metric="<metricName>"}`.
//!
//! ```xml
//! <mailet match="All" class="MetricsMailet">
//!   <metricName>mailetContainerErrors</metricName>
//! </mailet>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Increments one counter.
pub struct MetricsMailet {
    metric: String,
}

impl MetricsMailet {
    /// `metricName` is required; the counter shows up (at 0) as soon as the mailet is built.
    pub fn build(
        config: &MailetConfig,
        ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        let metric = config.require("metricName")?.trim().to_string();
        ctx.metrics.metrics_mailet_declared(&metric);
        Ok(Box::new(MetricsMailet { metric }))
    }
}

#[async_trait]
impl Mailet for MetricsMailet {
    async fn service(&self, _: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError> {
        ctx.metrics.metrics_mailet_count(&self.metric);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mailets::testing::mail;
    use crate::pipeline::{MailetConfig, MailetContext};

    #[tokio::test]
    async fn counts() {
        let mut m = mail("Subject: s\r\n\r\n");
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        let config = MailetConfig::inline("MetricsMailet", &[("metricName", "unitTestMetric")]);
        let mailet = crate::mailets::build(&config, &ctx).unwrap();
        assert_eq!(ctx.metrics.metrics_mailet_value("unitTestMetric"), 0);
        mailet.service(&mut m, &ctx).await.unwrap();
        mailet.service(&mut m, &ctx).await.unwrap();
        assert_eq!(ctx.metrics.metrics_mailet_value("unitTestMetric"), 2);
        assert_eq!(m.state, "root");
    }
}
