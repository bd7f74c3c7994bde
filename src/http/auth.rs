//! Optional Basic auth in front of every admin route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::config::settings::HttpSettings;

/// The expected Basic credentials (base64 of `user:password`).
pub(super) struct Credentials {
    expected: Vec<u8>,
}

impl Credentials {
    /// `None` when `[http]` has no username (validated beforehand).
    pub(super) fn from_settings(settings: &HttpSettings) -> Option<Credentials> {
        let user = settings.username.as_deref().filter(|u| !u.is_empty())?;
        let password = settings.password.as_ref()?.expose();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(Credentials {
            expected: token.into_bytes(),
        })
    }

    fn accepts(&self, given: Option<&HeaderValue>) -> bool {
        let Some(given) = given else { return false };
        // RFC 7235: the scheme is case-insensitive (`basic` is Basic) and one or more
        // spaces separate it from the credentials.
        let given = given.as_bytes();
        let Some(space) = given.iter().position(|b| *b == b' ') else {
            return false;
        };
        if !given[..space].eq_ignore_ascii_case(b"Basic") {
            return false;
        }
        let start = given[space..]
            .iter()
            .position(|b| *b != b' ')
            .map_or(given.len(), |i| space + i);
        let given = &given[start..];
        // Same work whatever the first differing byte: no timing hint at the password.
        given.len() == self.expected.len()
            && given
                .iter()
                .zip(&self.expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Answers 401 unless the request carries the configured credentials.
pub(super) async fn require(
    State(credentials): State<Arc<Option<Credentials>>>,
    request: Request,
    next: Next,
) -> Response {
    match credentials.as_ref() {
        Some(c) if !c.accepts(request.headers().get(header::AUTHORIZATION)) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"mailetd\"")],
            "authentication required\n",
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn the_scheme_is_case_insensitive() {
        let c = Credentials::from_settings(&HttpSettings {
            username: Some("ops".into()),
            password: Some(Secret::new("pw")),
            ..HttpSettings::default()
        })
        .unwrap();
        // base64("ops:pw")
        for header in ["Basic b3BzOnB3", "basic b3BzOnB3", "BASIC  b3BzOnB3"] {
            assert!(
                c.accepts(Some(&HeaderValue::from_static(header))),
                "{header}"
            );
        }
        for header in [
            "Basic b3BzOnB4",
            "Bearer b3BzOnB3",
            "b3BzOnB3",
            "Basicb3BzOnB3",
        ] {
            assert!(
                !c.accepts(Some(&HeaderValue::from_static(header))),
                "{header}"
            );
        }
    }
}
