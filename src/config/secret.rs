//! Secrets read from the configuration, and the one place that decides what is secret and
//! how it is hidden: [`Secret`] values, [`is_secret_key`] for properties, and the userinfo
//! of URLs ([`redact_urls`] for any text, [`redact_url_value`] for a configured value,
//! [`take_userinfo`] to move it out of a URL before the URL is kept anywhere).

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;
use serde::Deserialize;

/// What replaces a hidden value.
pub const HIDDEN: &str = "(hidden)";

/// A secret (password): `Debug` and `Display` print `***`, so it never reaches a log line,
/// a `check` printout or an error message.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear value, for building an `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Whether a property's value must not be printed: its name holds `pass` (`password`,
/// `*.pass`, `passphrase`), `secret`, `token`, `key` (`jwt.privatekey`, `api.key`) or
/// `credential`, in any case.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "credential"]
        .iter()
        .any(|word| k.contains(word))
}

/// `text` with the userinfo of every URL in it hidden (`amqp://user:pw@host` →
/// `amqp://user:(hidden)@host`; a userinfo without `:` is hidden whole). For free text (log
/// lines, errors): an authority ends at `/`, `?`, `#`, whitespace or a quote.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    redact(text, |c| {
        matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
    })
}

/// [`redact_urls`] for one configured value (or a comma list of URLs): the authority ends
/// only at `/`, `?` or `#`, so a password holding spaces, quotes or commas is hidden whole.
pub fn redact_url_value(value: &str) -> Cow<'_, str> {
    redact(value, |c| matches!(c, '/' | '?' | '#'))
}

fn redact(text: &str, ends_authority: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let start = scheme_end + 3;
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let authority_end = rest.find(&ends_authority).unwrap_or(rest.len());
        // The last `@` ends the userinfo (a raw `@` in a password comes before it).
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some((user, _)) = rest[..at].split_once(':') {
                out.push_str(user);
                out.push(':');
            }
            out.push_str(HIDDEN);
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Removes the userinfo of `url` and returns it percent-decoded (`None` when it had none),
/// so that the URL can be stored, logged and handed to an HTTP client (which would
/// otherwise send it as its own `Authorization`).
pub fn take_userinfo(url: &mut reqwest::Url) -> Option<(String, Secret)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    let password = Secret::new(decode(url.password().unwrap_or("")));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some((user, password))
}

/// A writer that hides URL userinfo in everything written through it: the log output, so
/// that no call site can leak a URL password into a log line whatever it formats.
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(redact_urls(text).as_bytes())?,
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "openpaas.admin.password",
            "dav.Secret",
            "smtp.pass",
            "api.token",
            "jwt.privatekey",
            "JWT.PUBLICKEY",
            "ldap.credentials",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "openpaas.admin.user",
            "dav.api.uri",
            "openpaas.rest.client.response.timeout",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn userinfo_is_hidden_in_values_and_lists() {
        let v = |s| redact_url_value(s).into_owned();
        assert_eq!(
            v("amqp://guest:guest@127.0.0.1:5672/vhost,amqp://h2"),
            "amqp://guest:(hidden)@127.0.0.1:5672/vhost,amqp://h2"
        );
        assert_eq!(v("http://host/a@b"), "http://host/a@b");
        // a comma, a space and a raw @ in the password
        assert_eq!(v("http://u:p,w@h/x"), "http://u:(hidden)@h/x");
        assert_eq!(v("http://u:p w@h"), "http://u:(hidden)@h");
        assert_eq!(v("http://u:p@ss@h"), "http://u:(hidden)@h");
        assert_eq!(
            v("amqp://a:b,c@h1,amqp://d:e,f@h2"),
            "amqp://a:(hidden)@h1,amqp://d:(hidden)@h2"
        );
        assert_eq!(v("http://tok3n@h/"), "http://(hidden)@h/");
        assert_eq!(v("no url here"), "no url here");
    }

    #[test]
    fn userinfo_is_hidden_in_free_text() {
        let t = |s| redact_urls(s).into_owned();
        assert_eq!(
            t("GET http://u:pw@h:1/users: error sending request to bob@x.org"),
            "GET http://u:(hidden)@h:1/users: error sending request to bob@x.org"
        );
        assert_eq!(
            t("dav.api.uri is \"http://u:pw@h\": expected"),
            "dav.api.uri is \"http://u:(hidden)@h\": expected"
        );
        assert_eq!(
            t("http://h:1 answered, see bob@x"),
            "http://h:1 answered, see bob@x"
        );
    }

    #[test]
    fn userinfo_is_taken_out_of_a_url() {
        let mut url = reqwest::Url::parse("http://ad%40min:p%2Cw@h/api").unwrap();
        let (user, password) = take_userinfo(&mut url).unwrap();
        assert_eq!(user, "ad@min");
        assert_eq!(password.expose(), "p,w");
        assert_eq!(url.as_str(), "http://h/api");
        assert!(take_userinfo(&mut url).is_none());
    }

    #[test]
    fn the_log_writer_redacts() {
        use std::io::Write;
        let mut w = RedactingWriter(Vec::new());
        w.write_all(b"retry ITIP http://a:b@h/x\n").unwrap();
        assert_eq!(w.0, b"retry ITIP http://a:(hidden)@h/x\n");
    }
}
