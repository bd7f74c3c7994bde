//! `mailetd check`: loads the whole configuration and prints the processor graph.

use std::fmt::Write;
use std::path::Path;

use crate::config::ConfDir;
use crate::config::mailetcontainer::{CompositeChild, CompositeConfig};
use crate::config::secret::{is_secret_key, redact_url_value};
use crate::config::smtpserver::SmtpServerConfig;
use crate::pipeline::Container;
use crate::pipeline::processor::ExceptionRoute;

/// Loads `conf_dir`, builds the container and returns the report (or the first error).
pub fn run(conf_dir: &Path) -> anyhow::Result<String> {
    let conf = ConfDir::load(conf_dir)?;
    let smtp_servers = crate::config::smtpserver::load(conf_dir)?;
    let http =
        crate::http::listen_address(&conf.context.settings.http).map_err(anyhow::Error::msg)?;
    let container = Container::build(&conf.container, &conf.context)?;
    // Building the handlers validates openpaas.properties and the [dav] settings too.
    crate::dav::outbox_handlers(&conf.context.properties, &conf.context.dav)?;
    crate::dav::contact_handlers(&conf.context)?;
    crate::dav::standard_handlers(&conf.context.settings.dav)?;
    crate::repository::Repository::locate(&conf.container.error_repository, &conf.context.data_dir)
        .map_err(|e| {
            conf.container
                .error_repository_position
                .error(format!("<errorRepository>: {e}"))
        })?;
    let http = match http {
        Some(l) if conf.context.settings.http.username.is_some() => {
            format!("{} (Basic auth)", l.addr)
        }
        Some(l) => l.addr.to_string(),
        None => "disabled".into(),
    };
    Ok(report(&conf, &container, &smtp_servers, &http))
}

fn report(
    conf: &ConfDir,
    container: &Container,
    smtp_servers: &[SmtpServerConfig],
    http: &str,
) -> String {
    let ctx = &conf.context;
    let mut out = String::new();
    let _ = writeln!(out, "configuration: {}", conf.dir.display());
    let _ = writeln!(
        out,
        "domains: {} (default {})",
        conf.domains.domains.join(", "),
        conf.domains.default_domain
    );
    let _ = writeln!(out, "postmaster: {}", ctx.postmaster);
    let threads = ctx.settings.workers.unwrap_or(conf.container.threads);
    let _ = writeln!(
        out,
        "spooler: {threads} threads, errorRepository {}",
        conf.container.error_repository
    );
    let _ = writeln!(out, "data directory: {}", ctx.data_dir.display());
    let _ = writeln!(out, "http admin endpoint: {http}");
    let keys: Vec<&str> = ctx.properties.keys().collect();
    if !keys.is_empty() {
        let _ = writeln!(out, "properties:");
        for key in keys {
            if is_secret_key(key) {
                let _ = writeln!(out, "  {key} = (hidden)");
            } else {
                let value = ctx.properties.get(key).unwrap_or("");
                let _ = writeln!(out, "  {key} = {}", redact_url_value(value));
            }
        }
    }
    for (p, state) in conf.container.processors.iter().zip(container.states()) {
        let processor = container.processor(state).expect("built");
        let _ = writeln!(out, "processor {state}:");
        for c in &p.composites {
            let _ = writeln!(out, "  matcher {} = {}", c.name, describe_composite(c));
        }
        for (i, step) in processor.steps.iter().enumerate() {
            let _ = write!(
                out,
                "  {}. {} {}",
                i + 1,
                step.matcher_text,
                step.config.class
            );
            for target in step.mailet.target_states() {
                let _ = write!(out, " -> {target}");
            }
            let _ = writeln!(out);
            for (what, route, default) in [
                ("onMailetException", &step.on_mailet_exception, true),
                ("onMatchException", &step.on_match_exception, true),
            ] {
                if default && *route == ExceptionRoute::parse(None) {
                    continue;
                }
                let _ = writeln!(out, "     {what}: {}", describe_route(route));
            }
        }
        if processor.steps.is_empty() {
            let _ = writeln!(out, "  (no mailets: every mail is deleted)");
        }
    }
    if let Ok((dir, true)) =
        crate::repository::Repository::locate(&conf.container.error_repository, &ctx.data_dir)
    {
        let _ = writeln!(
            out,
            "warning: errorRepository {}: mailetd has no such store; failed mails are kept as files in {}",
            conf.container.error_repository,
            dir.display()
        );
    }
    for w in container.warnings() {
        let _ = writeln!(out, "warning: {w}");
    }
    for server in smtp_servers {
        let binds: Vec<String> = server.bind.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "smtp {}: {}", server.name, binds.join(", "));
    }
    let _ = writeln!(out, "OK");
    out
}

fn describe_route(route: &ExceptionRoute) -> String {
    match route {
        ExceptionRoute::Ignore => "ignore".into(),
        ExceptionRoute::Propagate => "propagate (retry later)".into(),
        ExceptionRoute::NoMatch => "nomatch".into(),
        ExceptionRoute::MatchAll => "matchall".into(),
        ExceptionRoute::State(s) => format!("-> {s}"),
    }
}

fn describe_composite(c: &CompositeConfig) -> String {
    let op = c.operator.config.class.rsplit('.').next().unwrap_or("");
    let children: Vec<String> = c
        .children
        .iter()
        .map(|child| match child {
            CompositeChild::Matcher(m) => m.describe(),
            CompositeChild::Composite(n) => describe_composite(n),
        })
        .collect();
    let text = format!("{op}({})", children.join(", "));
    if c.operator.invert {
        format!("not {text}")
    } else {
        text
    }
}
