//! Optional Basic auth in front of every admin route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::config::settings::HttpSettings;

/// The expected `Authorization` value.
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
            expected: format!("Basic {token}").into_bytes(),
        })
    }

    fn accepts(&self, given: Option<&HeaderValue>) -> bool {
        let Some(given) = given else { return false };
        let given = given.as_bytes();
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
