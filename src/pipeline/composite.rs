//! Composite matchers (`org.apache.james.mailetcontainer.impl.matchers.And|Or|Not|Xor`),
//! defined per processor with `<matcher name="…" match="…">` and nestable, plus the
//! inversion used by `notmatch`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ConfigError;
use crate::config::mailetcontainer::{CompositeChild, CompositeConfig, MatcherRef};
use crate::mail::{Mail, MailAddress};

use super::{Loaders, MailetContext, Matcher, MatcherError};

/// The package of James's composite matchers.
pub const COMPOSITE_PACKAGE: &str = "org.apache.james.mailetcontainer.impl.matchers.";

/// A composite operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// Recipients matched by every child (empty if any child matches none).
    And,
    /// Recipients matched by any child.
    Or,
    /// All recipients minus those matched by any child.
    Not,
    /// Pairwise symmetric difference of the children's results.
    Xor,
}

impl Operator {
    /// The operator a class names (`org.apache.james.mailetcontainer.impl.matchers.Or`, or `Or`).
    pub fn from_class(class: &str) -> Option<Operator> {
        match class.strip_prefix(COMPOSITE_PACKAGE).unwrap_or(class) {
            "And" => Some(Operator::And),
            "Or" => Some(Operator::Or),
            "Not" => Some(Operator::Not),
            "Xor" => Some(Operator::Xor),
            _ => None,
        }
    }
}

/// A composite matcher over child matchers.
pub struct Composite {
    operator: Operator,
    children: Vec<Arc<dyn Matcher>>,
}

impl Composite {
    /// A composite of already built matchers.
    pub fn new(operator: Operator, children: Vec<Arc<dyn Matcher>>) -> Self {
        Composite { operator, children }
    }
}

impl Matcher for Composite {
    fn match_mail(
        &self,
        mail: &Mail,
        ctx: &MailetContext,
    ) -> Result<Vec<MailAddress>, MatcherError> {
        let mut results = Vec::with_capacity(self.children.len());
        for child in &self.children {
            results.push(child.match_mail(mail, ctx)?);
        }
        let keep = |pred: &dyn Fn(&MailAddress) -> bool| -> Vec<MailAddress> {
            mail.recipients
                .iter()
                .filter(|r| pred(r))
                .cloned()
                .collect()
        };
        Ok(match self.operator {
            Operator::And => {
                if results.is_empty() {
                    Vec::new()
                } else {
                    keep(&|r| results.iter().all(|set| set.contains(r)))
                }
            }
            Operator::Or => keep(&|r| results.iter().any(|set| set.contains(r))),
            Operator::Not => keep(&|r| !results.iter().any(|set| set.contains(r))),
            Operator::Xor => {
                let mut acc: Option<Vec<MailAddress>> = None;
                for set in results {
                    acc = Some(match acc {
                        None => set,
                        Some(prev) => keep(&|r| prev.contains(r) != set.contains(r)),
                    });
                }
                acc.unwrap_or_default()
            }
        })
    }
}

/// `notmatch`: the recipients the inner matcher does not return.
pub struct Inverted(pub Arc<dyn Matcher>);

impl Matcher for Inverted {
    fn match_mail(
        &self,
        mail: &Mail,
        ctx: &MailetContext,
    ) -> Result<Vec<MailAddress>, MatcherError> {
        let matched = self.0.match_mail(mail, ctx)?;
        Ok(mail
            .recipients
            .iter()
            .filter(|r| !matched.contains(r))
            .cloned()
            .collect())
    }
}

/// Builds a matcher reference: a named composite of this processor wins over a class name.
pub fn build_ref(
    reference: &MatcherRef,
    named: &HashMap<String, Arc<dyn Matcher>>,
    ctx: &MailetContext,
    loaders: Loaders,
) -> Result<Arc<dyn Matcher>, ConfigError> {
    let base: Arc<dyn Matcher> = match named.get(&reference.config.class) {
        Some(m) => m.clone(),
        None => {
            if Operator::from_class(&reference.config.class).is_some() {
                return Err(reference.config.error(format!(
                    "{} is a composite matcher: define it with <matcher name=\"…\" match=\"{}\"> and child <matcher> elements, then use its name",
                    reference.config.class, reference.config.class
                )));
            }
            Arc::from(loaders.matchers.build(&reference.config, ctx)?)
        }
    };
    Ok(if reference.invert {
        Arc::new(Inverted(base))
    } else {
        base
    })
}

/// Builds a composite definition, resolving names against the composites defined before it.
pub fn build_composite(
    config: &CompositeConfig,
    named: &HashMap<String, Arc<dyn Matcher>>,
    ctx: &MailetContext,
    loaders: Loaders,
) -> Result<Arc<dyn Matcher>, ConfigError> {
    let operator = Operator::from_class(&config.operator.config.class).ok_or_else(|| {
        config.operator.config.error(format!(
            "<matcher name=\"{}\"> uses {:?}: a composite matcher is one of {COMPOSITE_PACKAGE}And, Or, Not, Xor",
            config.name, config.operator.config.class
        ))
    })?;
    let mut children = Vec::with_capacity(config.children.len());
    for child in &config.children {
        children.push(match child {
            CompositeChild::Matcher(r) => build_ref(r, named, ctx, loaders)?,
            CompositeChild::Composite(c) => build_composite(c, named, ctx, loaders)?,
        });
    }
    let composite: Arc<dyn Matcher> = Arc::new(Composite::new(operator, children));
    Ok(if config.operator.invert {
        Arc::new(Inverted(composite))
    } else {
        composite
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<&'static str>);
    impl Matcher for Fixed {
        fn match_mail(
            &self,
            mail: &Mail,
            _: &MailetContext,
        ) -> Result<Vec<MailAddress>, MatcherError> {
            Ok(mail
                .recipients
                .iter()
                .filter(|r| self.0.contains(&r.local.as_str()))
                .cloned()
                .collect())
        }
    }

    fn run(op: Operator, sets: &[Vec<&'static str>]) -> Vec<String> {
        let mail = Mail::new(
            None,
            ["a@x.y", "b@x.y", "c@x.y"]
                .iter()
                .map(|a| MailAddress::parse(a).unwrap())
                .collect(),
            Vec::new(),
        );
        let children = sets
            .iter()
            .map(|s| Arc::new(Fixed(s.clone())) as Arc<dyn Matcher>)
            .collect();
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        Composite::new(op, children)
            .match_mail(&mail, &ctx)
            .unwrap()
            .iter()
            .map(|r| r.local.clone())
            .collect()
    }

    #[test]
    fn operators() {
        assert_eq!(run(Operator::And, &[vec!["a", "b"], vec!["b", "c"]]), ["b"]);
        assert!(run(Operator::And, &[vec!["a"], vec![]]).is_empty());
        assert_eq!(run(Operator::Or, &[vec!["a"], vec!["c"]]), ["a", "c"]);
        assert_eq!(run(Operator::Not, &[vec!["a"], vec!["c"]]), ["b"]);
        assert_eq!(
            run(Operator::Xor, &[vec!["a", "b"], vec!["b", "c"]]),
            ["a", "c"]
        );
        assert!(run(Operator::Xor, &[vec!["a"], vec!["a"]]).is_empty());
        assert_eq!(
            Operator::from_class("org.apache.james.mailetcontainer.impl.matchers.Xor"),
            Some(Operator::Xor)
        );
    }
}
