//! How mailetd authenticates to a standard CalDAV/CardDAV server (`[dav]` of mailetd.toml):
//! one service account, a per-user credentials file, or nothing.

use std::collections::HashMap;
use std::path::Path;

use crate::config::settings::{DavSettings, Secret};
use crate::config::{ConfigError, Position};

/// Who requests are made as, read once from `[dav]`.
pub enum Credentials {
    /// One service account with write rights on every collection.
    Service {
        /// The account's login.
        username: String,
        /// Its password.
        password: Secret,
    },
    /// Each user's own account, by lowercased address.
    PerUser(HashMap<String, (String, Secret)>),
    /// No Authorization header (a server without auth).
    None,
}

impl Credentials {
    /// `credentials_file` wins over `username`/`password`; neither means no auth.
    pub fn from_settings(settings: &DavSettings) -> Result<Credentials, ConfigError> {
        Ok(match (&settings.credentials_file, &settings.username) {
            (Some(file), _) => Credentials::PerUser(read_credentials(file)?),
            (None, Some(username)) => Credentials::Service {
                username: username.clone(),
                password: settings.password.clone().unwrap_or_default(),
            },
            (None, None) => Credentials::None,
        })
    }

    /// Whether requests can be made for `owner` (a per-user file may not list them).
    pub fn covers(&self, owner: &str) -> bool {
        match self {
            Credentials::PerUser(map) => map.contains_key(&owner.to_lowercase()),
            _ => true,
        }
    }

    /// `builder` authenticated for `owner`; `None` when the per-user file does not list them.
    pub fn authorize(
        &self,
        builder: reqwest::RequestBuilder,
        owner: &str,
    ) -> Option<reqwest::RequestBuilder> {
        match self {
            Credentials::Service { username, password } => {
                Some(builder.basic_auth(username, Some(password.expose())))
            }
            Credentials::PerUser(map) => map
                .get(&owner.to_lowercase())
                .map(|(u, p)| builder.basic_auth(u, Some(p.expose()))),
            Credentials::None => Some(builder),
        }
    }
}

/// Reads `user:password` lines (`#` comments); a bad line is reported without its content.
pub fn read_credentials(path: &Path) -> Result<HashMap<String, (String, Secret)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Position::file_start(path).error(format!("cannot read the DAV credentials file: {e}"))
    })?;
    let file = std::sync::Arc::new(path.to_path_buf());
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, password)) if !user.trim().is_empty() => {
                map.insert(
                    user.trim().to_lowercase(),
                    (user.trim().to_string(), Secret::new(password)),
                );
            }
            _ => {
                return Err(Position::new(&file, n as u32 + 1, 1)
                    .error("expected user:password (the password is not shown)"));
            }
        }
    }
    Ok(map)
}
