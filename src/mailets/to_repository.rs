//! `ToRepository`: stores the mail in a repository (`NAME.eml` + `NAME.json`), then deletes it
//! unless `passThrough` is true.
//!
//! ```xml
//! <mailet match="All" class="ToRepository">
//!   <repositoryPath>file://mail/error/</repositoryPath>  <!-- relative: under data_dir -->
//!   <passThrough>false</passThrough>
//! </mailet>
//! ```
//!
//! `memory://`, `postgres://` and `cassandra://` paths are kept as files under
//! `data_dir/repositories/` (with a warning), see [`crate::repository`].

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{GHOST, Mailet, MailetConfig, MailetContext, MailetError};
use crate::repository::Repository;

/// Stores mails.
pub struct ToRepository {
    repository: Repository,
    pass_through: bool,
}

impl ToRepository {
    /// `repositoryPath` is required; `passThrough` defaults to false.
    pub fn build(
        config: &MailetConfig,
        ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        let url = config.require("repositoryPath")?;
        let repository = Repository::open(url, &ctx.data_dir).map_err(|e| {
            config
                .parameter("repositoryPath")
                .map(|p| p.position.error(e.clone()))
                .unwrap_or_else(|| config.error(e))
        })?;
        Ok(Box::new(ToRepository {
            repository,
            pass_through: config.get_bool("passThrough", false)?,
        }))
    }
}

#[async_trait]
impl Mailet for ToRepository {
    async fn service(&self, mail: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError> {
        if ctx.dry_run {
            tracing::info!(mail = %mail.name, "dry run: would store the mail in {}", self.repository.dir.display());
        } else {
            let key = store_blocking(&self.repository, mail).await?;
            tracing::info!(mail = %mail.name, key = %key, "stored in {}", self.repository.url);
        }
        if !self.pass_through {
            mail.state = GHOST.to_string();
        }
        Ok(())
    }
}

/// Stores `mail` off the async threads. The mail is lent to the blocking task and given
/// back, not copied (a copy of a 25 MB mail and its attributes was the peak of its run).
async fn store_blocking(repository: &Repository, mail: &mut Mail) -> anyhow::Result<String> {
    let repository = repository.clone();
    let lent = std::mem::replace(mail, Mail::new(None, Vec::new(), Vec::new()));
    let task = tokio::task::spawn_blocking(move || {
        let stored =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| repository.store(&lent)));
        (lent, stored)
    });
    // a join error is the runtime shutting down: the mail's processing ends with it, and
    // the spool still holds the mail
    let (lent, stored) = task.await?;
    *mail = lent;
    stored.unwrap_or_else(|_| Err(anyhow::anyhow!("storing the mail panicked")))
}

#[cfg(test)]
mod tests {
    use crate::mailets::testing::*;
    use crate::repository::Repository;

    #[tokio::test]
    async fn stores_and_ghosts() {
        let mut m = mail("Subject: s\r\n\r\nbody");
        let dir = service_in_data_dir(
            "ToRepository",
            &[("repositoryPath", "file://mail/x/")],
            &mut m,
        )
        .await;
        assert_eq!(m.state, "ghost");
        let repo = Repository::open("file://mail/x/", dir.path()).unwrap();
        let keys = repo.list().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            repo.load(&keys[0]).unwrap().message,
            b"Subject: s\r\n\r\nbody"
        );
        assert!(
            build_err("ToRepository", &[("repositoryPath", "var/mail")]).contains("has no scheme")
        );
    }
}
