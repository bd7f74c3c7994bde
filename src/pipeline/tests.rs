//! Container behaviour on small configurations: splitting, hand-over, exception routes,
//! run-time unknown states, startup validation.

use std::path::Path;

use crate::config::MailetContainerConfig;
use crate::mail::{AttributeValue, Mail, MailAddress, attributes};

use super::{Container, MailetContext, Run};

fn container(processors: &str) -> Result<Container, String> {
    let xml =
        format!("<mailetcontainer>\n<processors>\n{processors}\n</processors>\n</mailetcontainer>");
    let config =
        MailetContainerConfig::parse(&xml, Path::new("mc.xml")).map_err(|e| e.to_string())?;
    let ctx = MailetContext::for_tests(std::env::temp_dir());
    Container::build(&config, &ctx, crate::server::loaders()).map_err(|e| e.to_string())
}

fn mail(recipients: &[&str]) -> Mail {
    let mut m = Mail::new(
        Some(MailAddress::parse("a@remote.test").unwrap()),
        recipients
            .iter()
            .map(|r| MailAddress::parse(r).unwrap())
            .collect(),
        b"Subject: t\r\n\r\nbody\r\n".to_vec(),
    );
    m.name = "m".into();
    m
}

async fn run(c: &Container, m: Mail) -> (Run, anyhow::Result<()>) {
    let mut run = Run::traced();
    let result = c.process(m, &mut run).await;
    (run, result)
}

fn lines(run: &Run) -> Vec<String> {
    run.trace
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} [{}] -> {}",
                e.processor,
                e.mail,
                e.mailet,
                e.recipients.join(","),
                e.state
            )
        })
        .collect()
}

const ERROR: &str = r#"<processor state="error"><mailet match="All" class="Null"/></processor>"#;

#[tokio::test]
async fn split_copies_continue_separately() {
    let c = container(&format!(
        r#"<processor state="root">
  <mailet match="RecipientIsLocal" class="SetMailAttribute"><local>yes</local></mailet>
  <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
</processor>
<processor state="transport"><mailet match="All" class="Null"/></processor>
{ERROR}"#
    ))
    .unwrap();
    let (run, result) = run(&c, mail(&["bob@example.org", "eve@remote.test"])).await;
    result.unwrap();
    assert_eq!(
        lines(&run),
        [
            "root m-!1 SetMailAttribute [bob@example.org] -> root",
            "root m ToProcessor [eve@remote.test] -> transport",
            "transport m Null [eve@remote.test] -> ghost",
            "root m-!1 ToProcessor [bob@example.org] -> transport",
            "transport m-!1 Null [bob@example.org] -> ghost",
        ]
    );
    let attrs = &run.trace.as_ref().unwrap()[0].changes;
    assert_eq!(attrs, &[("local".to_string(), Some("yes".to_string()))]);
}

#[tokio::test]
async fn end_of_processor_deletes_the_mail() {
    let c = container(&format!(
        r#"<processor state="root"><mailet match="HostIsLocal" class="Null"/></processor>{ERROR}"#
    ))
    .unwrap();
    let (run, result) = run(&c, mail(&["eve@remote.test"])).await;
    result.unwrap();
    assert!(lines(&run).is_empty());
    assert_eq!(run.endings.len(), 1);
    assert_eq!(run.endings[0].how, "end-of-processor");
    assert_eq!(run.endings[0].processor, "root");
}

const FAILING: &str = r#"<mailet match="All" class="ToRepository"><repositoryPath>file:///dev/null/cannot</repositoryPath>"#;

#[tokio::test]
async fn mailet_errors_follow_on_mailet_exception() {
    let c = container(&format!(
        r#"<processor state="root">
  {FAILING}<onMailetException>ignore</onMailetException><passThrough>true</passThrough></mailet>
  {FAILING}</mailet>
</processor>
<processor state="error"><mailet match="All" class="LogMessage"/></processor>"#
    ))
    .unwrap();
    let (run, result) = run(&c, mail(&["bob@example.org"])).await;
    result.unwrap();
    let trace = run.trace.as_ref().unwrap();
    assert_eq!(trace[0].state, "root", "ignored: the mail continues");
    assert!(trace[0].error.is_some());
    assert_eq!(trace[1].state, "error");
    let error_attr = trace[1]
        .changes
        .iter()
        .find(|(n, _)| n == attributes::MAILET_ERROR)
        .expect("MailetError attribute");
    assert!(
        error_attr
            .1
            .as_deref()
            .unwrap()
            .contains("/dev/null/cannot")
    );
    assert_eq!(trace[2].processor, "error");
    assert_eq!(run.endings[0].how, "end-of-processor");
}

#[tokio::test]
async fn propagate_fails_the_whole_mail() {
    let c = container(&format!(
        r#"<processor state="root">{FAILING}<onMailetException>propagate</onMailetException></mailet></processor>{ERROR}"#
    ))
    .unwrap();
    let (_, result) = run(&c, mail(&["bob@example.org"])).await;
    let e = result.unwrap_err();
    assert!(
        format!("{e:#}").starts_with("mailet ToRepository in processor root: "),
        "{e:#}"
    );
}

#[tokio::test]
async fn lowercased_route_to_a_missing_processor_falls_back_to_error() {
    let c = container(&format!(
        r#"<processor state="root">
  {FAILING}<onMailetException>deliveryError</onMailetException></mailet>
</processor>
<processor state="deliveryError"><mailet match="All" class="Null"/></processor>
{ERROR}"#
    ))
    .unwrap();
    assert_eq!(c.warnings().len(), 1);
    assert!(
        c.warnings()[0].contains(
            "failing mail goes to processor deliveryerror, which does not exist, so to error"
        ),
        "{}",
        c.warnings()[0]
    );
    let mut m = mail(&["bob@example.org"]);
    m.set_attribute("keep", AttributeValue::Bool(true));
    let (run, result) = run(&c, m).await;
    result.unwrap();
    assert_eq!(
        lines(&run),
        [
            "root m ToRepository [bob@example.org] -> deliveryerror",
            "error m Null [bob@example.org] -> ghost"
        ]
    );
}

#[tokio::test]
async fn unknown_state_at_run_time_goes_to_error_with_the_reason() {
    let c = container(
        r#"<processor state="root"><mailet match="All" class="Null"/></processor>
<processor state="error"><mailet match="HasMailAttributeWithValue=org.apache.james.MailetError, MailProcessor 'gone' could not be found" class="Null"/></processor>"#,
    )
    .unwrap();
    let mut m = mail(&["bob@example.org"]);
    m.state = "gone".into();
    let (run, result) = run(&c, m).await;
    result.unwrap();
    assert_eq!(lines(&run), ["error m Null [bob@example.org] -> ghost"]);
}

#[tokio::test]
async fn composite_matchers_and_notmatch() {
    let c = container(&format!(
        r#"<processor state="root">
  <matcher name="local-or-single" match="org.apache.james.mailetcontainer.impl.matchers.Or">
    <matcher match="RecipientIsLocal"/>
    <matcher match="RecipientIs=carol@remote.test"/>
  </matcher>
  <mailet notmatch="local-or-single" class="Null"/>
  <mailet match="All" class="SetMailAttribute"><kept>1</kept></mailet>
  <mailet match="All" class="Null"/>
</processor>{ERROR}"#
    ))
    .unwrap();
    let (run, result) = run(
        &c,
        mail(&["bob@example.org", "carol@remote.test", "eve@remote.test"]),
    )
    .await;
    result.unwrap();
    assert_eq!(
        lines(&run),
        [
            "root m-!1 Null [eve@remote.test] -> ghost",
            "root m SetMailAttribute [bob@example.org,carol@remote.test] -> root",
            "root m Null [bob@example.org,carol@remote.test] -> ghost",
        ]
    );
}

#[tokio::test]
async fn handover_loops_are_failed() {
    let c = container(&format!(
        r#"<processor state="root"><mailet match="All" class="ToProcessor"><processor>other</processor></mailet></processor>
<processor state="other"><mailet match="All" class="ToProcessor"><processor>root</processor></mailet></processor>{ERROR}"#
    ))
    .unwrap();
    let (_, result) = run(&c, mail(&["bob@example.org"])).await;
    assert!(
        format!("{:#}", result.unwrap_err())
            .contains("handed between processors more than 64 times")
    );
}

#[test]
fn startup_validation_messages() {
    assert_eq!(
        container(r#"<processor state="root"><mailet class="Null"/></processor>"#)
            .err()
            .unwrap(),
        "mc.xml:1:1: no <processor state=\"error\">: the processors root and error are required (found: root)"
    );
    assert_eq!(
        container(&format!("{ERROR}\n<processor state=\"root\"><mailet class=\"ToProcessor\"><processor>transprot</processor></mailet></processor>\n<processor state=\"transport\"/>")).err().unwrap(),
        "mc.xml:4:53: ToProcessor in processor root sends mail to processor \"transprot\", which does not exist (processors: error, root, transport); did you mean transport?"
    );
    assert_eq!(
        container(&format!("{ERROR}\n<processor state=\"ghost\"/>"))
            .err()
            .unwrap(),
        "mc.xml:4:1: processor state ghost is reserved (it means \"done, delete\"): choose another name"
    );
    assert_eq!(
        container(&format!("{ERROR}\n<processor state=\"root\"><mailet class=\"Nul\"><onMailetException>x</onMailetException></mailet></processor>")).err().unwrap(),
        "mc.xml:4:25: unknown mailet class \"Nul\"; did you mean Null?"
    );
    assert_eq!(
        container(&format!("{ERROR}\n<processor state=\"root\"><mailet class=\"Null\"><onMailetException>trash</onMailetException></mailet></processor>")).err().unwrap(),
        "mc.xml:4:46: <onMailetException> is \"trash\", which is not a processor (processors: error, root): expected ignore, propagate or a processor name"
    );
    let c = container(&format!(
        "{ERROR}\n<processor state=\"root\"><mailet class=\"Null\"/></processor>\n<processor state=\"transport\"><mailet class=\"Null\"/></processor>"
    ))
    .unwrap();
    assert!(c.warnings()[0].starts_with("mc.xml:5:1: processor transport has no <mailet match=\"All\" class=\"RemoveMimeHeader\"><name>bcc</name></mailet>"));
}

mod hand_built {
    //! Matcher failures and outbox jobs: no registered matcher fails and no core mailet
    //! creates jobs, so these processors are assembled by hand.

    use std::sync::Arc;

    use async_trait::async_trait;

    use super::mail;
    use crate::mail::job::OutboxJob;
    use crate::mail::{Mail, MailAddress, attributes};
    use crate::matchers;
    use crate::pipeline::processor::{ExceptionRoute, Processor, Step};
    use crate::pipeline::{
        Container, Mailet, MailetConfig, MailetContext, MailetError, Matcher, MatcherConfig,
        MatcherError, Run,
    };

    struct Failing;
    impl Matcher for Failing {
        fn match_mail(
            &self,
            _: &Mail,
            _: &MailetContext,
        ) -> Result<Vec<MailAddress>, MatcherError> {
            anyhow::bail!("lookup service down")
        }
    }

    /// Adds one job per recipient.
    struct Jobs;
    #[async_trait]
    impl Mailet for Jobs {
        async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
            for r in &mail.recipients {
                mail.jobs
                    .push(OutboxJob::new("test", r.to_string(), serde_json::json!({})));
            }
            Ok(())
        }
    }

    fn ctx() -> MailetContext {
        MailetContext::for_tests(std::env::temp_dir())
    }

    fn step(mailet: Box<dyn Mailet>, matcher: Arc<dyn Matcher>, on_match: ExceptionRoute) -> Step {
        Step {
            mailet,
            config: MailetConfig::inline("Test", &[]),
            matcher,
            matcher_text: "match=\"Test\"".into(),
            on_mailet_exception: ExceptionRoute::parse(None),
            on_match_exception: on_match,
        }
    }

    fn null() -> Box<dyn Mailet> {
        crate::mailets::build(&MailetConfig::inline("Null", &[]), &ctx()).unwrap()
    }

    fn matcher(name: &str, cond: Option<&str>) -> Arc<dyn Matcher> {
        Arc::from(matchers::build(&MatcherConfig::inline(name, cond), &ctx()).unwrap())
    }

    fn with_route(route: ExceptionRoute) -> Container {
        let error_mark = crate::mailets::build(
            &MailetConfig::inline("SetMailAttribute", &[("in-error", "yes")]),
            &ctx(),
        )
        .unwrap();
        Container::from_processors(
            vec![
                Processor {
                    state: "root".into(),
                    steps: vec![step(null(), Arc::new(Failing), route)],
                },
                Processor {
                    state: "error".into(),
                    steps: vec![step(
                        error_mark,
                        matcher("All", None),
                        ExceptionRoute::Propagate,
                    )],
                },
            ],
            ctx(),
        )
    }

    async fn outcome(route: ExceptionRoute) -> (Run, anyhow::Result<()>) {
        let c = with_route(route);
        let mut run = Run::traced();
        let result = c.process(mail(&["bob@example.org"]), &mut run).await;
        (run, result)
    }

    #[tokio::test]
    async fn on_match_exception_routes() {
        let (run, r) = outcome(ExceptionRoute::NoMatch).await;
        r.unwrap();
        assert!(run.trace.unwrap().is_empty());
        assert_eq!(run.endings[0].how, "end-of-processor");

        let (run, r) = outcome(ExceptionRoute::MatchAll).await;
        r.unwrap();
        assert_eq!(run.trace.unwrap()[0].state, "ghost", "Null ran");

        let (_, r) = outcome(ExceptionRoute::Propagate).await;
        assert!(format!("{:#}", r.unwrap_err()).contains("lookup service down"));

        let (run, r) = outcome(ExceptionRoute::parse(None)).await;
        r.unwrap();
        let trace = run.trace.unwrap();
        assert_eq!(trace[0].processor, "error");
        assert_eq!(run.endings[0].processor, "error");
        assert!(trace[0].changes.iter().any(|(n, _)| n == "in-error"));
        // the error attribute was set before the error processor ran
        assert!(
            !trace[0]
                .changes
                .iter()
                .any(|(n, _)| n == attributes::MAILET_ERROR)
        );
    }

    #[tokio::test]
    async fn jobs_of_every_copy_are_collected_once() {
        let c = Container::from_processors(
            vec![
                Processor {
                    state: "root".into(),
                    steps: vec![
                        step(
                            Box::new(Jobs),
                            matcher("All", None),
                            ExceptionRoute::Propagate,
                        ),
                        step(
                            Box::new(Jobs),
                            matcher("RecipientIsLocal", None),
                            ExceptionRoute::Propagate,
                        ),
                        step(
                            null(),
                            matcher("HostIsLocal", None),
                            ExceptionRoute::Propagate,
                        ),
                    ],
                },
                Processor {
                    state: "error".into(),
                    steps: vec![],
                },
            ],
            ctx(),
        );
        let mut run = Run::default();
        c.process(mail(&["bob@example.org", "eve@remote.test"]), &mut run)
            .await
            .unwrap();
        let mut jobs: Vec<(String, String)> = run
            .jobs
            .iter()
            .map(|j| (j.target.clone(), j.mail_name.clone()))
            .collect();
        jobs.sort();
        assert_eq!(
            jobs,
            [
                ("bob@example.org".to_string(), "m".to_string()),
                ("bob@example.org".to_string(), "m-!1".to_string()),
                ("eve@remote.test".to_string(), "m".to_string()),
            ]
        );
    }
}
