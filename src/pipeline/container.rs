//! The mailet container: processors by state, built and validated from
//! `mailetcontainer.xml`, and the entry point that runs a mail through them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::error::{closest_names, did_you_mean, edit_distance};
use crate::config::mailetcontainer::{MailetContainerConfig, ProcessorConfig};
use crate::config::{ConfigError, ConfigErrors, Position};
use crate::mail::job::OutboxJob;
use crate::mail::{AttributeValue, Mail, attributes};

use super::composite::{build_composite, build_ref};
use super::processor::{ExceptionRoute, Processor, Step};
use super::{ERROR, GHOST, Loaders, MailetConfig, MailetContext, Matcher, ROOT};
use crate::config::component::ComponentConfig;

/// How many times one mail may be handed between processors before it is failed (a loop).
const MAX_HANDOVERS: usize = 64;

/// The built container.
pub struct Container {
    processors: HashMap<String, Processor>,
    order: Vec<String>,
    context: MailetContext,
    warnings: Vec<String>,
    /// `[[sources]]`: each mail is attributed to one before the root processor.
    sources: crate::consolidate::Sources,
}

/// What happened to one mail at one mailet, for `replay` traces.
#[derive(Clone, Debug)]
pub struct TraceEvent {
    /// The processor.
    pub processor: String,
    /// The mailet class as written.
    pub mailet: String,
    /// The matcher as written (`match="All"`).
    pub matcher: String,
    /// The mail name (splits are `name-!N`).
    pub mail: String,
    /// The recipients the mailet ran for.
    pub recipients: Vec<String>,
    /// Attributes added or changed (name → new value), or removed (name → `None`).
    pub changes: Vec<(String, Option<String>)>,
    /// The state after the mailet.
    pub state: String,
    /// The message size before and after, when the mailet changed the message.
    pub message_change: Option<(usize, usize)>,
    /// The mailet's error, if it failed.
    pub error: Option<String>,
}

impl TraceEvent {
    pub(crate) fn new(
        processor: &str,
        step: &Step,
        mail: &Mail,
        before: &BTreeMap<String, AttributeValue>,
        message_before: &[u8],
        error: Option<String>,
    ) -> Self {
        let mut changes = Vec::new();
        for (name, value) in &mail.attributes {
            if before.get(name) != Some(value) {
                changes.push((name.clone(), Some(value.to_text())));
            }
        }
        for name in before.keys() {
            if !mail.attributes.contains_key(name) {
                changes.push((name.clone(), None));
            }
        }
        TraceEvent {
            processor: processor.to_string(),
            mailet: step.config.class.clone(),
            matcher: step.matcher_text.clone(),
            mail: mail.name.clone(),
            recipients: mail.recipients.iter().map(|r| r.to_string()).collect(),
            changes,
            state: mail.state.clone(),
            message_change: (message_before != mail.message.as_slice())
                .then_some((message_before.len(), mail.message.len())),
            error,
        }
    }
}

/// Where a mail copy ended.
#[derive(Clone, Debug)]
pub struct Ending {
    /// The mail name.
    pub mail: String,
    /// The last processor it was in.
    pub processor: String,
    /// `ghost` (disposed by a mailet) or `end-of-processor`.
    pub how: String,
}

/// The bookkeeping of one mail's run: collected jobs, split counter, optional trace.
#[derive(Default)]
pub struct Run {
    /// Outbox jobs of every copy of the mail that reached the end.
    pub jobs: Vec<OutboxJob>,
    /// Trace events, when tracing.
    pub trace: Option<Vec<TraceEvent>>,
    /// How each copy ended.
    pub endings: Vec<Ending>,
    pub(crate) splits: usize,
    handovers: usize,
}

impl Run {
    /// A run that records a trace.
    pub fn traced() -> Run {
        Run {
            trace: Some(Vec::new()),
            ..Run::default()
        }
    }

    fn take_jobs(&mut self, mail: &mut Mail) {
        for mut job in mail.jobs.drain(..) {
            if job.mail_name.is_empty() {
                job.mail_name = mail.name.clone();
            }
            self.jobs.push(job);
        }
    }

    pub(crate) fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    pub(crate) fn record(&mut self, event: TraceEvent) {
        if let Some(t) = &mut self.trace {
            t.push(event);
        }
    }

    pub(crate) fn dispose(&mut self, processor: &str, mut mail: Mail) {
        self.take_jobs(&mut mail);
        self.endings.push(Ending {
            mail: mail.name,
            processor: processor.to_string(),
            how: GHOST.to_string(),
        });
    }

    pub(crate) fn end_of_processor(&mut self, processor: &str, mut mail: Mail) {
        self.take_jobs(&mut mail);
        self.endings.push(Ending {
            mail: mail.name,
            processor: processor.to_string(),
            how: "end-of-processor".to_string(),
        });
    }
}

impl Container {
    /// Builds every processor and checks the graph: `root` and `error` exist, `ghost` is not
    /// defined, every `ToProcessor` target and exception route names an existing processor.
    pub fn build(
        config: &MailetContainerConfig,
        context: &MailetContext,
        loaders: Loaders,
    ) -> Result<Container, ConfigError> {
        Self::build_all(config, context, loaders).map_err(|mut errors| errors.0.remove(0))
    }

    /// [`Container::build`], going on after an error so that all of them are reported.
    pub fn build_all(
        config: &MailetContainerConfig,
        context: &MailetContext,
        loaders: Loaders,
    ) -> Result<Container, ConfigErrors> {
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let mut states: Vec<&str> = Vec::new();
        for p in &config.processors {
            if p.state == GHOST {
                errors.push(p.position.error(
                    "processor state ghost is reserved (it means \"done, delete\"): choose another name",
                ));
            } else if states.contains(&p.state.as_str()) {
                errors.push(
                    p.position
                        .error(format!("processor {} is defined twice", p.state)),
                );
            } else {
                states.push(&p.state);
            }
        }
        for required in [ROOT, ERROR] {
            if !states.contains(&required) {
                errors.push(config.position.error(format!(
                    "no <processor state=\"{required}\">: the processors root and error are required (found: {})",
                    if states.is_empty() { "none".to_string() } else { states.join(", ") }
                )));
            }
        }
        let mut processors = HashMap::new();
        for p in &config.processors {
            let built = build_processor(p, context, loaders, &states, &mut warnings, &mut errors);
            processors.entry(p.state.clone()).or_insert(built);
        }
        let sources =
            crate::consolidate::Sources::new(&context.settings.sources).map_err(|e| errors.push(e));
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let sources = sources.expect("an error is pushed above");
        check_bcc(config, &mut warnings);
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(Container {
            processors,
            order: states.iter().map(|s| s.to_string()).collect(),
            context: context.clone(),
            warnings,
            sources,
        })
    }

    /// A container of hand-built processors (tests of behaviour no registered part shows).
    #[cfg(test)]
    pub(crate) fn from_processors(processors: Vec<Processor>, context: MailetContext) -> Self {
        Container {
            order: processors.iter().map(|p| p.state.clone()).collect(),
            processors: processors
                .into_iter()
                .map(|p| (p.state.clone(), p))
                .collect(),
            context,
            warnings: Vec::new(),
            sources: Default::default(),
        }
    }

    /// The context given to mailets.
    pub fn context(&self) -> &MailetContext {
        &self.context
    }

    /// Warnings found at build time (also logged).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Processor states in document order.
    pub fn states(&self) -> &[String] {
        &self.order
    }

    /// The processor for `state`.
    pub fn processor(&self, state: &str) -> Option<&Processor> {
        self.processors.get(state)
    }

    /// Runs `mail` from its current state until every copy of it is done. An error is a
    /// `propagate`d failure: the caller (spooler) retries the mail.
    pub async fn process(&self, mut mail: Mail, run: &mut Run) -> anyhow::Result<()> {
        self.sources.attribute(&mut mail);
        self.route(mail, run).await
    }

    /// Hands `mail` to the processor of its state (boxed: processors call back into it).
    pub fn route<'a>(
        &'a self,
        mut mail: Mail,
        run: &'a mut Run,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            if mail.state == GHOST || mail.recipients.is_empty() {
                let from = std::mem::replace(&mut mail.state, GHOST.to_string());
                run.dispose(&from, mail);
                return Ok(());
            }
            run.handovers += 1;
            if run.handovers > MAX_HANDOVERS {
                anyhow::bail!(
                    "mail {} was handed between processors more than {MAX_HANDOVERS} times (a ToProcessor loop?), last to {}",
                    mail.name,
                    mail.state
                );
            }
            if !self.processors.contains_key(&mail.state) {
                let missing = mail.state.clone();
                tracing::error!(mail = %mail.name, "MailProcessor '{missing}' could not be found. Processing to 'error' instead");
                let reason = format!("MailProcessor '{missing}' could not be found");
                mail.error_message = Some(reason.clone());
                mail.set_attribute(attributes::MAILET_ERROR, AttributeValue::String(reason));
                mail.state = ERROR.to_string();
            }
            let processor = &self.processors[&mail.state];
            processor.service(self, mail, run).await
        })
    }
}

/// Builds what can be built of a processor; each error goes to `errors` and the step is left
/// out, so that the next steps are checked too.
fn build_processor(
    p: &ProcessorConfig,
    ctx: &MailetContext,
    loaders: Loaders,
    states: &[&str],
    warnings: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) -> Processor {
    let mut named: HashMap<String, Arc<dyn Matcher>> = HashMap::new();
    let mut broken_composites = Vec::new();
    for c in &p.composites {
        match build_composite(c, &named, ctx, loaders) {
            Ok(built) => {
                named.insert(c.name.clone(), built);
            }
            Err(e) => {
                errors.push(e);
                broken_composites.push(c.name.as_str());
            }
        }
    }
    let mut steps = Vec::with_capacity(p.mailets.len());
    for m in &p.mailets {
        let matcher = build_ref(&m.matcher, &named, ctx, loaders).map_err(|e| {
            // a composite already reported is not reported again as unknown
            if !broken_composites.contains(&m.matcher.config.class.as_str()) {
                errors.push(e);
            }
        });
        let mailet = loaders
            .mailets
            .build(&m.mailet, ctx)
            .map_err(|e| errors.push(e));
        let on_mailet_exception = check_route(
            &m.on_mailet_exception,
            "onMailetException",
            false,
            states,
            warnings,
        )
        .map_err(|e| errors.push(e));
        let on_match_exception = check_route(
            &m.on_match_exception,
            "onMatchException",
            true,
            states,
            warnings,
        )
        .map_err(|e| errors.push(e));
        let (Ok(matcher), Ok(mailet), Ok(on_mailet_exception), Ok(on_match_exception)) =
            (matcher, mailet, on_mailet_exception, on_match_exception)
        else {
            continue;
        };
        warn_unknown_parameters(&m.mailet, warnings);
        for target in mailet.target_states() {
            if !states.contains(&target.as_str()) {
                let position = m
                    .mailet
                    .parameters
                    .iter()
                    .find(|param| param.value.trim() == target)
                    .map(|param| param.position.clone())
                    .unwrap_or_else(|| m.mailet.position.clone());
                errors.push(unknown_state(
                    &position,
                    &format!("{} in processor {} sends mail to", m.mailet.class, p.state),
                    &target,
                    states,
                ));
            }
        }
        steps.push(Step {
            mailet,
            config: m.mailet.named(loaders.mailets.short_name(&m.mailet.class)),
            matcher,
            matcher_text: m.matcher.describe(),
            on_mailet_exception,
            on_match_exception,
        });
    }
    Processor {
        state: p.state.clone(),
        steps,
    }
}

/// A parameter the mailet's constructor never asked for is ignored: James ignores it too,
/// but it is most often a typo or a parameter of another implementation.
fn warn_unknown_parameters(config: &MailetConfig, warnings: &mut Vec<String>) {
    let known = config.asked_parameters();
    for param in &config.parameters {
        if known.contains(&param.name) {
            continue;
        }
        let hint = if known.is_empty() {
            format!("; {} takes no parameters", config.name)
        } else {
            did_you_mean(&param.name, known.iter().map(String::as_str))
        };
        warnings.push(format!(
            "{}: parameter <{}> of mailet {} is not one mailetd knows: ignored{hint}",
            param.position, param.name, config.name
        ));
    }
}

/// "; did you mean X?" when a state is a plausible typo of `wanted`.
fn state_hint(wanted: &str, states: &[&str]) -> String {
    let close = closest_names(wanted, states.iter().copied());
    match close.first() {
        Some(c)
            if edit_distance(&wanted.to_lowercase(), &c.to_lowercase())
                <= (wanted.chars().count() / 3).max(2) =>
        {
            format!("; did you mean {c}?")
        }
        _ => String::new(),
    }
}

fn unknown_state(position: &Position, what: &str, target: &str, states: &[&str]) -> ConfigError {
    let hint = state_hint(target, states);
    position.error(format!(
        "{what} processor {target:?}, which does not exist (processors: {}){hint}",
        states.join(", ")
    ))
}

/// Startup check of an exception route: James checks the raw value, then lowercases it at
/// run time; we check the same and warn when the lowercasing changes where mail goes.
fn check_route(
    raw: &Option<(String, Position)>,
    element: &str,
    for_matcher: bool,
    states: &[&str],
    warnings: &mut Vec<String>,
) -> Result<ExceptionRoute, ConfigError> {
    let Some((value, position)) = raw else {
        return Ok(ExceptionRoute::parse(None));
    };
    let route = ExceptionRoute::parse(Some(value));
    match &route {
        ExceptionRoute::NoMatch | ExceptionRoute::MatchAll if !for_matcher => {
            return Err(position.error(format!(
                "<{element}> is {value:?}: expected ignore, propagate or a processor name"
            )));
        }
        ExceptionRoute::State(lowered) => {
            let written = value.trim();
            if !states.contains(&written) {
                let expected = if for_matcher {
                    "ignore, propagate, nomatch, matchall or a processor name"
                } else {
                    "ignore, propagate or a processor name"
                };
                let hint = state_hint(written, states);
                return Err(position.error(format!(
                    "<{element}> is {written:?}, which is not a processor (processors: {}): expected {expected}{hint}",
                    states.join(", ")
                )));
            }
            if lowered != written {
                let fate = if states.contains(&lowered.as_str()) {
                    format!("processor {lowered}")
                } else {
                    format!("processor {lowered}, which does not exist, so to error")
                };
                warnings.push(format!(
                    "{position}: <{element}>{written}</{element}> is lowercased at run time, as James does: failing mail goes to {fate}, not to {written}; write it in lowercase and rename the processor"
                ));
            }
        }
        _ => {}
    }
    Ok(route)
}

/// James refuses to start when `transport` does not strip Bcc; we warn.
fn check_bcc(config: &MailetContainerConfig, warnings: &mut Vec<String>) {
    let Some(transport) = config.processors.iter().find(|p| p.state == "transport") else {
        return;
    };
    let strips_bcc = transport.mailets.iter().any(|m| {
        m.mailet.name == "RemoveMimeHeader"
            && m.matcher.config.name == "All"
            && !m.matcher.invert
            && m.mailet
                .get("name")
                .is_some_and(|n| n.split(',').any(|h| h.trim().eq_ignore_ascii_case("bcc")))
    });
    if !strips_bcc {
        warnings.push(format!(
            "{}: processor transport has no <mailet match=\"All\" class=\"RemoveMimeHeader\"><name>bcc</name></mailet>: James refuses to start without it; mailetd continues, but Bcc headers reach the next mailets",
            transport.position
        ));
    }
}
