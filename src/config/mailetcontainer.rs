//! `mailetcontainer.xml`: the James mailet container configuration, parsed with positions.
//!
//! The grammar follows James to the letter (spec `james-config.md` §1): every child element of
//! a `<mailet>` is a parameter (repeats joined by `,`, `..` in a name becomes `.`),
//! `onMailetException`/`onMatchException` are child elements, the matcher condition is
//! everything after the first `=`, and composite `<matcher name match>` are per processor.

use std::path::Path;

use super::component::{MailetConfig, MatcherConfig, Parameter, simple_name};
use super::error::{ConfigError, Position};
use super::xml::{Element, XmlDocument};

/// The default `spooler/threads` of the James code (the samples use 20).
pub const DEFAULT_THREADS: usize = 100;
/// The default `spooler/errorRepository`.
/// (James: `var/mail/error`; relative `file://` paths are under the data directory, `var/`.)
pub const DEFAULT_ERROR_REPOSITORY: &str = "file://mail/error/";

/// The name the embedded default configuration goes by in positions.
pub const EMBEDDED_PATH: &str = "<embedded>/mailetcontainer.xml";

/// The whole `mailetcontainer.xml`.
#[derive(Clone, Debug)]
pub struct MailetContainerConfig {
    /// `context/postmaster` as written (default `postmaster`).
    pub postmaster: String,
    /// `spooler/threads`: mails processed concurrently; 0 disables the spooler.
    pub threads: usize,
    /// `spooler/errorRepository`: where mails failing 6 times in a row are stored.
    pub error_repository: String,
    /// Where `errorRepository` is (the root element when it is absent).
    pub error_repository_position: Position,
    /// The processors in document order.
    pub processors: Vec<ProcessorConfig>,
    /// Where the `<mailetcontainer>` element is.
    pub position: Position,
}

/// One `<processor state="…">`.
#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    /// The state this processor handles.
    pub state: String,
    /// Named composite matchers defined in this processor.
    pub composites: Vec<CompositeConfig>,
    /// The mailets in order.
    pub mailets: Vec<MailetStepConfig>,
    /// Where the `<processor>` element is.
    pub position: Position,
}

/// A matcher reference: `match="…"` or `notmatch="…"` (inverted).
#[derive(Clone, Debug)]
pub struct MatcherRef {
    /// Name, condition and position.
    pub config: MatcherConfig,
    /// `notmatch`: the mailet applies to the recipients the matcher does not return.
    pub invert: bool,
}

impl MatcherRef {
    /// The attribute as the user wrote it (`match="HasHeader=X"`).
    pub fn describe(&self) -> String {
        let attr = if self.invert { "notmatch" } else { "match" };
        match &self.config.condition {
            Some(c) => format!("{attr}=\"{}={c}\"", self.config.class),
            None => format!("{attr}=\"{}\"", self.config.class),
        }
    }
}

/// A processor-level `<matcher name="…" match="…And|Or|Not|Xor">` with its children.
#[derive(Clone, Debug)]
pub struct CompositeConfig {
    /// The name mailets refer to (`match="relay-allowed"`); empty for nested anonymous ones.
    pub name: String,
    /// The composite operator (its class) and whether it is inverted.
    pub operator: MatcherRef,
    /// The child matchers.
    pub children: Vec<CompositeChild>,
    /// Where the `<matcher>` element is.
    pub position: Position,
}

/// A child of a composite matcher.
#[derive(Clone, Debug)]
pub enum CompositeChild {
    /// A plain matcher (or a reference to a named composite).
    Matcher(MatcherRef),
    /// A nested composite.
    Composite(CompositeConfig),
}

/// One `<mailet>` with its matcher and exception routes.
#[derive(Clone, Debug)]
pub struct MailetStepConfig {
    /// Class, parameters, position.
    pub mailet: MailetConfig,
    /// The matcher (`All` when neither `match` nor `notmatch` is given).
    pub matcher: MatcherRef,
    /// `<onMailetException>` as written, with its position.
    pub on_mailet_exception: Option<(String, Position)>,
    /// `<onMatchException>` as written, with its position.
    pub on_match_exception: Option<(String, Position)>,
}

impl MailetContainerConfig {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_document(&XmlDocument::load(path)?)
    }

    /// Parses XML text (`path` is used in positions).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::from_document(&XmlDocument::parse(text, path)?)
    }

    /// Builds the configuration from a parsed document.
    pub fn from_document(doc: &XmlDocument) -> Result<Self, ConfigError> {
        let root = &doc.root;
        if root.name != "mailetcontainer" {
            return Err(root.error(format!(
                "found <{}>: expected <mailetcontainer> as the root element",
                root.name
            )));
        }
        let postmaster = root
            .child("context")
            .and_then(|c| c.child_text("postmaster"))
            .filter(|p| !p.is_empty())
            .unwrap_or("postmaster")
            .to_string();
        let spooler = root.child("spooler");
        let threads = match spooler.and_then(|s| s.child("threads")) {
            None => DEFAULT_THREADS,
            Some(t) => match t.text.trim().parse::<i64>() {
                Ok(n) if n >= 0 => n as usize,
                _ => {
                    return Err(t.error(format!(
                        "<threads> is {:?}: expected a number of mails processed at once (0 or more)",
                        t.text
                    )));
                }
            },
        };
        let error_repository_el = spooler
            .and_then(|s| s.child("errorRepository"))
            .filter(|r| !r.text.is_empty());
        let error_repository = error_repository_el
            .map(|e| e.text.as_str())
            .unwrap_or(DEFAULT_ERROR_REPOSITORY)
            .to_string();
        let error_repository_position = error_repository_el
            .map(|e| e.position.clone())
            .unwrap_or_else(|| root.position.clone());
        let processors = match root.child("processors") {
            Some(ps) => ps
                .children_named("processor")
                .map(parse_processor)
                .collect::<Result<Vec<_>, _>>()?,
            None if doc.root.position.file.as_path() != Path::new(EMBEDDED_PATH) => {
                // James falls back to its built-in processors when <processors> is absent
                tracing::info!(
                    "{}: no <processors>: using the processors of the embedded default mailetcontainer.xml",
                    root.position
                );
                Self::parse(super::EMBEDDED_MAILETCONTAINER, Path::new(EMBEDDED_PATH))?.processors
            }
            None => Vec::new(),
        };
        Ok(MailetContainerConfig {
            postmaster,
            threads,
            error_repository,
            error_repository_position,
            processors,
            position: root.position.clone(),
        })
    }
}

fn parse_processor(el: &Element) -> Result<ProcessorConfig, ConfigError> {
    let state = match el.attribute("state") {
        Some(a) if !a.value.trim().is_empty() => a.value.trim().to_string(),
        _ => {
            return Err(el.error(
                "<processor> has no state: expected <processor state=\"name\">".to_string(),
            ));
        }
    };
    let mut composites: Vec<CompositeConfig> = Vec::new();
    let mut mailets = Vec::new();
    for child in &el.children {
        match child.name.as_str() {
            "matcher" => {
                let composite = parse_composite(child, &state, true)?;
                if let Some(previous) = composites.iter().find(|c| c.name == composite.name) {
                    return Err(child.error(format!(
                        "composite matcher {:?} is defined twice in processor {state} (first at line {})",
                        composite.name, previous.position.line
                    )));
                }
                composites.push(composite);
            }
            "mailet" => mailets.push(parse_mailet(child, &state)?),
            _ => {}
        }
    }
    Ok(ProcessorConfig {
        state,
        composites,
        mailets,
        position: el.position.clone(),
    })
}

fn parse_matcher_ref(el: &Element, what: &str) -> Result<Option<MatcherRef>, ConfigError> {
    let matched = el.attribute("match");
    let notmatched = el.attribute("notmatch");
    let (attr, invert) = match (matched, notmatched) {
        (Some(_), Some(_)) => {
            return Err(el.error(format!(
                "{what} has both match and notmatch: expected one of them"
            )));
        }
        (Some(a), None) => (a, false),
        (None, Some(a)) => (a, true),
        (None, None) => return Ok(None),
    };
    let value = attr.value.trim();
    let (class, condition) = match value.split_once('=') {
        Some((c, cond)) => (c.trim(), Some(cond.to_string())),
        None => (value, None),
    };
    if class.is_empty() {
        return Err(attr.position.error(format!(
            "{} is empty: expected a matcher name such as All",
            attr.name
        )));
    }
    Ok(Some(MatcherRef {
        config: MatcherConfig {
            class: class.to_string(),
            name: simple_name(class).to_string(),
            condition,
            position: attr.position.clone(),
        },
        invert,
    }))
}

fn parse_composite(el: &Element, state: &str, top: bool) -> Result<CompositeConfig, ConfigError> {
    let name = el.attr("name").unwrap_or("").trim().to_string();
    if top && name.is_empty() {
        return Err(el.error(format!(
            "<matcher> in processor {state} has no name: a composite matcher needs name=\"…\" so that mailets can use it"
        )));
    }
    let operator = parse_matcher_ref(el, "<matcher>")?.ok_or_else(|| {
        el.error("<matcher> has no match attribute: expected match=\"org.apache.james.mailetcontainer.impl.matchers.And\" (or Or, Not, Xor)")
    })?;
    let mut children = Vec::new();
    for child in el.children_named("matcher") {
        if child.children.iter().any(|c| c.name == "matcher") {
            children.push(CompositeChild::Composite(parse_composite(
                child, state, false,
            )?));
        } else {
            let m = parse_matcher_ref(child, "<matcher>")?.ok_or_else(|| {
                child.error("<matcher> has no match attribute: expected match=\"Name[=condition]\"")
            })?;
            children.push(CompositeChild::Matcher(m));
        }
    }
    Ok(CompositeConfig {
        name,
        operator,
        children,
        position: el.position.clone(),
    })
}

const EXCEPTION_ELEMENTS: [&str; 2] = ["onMailetException", "onMatchException"];

fn parse_mailet(el: &Element, state: &str) -> Result<MailetStepConfig, ConfigError> {
    let class = match el.attribute("class") {
        Some(a) if !a.value.trim().is_empty() => a.value.trim().to_string(),
        _ => {
            return Err(
                el.error("<mailet> has no class: expected <mailet match=\"All\" class=\"Null\"/>")
            );
        }
    };
    let matcher = match parse_matcher_ref(el, "<mailet>")? {
        Some(m) => m,
        None => MatcherRef {
            config: MatcherConfig {
                class: "All".into(),
                name: "All".into(),
                condition: None,
                position: el.position.clone(),
            },
            invert: false,
        },
    };
    let mut parameters: Vec<Parameter> = Vec::new();
    let mut on_mailet_exception = None;
    let mut on_match_exception = None;
    for child in &el.children {
        if child.name == EXCEPTION_ELEMENTS[0] {
            on_mailet_exception = Some((child.text.clone(), child.position.clone()));
            continue;
        }
        if child.name == EXCEPTION_ELEMENTS[1] {
            on_match_exception = Some((child.text.clone(), child.position.clone()));
            continue;
        }
        let name = child.name.replace("..", ".");
        match parameters.iter_mut().find(|p| p.name == name) {
            Some(p) => {
                p.value.push(',');
                p.value.push_str(&child.text);
            }
            None => parameters.push(Parameter {
                name,
                value: child.text.clone(),
                position: child.position.clone(),
            }),
        }
    }
    Ok(MailetStepConfig {
        mailet: MailetConfig {
            name: simple_name(&class).to_string(),
            class,
            processor: state.to_string(),
            parameters,
            position: el.position.clone(),
            asked: Default::default(),
        },
        matcher,
        on_mailet_exception,
        on_match_exception,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<mailetcontainer enableJmx="true">
  <context><postmaster>Admin</postmaster></context>
  <spooler><threads>20</threads><errorRepository>memory://var/mail/error/</errorRepository></spooler>
  <processors>
    <processor state="root">
      <mailet match="HasHeader=X-Foo=bar" class="org.apache.james.transport.mailets.SetMailAttribute">
        <a..b>1</a..b>
        <list>x</list>
        <list>y</list>
        <onMailetException>ignore</onMailetException>
      </mailet>
      <mailet notmatch="relay-allowed" class="ToProcessor"><processor>transport</processor></mailet>
      <matcher name="relay-allowed" match="org.apache.james.mailetcontainer.impl.matchers.Or">
        <matcher match="SMTPAuthSuccessful"/>
        <matcher match="org.apache.james.mailetcontainer.impl.matchers.Not">
          <matcher match="SenderIsNull"/>
        </matcher>
      </matcher>
      <mailet class="Null"/>
    </processor>
  </processors>
</mailetcontainer>"#;

    #[test]
    fn parses_james_grammar() {
        let c = MailetContainerConfig::parse(XML, Path::new("m.xml")).unwrap();
        assert_eq!(c.postmaster, "Admin");
        assert_eq!(c.threads, 20);
        assert_eq!(c.error_repository, "memory://var/mail/error/");
        let root = &c.processors[0];
        let first = &root.mailets[0];
        assert_eq!(first.matcher.config.name, "HasHeader");
        assert_eq!(first.matcher.config.condition.as_deref(), Some("X-Foo=bar"));
        assert_eq!(first.mailet.name, "SetMailAttribute");
        assert_eq!(first.mailet.get("a.b"), Some("1"));
        assert_eq!(first.mailet.get("list"), Some("x,y"));
        assert_eq!(first.mailet.get("onMailetException"), None);
        assert_eq!(first.on_mailet_exception.as_ref().unwrap().0, "ignore");
        assert!(root.mailets[1].matcher.invert);
        assert_eq!(root.mailets[2].matcher.config.name, "All");
        let comp = &root.composites[0];
        assert_eq!(comp.name, "relay-allowed");
        assert!(comp.operator.config.class.ends_with(".Or"));
        assert!(matches!(comp.children[1], CompositeChild::Composite(_)));
    }

    #[test]
    fn missing_processors_take_the_embedded_ones() {
        let c = MailetContainerConfig::parse("<mailetcontainer/>", Path::new("m.xml")).unwrap();
        let states: Vec<&str> = c.processors.iter().map(|p| p.state.as_str()).collect();
        assert_eq!(states, ["root", "error", "transport"]);
    }

    #[test]
    fn defaults_and_bad_threads() {
        let c = MailetContainerConfig::parse(
            "<mailetcontainer><processors/></mailetcontainer>",
            Path::new("m.xml"),
        )
        .unwrap();
        assert_eq!(c.threads, DEFAULT_THREADS);
        assert_eq!(c.postmaster, "postmaster");
        let err = MailetContainerConfig::parse(
            "<mailetcontainer>\n<spooler><threads>-1</threads></spooler></mailetcontainer>",
            Path::new("m.xml"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.xml:2:10: <threads> is \"-1\": expected a number of mails processed at once (0 or more)"
        );
    }

    #[test]
    fn match_and_notmatch_together_is_an_error() {
        let err = MailetContainerConfig::parse(
            "<mailetcontainer><processors><processor state=\"root\">\n  <mailet match=\"All\" notmatch=\"All\" class=\"Null\"/></processor></processors></mailetcontainer>",
            Path::new("m.xml"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.xml:2:3: <mailet> has both match and notmatch: expected one of them"
        );
    }
}
