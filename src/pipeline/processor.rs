//! One processor: an ordered list of (matcher, mailet) steps applied to the mails in one state,
//! with James's recipient splitting, immediate hand-over on a state change, exception routes
//! and "end of processor = ghost".

use std::collections::HashSet;
use std::sync::Arc;

use crate::mail::{AttributeValue, Mail, MailAddress, attributes};

use super::container::{Container, Run, TraceEvent};
use super::{ERROR, GHOST, Mailet, MailetConfig, MailetContext, Matcher};

/// What to do when a mailet or matcher fails (`onMailetException` / `onMatchException`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExceptionRoute {
    /// Log and continue (for a matcher: as if nothing matched).
    Ignore,
    /// Fail the whole mail: the spooler retries it later.
    Propagate,
    /// Matchers only: nothing matched.
    NoMatch,
    /// Matchers only: every recipient matched.
    MatchAll,
    /// Send the mail to this processor (lowercased and trimmed, as James does at run time).
    State(String),
}

impl ExceptionRoute {
    /// Parses the element text as James does at run time; `None` (absent) means `error`.
    pub fn parse(raw: Option<&str>) -> ExceptionRoute {
        let value = raw.map(|r| r.trim().to_lowercase()).unwrap_or_default();
        match value.as_str() {
            "" => ExceptionRoute::State(ERROR.to_string()),
            "ignore" => ExceptionRoute::Ignore,
            "propagate" => ExceptionRoute::Propagate,
            "nomatch" => ExceptionRoute::NoMatch,
            "matchall" => ExceptionRoute::MatchAll,
            _ => ExceptionRoute::State(value),
        }
    }
}

/// One `<mailet>` of a processor, built.
pub struct Step {
    /// The mailet.
    pub mailet: Box<dyn Mailet>,
    /// Its configuration (class, parameters, position).
    pub config: MailetConfig,
    /// The matcher (inverted already for `notmatch`).
    pub matcher: Arc<dyn Matcher>,
    /// The matcher as written, for traces and `check`.
    pub matcher_text: String,
    /// `onMailetException`.
    pub on_mailet_exception: ExceptionRoute,
    /// `onMatchException`.
    pub on_match_exception: ExceptionRoute,
}

/// A processor: the steps for one state.
pub struct Processor {
    /// The state.
    pub state: String,
    /// The steps in order.
    pub steps: Vec<Step>,
}

/// Marks a mail as failed and sends it to `state` (James `ProcessorUtil.handleException`).
pub fn route_to_error(mail: &mut Mail, offender: &str, error: &anyhow::Error, state: &str) {
    let message = format!("Exception calling {offender}: {error:#}");
    tracing::error!(error_source = "pipeline", mail = %mail.name, next_state = state, "{message}");
    mail.error_message = Some(message);
    mail.set_attribute(
        attributes::MAILET_ERROR,
        AttributeValue::String(format!("{error:#}")),
    );
    mail.state = state.to_string();
}

impl Processor {
    /// Services `mail` (in this processor's state) and every split copy of it; mails whose
    /// state changes are handed to `container` at once.
    pub async fn service(
        &self,
        container: &Container,
        mail: Mail,
        run: &mut Run,
    ) -> anyhow::Result<()> {
        let ctx: &MailetContext = container.context();
        let mut mails = vec![mail];
        for step in &self.steps {
            if mails.is_empty() {
                break;
            }
            let mut next = Vec::with_capacity(mails.len());
            for mut mail in mails.drain(..) {
                let matched = match step.matcher.match_mail(&mail, ctx) {
                    Ok(m) => m,
                    Err(e) => match &step.on_match_exception {
                        ExceptionRoute::Ignore | ExceptionRoute::NoMatch => {
                            tracing::warn!(mail = %mail.name, matcher = %step.matcher_text, "matcher failed, treated as no match: {e:#}");
                            Vec::new()
                        }
                        ExceptionRoute::MatchAll => {
                            tracing::warn!(mail = %mail.name, matcher = %step.matcher_text, "matcher failed, treated as matching all: {e:#}");
                            mail.recipients.clone()
                        }
                        ExceptionRoute::Propagate => {
                            return Err(e.context(format!(
                                "matcher {} in processor {}",
                                step.matcher_text, self.state
                            )));
                        }
                        ExceptionRoute::State(state) => {
                            route_to_error(&mut mail, &step.matcher_text, &e, state);
                            container.route(mail, run).await?;
                            continue;
                        }
                    },
                };
                let matched = in_mail_order(&mail.recipients, matched);
                if matched.is_empty() {
                    next.push(mail);
                    continue;
                }
                let mut target = if matched.len() == mail.recipients.len() {
                    mail
                } else {
                    run.splits += 1;
                    let mut copy = mail.clone();
                    // jobs already decided stay with the original, so that they are stored once
                    copy.jobs = Vec::new();
                    copy.name = format!("{}-!{}", mail.name, run.splits);
                    remove_in_order(&mut mail.recipients, &matched);
                    copy.recipients = matched;
                    next.push(mail);
                    copy
                };
                let before = run
                    .tracing()
                    .then(|| (target.attributes.clone(), target.message.clone()));
                let mut error_text = None;
                let started = std::time::Instant::now();
                let result = step.mailet.service(&mut target, ctx).await;
                ctx.metrics.mailet_run(
                    &self.state,
                    &step.config.name,
                    started.elapsed(),
                    result.is_err(),
                );
                if let Err(e) = result {
                    error_text = Some(format!("{e:#}"));
                    match &step.on_mailet_exception {
                        ExceptionRoute::Ignore
                        | ExceptionRoute::NoMatch
                        | ExceptionRoute::MatchAll => {
                            tracing::warn!(mail = %target.name, mailet = %step.config.class, "mailet failed, ignored (onMailetException ignore): {e:#}");
                        }
                        ExceptionRoute::Propagate => {
                            return Err(e.context(format!(
                                "mailet {} in processor {}",
                                step.config.class, self.state
                            )));
                        }
                        ExceptionRoute::State(state) => {
                            route_to_error(&mut target, &step.config.name, &e, state);
                        }
                    }
                }
                if target.recipients.is_empty() {
                    target.state = GHOST.to_string();
                }
                if let Some((attributes, message)) = before {
                    run.record(TraceEvent::new(
                        &self.state,
                        step,
                        &target,
                        &attributes,
                        &message,
                        error_text,
                    ));
                }
                if target.state == GHOST {
                    run.dispose(&self.state, target);
                } else if target.state != self.state {
                    container.route(target, run).await?;
                } else {
                    next.push(target);
                }
            }
            mails = next;
        }
        for mail in mails {
            if self.state != ERROR {
                tracing::warn!(
                    "Mail {} reached the end of this processor ({}), and is automatically deleted. This may indicate a configuration error.",
                    mail.name,
                    self.state
                );
            }
            run.end_of_processor(&self.state, mail);
        }
        Ok(())
    }
}

/// The recipients among `recipients` that a matcher's answer names, in the mail's order,
/// without repeats or strangers the answer may hold. Most answers are every recipient as
/// they are, which one comparison pass confirms; any other goes through a set, where a
/// search of the answer for each recipient cost a 1,000-recipient mail a million address
/// comparisons at every step.
fn in_mail_order(recipients: &[MailAddress], matched: Vec<MailAddress>) -> Vec<MailAddress> {
    if matched.is_empty() || matched == recipients {
        return matched;
    }
    let named: HashSet<&MailAddress> = matched.iter().collect();
    recipients
        .iter()
        .filter(|r| named.contains(r))
        .cloned()
        .collect()
}

/// Removes from `recipients` the `taken` ones, which [`in_mail_order`] chose from them: in the
/// same order, so one walk finds each, without a set of them.
fn remove_in_order(recipients: &mut Vec<MailAddress>, taken: &[MailAddress]) {
    let mut next = taken.iter().peekable();
    recipients.retain(|r| {
        let is_taken = next.peek() == Some(&r);
        if is_taken {
            next.next();
        }
        !is_taken
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(names: &[&str]) -> Vec<MailAddress> {
        names
            .iter()
            .map(|n| MailAddress::parse(&format!("{n}@example.org")).unwrap())
            .collect()
    }

    #[test]
    fn a_matcher_answer_is_read_in_the_mail_order_without_strangers() {
        let rcpts = addresses(&["a", "b", "c", "d"]);
        assert_eq!(in_mail_order(&rcpts, rcpts.clone()), rcpts);
        assert_eq!(
            in_mail_order(&rcpts, addresses(&["d", "b", "x", "b"])),
            addresses(&["b", "d"])
        );
        assert!(in_mail_order(&rcpts, addresses(&["x"])).is_empty());
        assert!(in_mail_order(&rcpts, Vec::new()).is_empty());
        // all of them in another order is still all of them, in the mail's order
        assert_eq!(
            in_mail_order(&rcpts, addresses(&["d", "c", "b", "a"])),
            rcpts
        );
    }

    #[test]
    fn a_split_leaves_the_recipients_the_matcher_did_not_name() {
        let mut rcpts = addresses(&["a", "b", "a", "c", "d"]);
        let taken = in_mail_order(&rcpts, addresses(&["d", "a"]));
        remove_in_order(&mut rcpts, &taken);
        assert_eq!(rcpts, addresses(&["b", "c"]));
    }
}
