//! `mailetd check`: loads the whole configuration and prints the processor graph.

use std::fmt::Write;
use std::path::Path;

use crate::config::mailetcontainer::{CompositeChild, CompositeConfig};
use crate::config::secret::{is_secret_key, redact_url_value};
use crate::config::smtpserver::SmtpServerConfig;
use crate::config::{ConfDir, ConfigError, ConfigErrors};
use crate::pipeline::processor::ExceptionRoute;
use crate::pipeline::{Container, MailetContext};

/// Loads `conf_dir`, builds the container and returns the report, or every error found
/// (each with its file, line and column): one run shows all there is to fix.
pub fn run(conf_dir: &Path) -> anyhow::Result<String> {
    let (conf, mut errors) = ConfDir::load_all(conf_dir);
    let smtp_servers = crate::config::smtpserver::load(conf_dir)
        .map_err(|e| errors.push(e))
        .ok();
    let (Some(conf), Some(smtp_servers)) = (conf, smtp_servers) else {
        return Err(ConfigErrors(errors).into());
    };
    let context = MailetContext::new(&conf);
    let http = crate::http::listen_address(&conf.settings.http)
        .map_err(|e| errors.push(ConfigError::new(e)))
        .ok()
        .flatten();
    let container = Container::build_all(&conf.container, &context, crate::server::loaders())
        .map_err(|e| errors.extend(e.0))
        .ok();
    // Building the handlers validates openpaas.properties and the [dav] settings too.
    for handlers in [
        crate::dav::outbox_handlers(&context.properties, &context.dav),
        crate::dav::contact_handlers(
            &conf.settings.dav,
            &context.properties,
            &context.dav,
            context.store.clone(),
        ),
        crate::dav::standard_handlers(&conf.settings.dav),
    ] {
        if let Err(e) = handlers
            && !errors.contains(&e)
        {
            errors.push(e);
        }
    }
    if let Err(e) =
        crate::repository::Repository::locate(&conf.container.error_repository, conf.data_dir())
    {
        errors.push(
            conf.container
                .error_repository_position
                .error(format!("<errorRepository>: {e}")),
        );
    }
    let Some(container) = container.filter(|_| errors.is_empty()) else {
        return Err(ConfigErrors(errors).into());
    };
    let http = match http {
        Some(l) if conf.settings.http.username.is_some() => {
            format!("{} (Basic auth)", l.addr)
        }
        Some(l) => l.addr.to_string(),
        None => "disabled".into(),
    };
    Ok(report(&conf, &container, &smtp_servers, &http))
}

/// Warnings about who can reach an SMTP listener: in James, `authorizedAddresses` grants
/// relay rights and anyone may connect; in mailetd it says who may connect at all, so a
/// James file with the loopback default shuts out the mirroring MTA on another host.
pub fn reachability_warnings(server: &SmtpServerConfig) -> Vec<String> {
    let loopback_net = |n: &ipnet::IpNet| n.network().is_loopback();
    let public_binds: Vec<String> = server
        .bind
        .iter()
        .filter(|b| !b.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    let outside_nets: Vec<String> = server
        .authorized
        .iter()
        .filter(|n| !loopback_net(n))
        .map(ToString::to_string)
        .collect();
    let position = &server.position;
    match (public_binds.is_empty(), outside_nets.is_empty()) {
        (false, true) => vec![format!(
            "{position}: smtp {} listens on {} but only loopback clients may connect ({}): a mirroring MTA on another host gets 554. In mailetd <authorizedAddresses> says who may connect (in James, who may relay): add your MTA's network",
            server.name,
            public_binds.join(", "),
            if server.authorized_explicit {
                "authorizedAddresses"
            } else {
                "no <authorizedAddresses>"
            }
        )],
        (true, false) => vec![format!(
            "{position}: smtp {} listens on loopback only, so the clients of authorizedAddresses {} cannot connect: bind it to an address they reach (e.g. <bind>0.0.0.0:25</bind>)",
            server.name,
            outside_nets.join(", ")
        )],
        _ => Vec::new(),
    }
}

fn report(
    conf: &ConfDir,
    container: &Container,
    smtp_servers: &[SmtpServerConfig],
    http: &str,
) -> String {
    let ctx = &container.context();
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
        for w in reachability_warnings(server) {
            let _ = writeln!(out, "warning: {w}");
        }
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
