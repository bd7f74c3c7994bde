//! `[[sources]]` and `[destinations.<name>]` of `mailetd.toml`: where mirrored mail comes
//! from, and the calendars every invitation of some sources is consolidated into
//! (docs/consolidating.md). Validated when the runtime types are built
//! ([`crate::consolidate`]).

use serde::Deserialize;

use super::secret::Secret;

/// One `[[sources]]` entry: a mail system that mirrors to mailetd. A mail belongs to the
/// first source (in file order) that any of its criteria matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceSettings {
    /// The source's name (letters, digits, `.`, `_`, `-`): in `/api/status`, in the
    /// `mailetd.source` attribute and on consolidated events (`X-MAILETD-SOURCE`).
    pub name: String,
    /// Client networks (`10.1.0.0/16`, `192.0.2.7`, `2001:db8::/32`).
    pub networks: Vec<String>,
    /// HELO/EHLO names (`mx1.paris.example`, or `*.paris.example` for any below it).
    pub helo: Vec<String>,
    /// Envelope recipient domains (any recipient in one of them).
    pub recipient_domains: Vec<String>,
    /// A header the mirroring server adds: `X-Mirror-Source: paris` (value compared
    /// case-insensitively) or just `X-Mirror-Source` (present).
    pub header: Option<String>,
}

/// Which kind of calendar server a destination is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// A CalDAV calendar collection (Radicale, SabreDAV, Nextcloud, SOGo…).
    #[default]
    Caldav,
    /// A Microsoft 365 (Exchange Online) calendar through Microsoft Graph.
    Graph,
}

/// One `[destinations.<name>]` table: one calendar that invitations are consolidated into.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationSettings {
    /// `caldav` (default) or `graph`.
    pub kind: DestinationKind,
    /// caldav: the calendar collection's URL (`http://h:5232/team/calendar/`,
    /// `https://mail.example/SOGo/dav/team/Calendar/personal/`).
    pub calendar_url: String,
    /// caldav: Basic auth user.
    pub username: Option<String>,
    /// caldav: its password; graph: unused.
    pub password: Option<Secret>,
    /// graph: the Entra ID tenant (id or domain).
    pub tenant: String,
    /// graph: the application (client) id.
    pub client_id: String,
    /// graph: the client secret.
    pub client_secret: Option<Secret>,
    /// graph: the mailbox whose calendar receives the events (id or userPrincipalName).
    pub user: String,
    /// graph: the token endpoint's host (national clouds differ).
    pub login_url: String,
    /// graph: the Graph API root.
    pub graph_url: String,
    /// Accept any TLS certificate (self-signed test servers only).
    pub trust_all_certs: bool,
    /// Seconds before a request is abandoned (and the job retried later).
    pub timeout_secs: u64,
}

impl Default for DestinationSettings {
    fn default() -> Self {
        DestinationSettings {
            kind: DestinationKind::Caldav,
            calendar_url: String::new(),
            username: None,
            password: None,
            tenant: String::new(),
            client_id: String::new(),
            client_secret: None,
            user: String::new(),
            login_url: "https://login.microsoftonline.com".into(),
            graph_url: "https://graph.microsoft.com/v1.0".into(),
            trust_all_certs: false,
            timeout_secs: 10,
        }
    }
}
