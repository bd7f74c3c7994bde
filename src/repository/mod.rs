//! Mail repositories (`ToRepository`, the spooler's `errorRepository`, `mailetd repo`).
//!
//! A repository is a directory holding each mail as `KEY.eml` (the message, byte for byte)
//! and `KEY.json` (envelope, state, error message and typed attributes). `file://` URLs name
//! the directory (a relative path is resolved under the data directory); any other scheme
//! (`memory://`, `postgres://`, `cassandra://`) falls back to a file repository under
//! `data_dir/repositories/<path>`, with a warning once per URL, because mailetd has no such
//! stores and losing mail silently (memory) is what it is here to avoid.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use std::io::Write;

use anyhow::Context;

use crate::mail::{AttributeValue, Mail, MailAddress, MailId};
use crate::sync::Locked;

/// A mail's JSON in a repository: every field of [`Mail`] but the message (its own file)
/// and the jobs, borrowed, and written as it is serialised: a copy of the mail would copy
/// every attribute (a large invitation's decoded parts, tens of megabytes). Read back as a
/// [`Mail`] (same field names; `jobs` defaults to none).
#[derive(serde::Serialize)]
struct StoredMeta<'a> {
    id: MailId,
    name: &'a str,
    state: &'a str,
    sender: &'a Option<MailAddress>,
    recipients: &'a [MailAddress],
    attributes: &'a std::collections::BTreeMap<String, AttributeValue>,
    remote_addr: std::net::IpAddr,
    helo: &'a str,
    tls: bool,
    received_at_ms: u64,
    error_message: &'a Option<String>,
}

impl<'a> StoredMeta<'a> {
    fn of(mail: &'a Mail) -> Self {
        StoredMeta {
            id: mail.id,
            name: &mail.name,
            state: &mail.state,
            sender: &mail.sender,
            recipients: &mail.recipients,
            attributes: &mail.attributes,
            remote_addr: mail.remote_addr,
            helo: &mail.helo,
            tls: mail.tls,
            received_at_ms: mail.received_at_ms,
            error_message: &mail.error_message,
        }
    }
}

/// A file-backed mail repository.
#[derive(Clone, Debug)]
pub struct Repository {
    /// The URL as configured.
    pub url: String,
    /// The directory the mails are in.
    pub dir: PathBuf,
}

impl Repository {
    /// Maps a repository URL to its directory (no I/O, no warning).
    pub fn locate(url: &str, data_dir: &Path) -> Result<(PathBuf, bool), String> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "repository {url:?} has no scheme: expected file://path (or memory://, postgres://, cassandra://)"
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.split('/').any(|c| c == "..") {
            return Err(format!(
                "repository {url:?}: expected a path such as {scheme}://var/mail/error/"
            ));
        }
        match scheme {
            "file" => {
                let path = Path::new(rest);
                Ok((
                    if path.is_absolute() {
                        path.to_path_buf()
                    } else {
                        data_dir.join(path)
                    },
                    false,
                ))
            }
            _ => Ok((
                data_dir
                    .join("repositories")
                    .join(rest.trim_start_matches('/')),
                true,
            )),
        }
    }

    /// The repository for `url`, warning once per URL when the scheme is not `file`.
    pub fn open(url: &str, data_dir: &Path) -> Result<Repository, String> {
        let (dir, fallback) = Self::locate(url, data_dir)?;
        if fallback {
            static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
            let first = WARNED
                .get_or_init(Default::default)
                .locked()
                .insert(url.to_string());
            if first {
                tracing::warn!(
                    "repository {url}: mailetd has no such store; mails are kept as files in {} instead",
                    dir.display()
                );
            }
        }
        Ok(Repository {
            url: url.to_string(),
            dir,
        })
    }

    /// Stores a mail (message + JSON), returning its key. Both files are synced to disk.
    pub fn store(&self, mail: &Mail) -> anyhow::Result<String> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create repository {}", self.dir.display()))?;
        let base: String = mail
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let stamp = crate::mail::now_ms();
        let mut key = format!("{stamp}-{base}");
        let mut n = 1;
        while self.dir.join(format!("{key}.json")).exists() {
            n += 1;
            key = format!("{stamp}-{base}-{n}");
        }
        let meta = StoredMeta::of(mail);
        write_synced(&self.dir.join(format!("{key}.eml")), |f| {
            f.write_all(&mail.message).map_err(Into::into)
        })?;
        // the JSON is written last, under another name then renamed: a key is listed only
        // once its message and its JSON are complete
        let part = self.dir.join(format!("{key}.json.part"));
        write_synced(&part, |f| {
            let mut out = std::io::BufWriter::new(f);
            serde_json::to_writer_pretty(&mut out, &meta)?;
            out.flush()?;
            Ok(())
        })?;
        std::fs::rename(&part, self.dir.join(format!("{key}.json")))
            .with_context(|| format!("cannot write {key}.json in {}", self.dir.display()))?;
        Ok(key)
    }

    /// The keys of the stored mails, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.dir.display())),
        };
        let mut keys: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(String::from)
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Loads a stored mail.
    pub fn load(&self, key: &str) -> anyhow::Result<Mail> {
        let json_path = self.dir.join(format!("{key}.json"));
        let json = std::fs::read(&json_path)
            .with_context(|| format!("no mail {key} in {}", self.dir.display()))?;
        let mut mail: Mail = serde_json::from_slice(&json)
            .with_context(|| format!("{} is not a mail envelope", json_path.display()))?;
        mail.message = std::fs::read(self.dir.join(format!("{key}.eml")))
            .with_context(|| format!("{key}.eml is missing in {}", self.dir.display()))?;
        Ok(mail)
    }

    /// Removes a stored mail.
    pub fn remove(&self, key: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.dir.join(format!("{key}.json")))?;
        let _ = std::fs::remove_file(self.dir.join(format!("{key}.eml")));
        Ok(())
    }
}

fn write_synced(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    write(&mut f).with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::{AttributeValue, MailAddress};

    #[test]
    fn store_list_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open("file://mail/error/", dir.path()).unwrap();
        assert_eq!(repo.dir, dir.path().join("mail/error"));
        let mut mail = Mail::new(
            None,
            vec![MailAddress::parse("a@b.c").unwrap()],
            b"Subject: x\r\n\r\nbody".to_vec(),
        );
        mail.name = "mail-1/x".into();
        mail.set_attribute("k", AttributeValue::Long(3));
        let key = repo.store(&mail).unwrap();
        assert_eq!(repo.list().unwrap(), vec![key.clone()]);
        let back = repo.load(&key).unwrap();
        assert_eq!(back.message, mail.message);
        assert_eq!(back.attribute("k"), Some(&AttributeValue::Long(3)));
        repo.remove(&key).unwrap();
        assert!(repo.list().unwrap().is_empty());
    }

    #[test]
    fn other_schemes_fall_back_to_files() {
        let data = Path::new("/data");
        assert_eq!(
            Repository::locate("postgres://var/mail/error/", data).unwrap(),
            (PathBuf::from("/data/repositories/var/mail/error"), true)
        );
        assert_eq!(
            Repository::locate("file:///srv/err", data).unwrap(),
            (PathBuf::from("/srv/err"), false)
        );
        assert!(Repository::locate("var/mail", data).is_err());
        assert!(Repository::locate("file://../x", data).is_err());
    }
}
