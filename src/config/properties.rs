//! Java `.properties` files (James `PropertiesConfiguration`), with `${…}` interpolation
//! ([`super::interpolate`]): strict in the files mailetd uses ([`USED_FILES`]), lenient (an
//! unresolved `${…}` stays literal, as in James) in the others, which James modules read
//! and mailetd does not (`postgres.properties`, `blob.properties`, `jmap.properties`, …).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::error::{ConfigError, Position};
use super::interpolate::{Lookups, interpolate_in, system_property};

/// The `.properties` files whose keys mailetd reads: an unresolved `${…}` in them is an error.
pub const USED_FILES: &[&str] = &["openpaas.properties"];

/// One value with the place it was defined.
#[derive(Clone, Debug)]
pub struct PropertyValue {
    /// The interpolated value.
    pub value: String,
    /// Where the key was written.
    pub position: Position,
}

/// All properties of one or more `.properties` files, by key.
#[derive(Clone, Debug, Default)]
pub struct Properties {
    entries: BTreeMap<String, PropertyValue>,
}

impl Properties {
    /// Reads and interpolates one file (strictly: see [`USED_FILES`]).
    pub fn load(path: &Path) -> Result<Properties, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Position::file_start(path).error(format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    /// Whether mailetd reads keys from the file `path` (so `${…}` there must resolve).
    pub fn is_used_file(path: &Path) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| USED_FILES.contains(&n))
    }

    /// Reads every `*.properties` file of `dir`, in name order (later files win).
    pub fn load_dir(dir: &Path) -> Result<Properties, ConfigError> {
        match Self::load_dir_all(dir) {
            (all, errors) if errors.is_empty() => Ok(all),
            (_, mut errors) => Err(errors.remove(0)),
        }
    }

    /// [`Properties::load_dir`], going on after a file's error: the files read, the errors.
    pub fn load_dir_all(dir: &Path) -> (Properties, Vec<ConfigError>) {
        let mut paths: Vec<_> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "properties"))
                .collect(),
            Err(_) => Vec::new(),
        };
        paths.sort();
        let mut all = Properties::default();
        let mut errors = Vec::new();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(Position::file_start(&path).error(format!("cannot read: {e}")));
                    continue;
                }
            };
            let strict = Self::is_used_file(&path);
            if !strict && text.contains("${") {
                tracing::debug!(file = %path.display(), "not read by mailetd: ${{…}} that do not resolve are kept as written");
            }
            match Self::parse_with(&text, &path, strict) {
                Ok(p) => all.merge(p),
                Err(e) => errors.push(e),
            }
        }
        (all, errors)
    }

    /// Parses `.properties` text (comments `#`/`!`, `=`/`:`/space separators, `\` continuations);
    /// every `${…}` must resolve.
    pub fn parse(text: &str, path: &Path) -> Result<Properties, ConfigError> {
        Self::parse_with(text, path, true)
    }

    /// [`Properties::parse`]; with `strict` false, a `${…}` that does not resolve is kept.
    pub fn parse_with(text: &str, path: &Path, strict: bool) -> Result<Properties, ConfigError> {
        let raw = raw_entries(text, path);
        let raw_values: BTreeMap<&str, &str> = raw
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        let dir = path.parent();
        let env = |name: &str| std::env::var(name).ok();
        let sys = |name: &str| system_property(name, dir);
        let keys = |key: &str| raw_values.get(key).map(|v| v.to_string());
        let lookups = Lookups {
            env: &env,
            sys: &sys,
            keys: Some(&keys),
            strict,
        };
        let mut entries = BTreeMap::new();
        for entry in &raw {
            let value = interpolate_in(&entry.value, &entry.value_position, &lookups)?;
            entries.insert(
                entry.key.clone(),
                PropertyValue {
                    value,
                    position: entry.position.clone(),
                },
            );
        }
        Ok(Properties { entries })
    }

    /// Adds every entry of `other` (later files win).
    pub fn merge(&mut self, other: Properties) {
        self.entries.extend(other.entries);
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|v| v.value.as_str())
    }

    /// The value and position of `key`.
    pub fn entry(&self, key: &str) -> Option<&PropertyValue> {
        self.entries.get(key)
    }

    /// The value as a list (`,` delimiter, trimmed, empty items dropped).
    pub fn get_list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// One `key=value` line before interpolation.
struct RawEntry {
    key: String,
    value: String,
    /// Where the key is.
    position: Position,
    /// Where the value starts.
    value_position: Position,
}

fn raw_entries(text: &str, path: &Path) -> Vec<RawEntry> {
    let file = Arc::new(path.to_path_buf());
    let mut entries = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let column = (line.len() - trimmed.len()) as u32 + 1;
        let mut logical = trimmed.to_string();
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, raw) = split_key_value(&logical);
        let position = Position::new(&file, index as u32 + 1, column);
        let value_position = Position::new(
            &file,
            index as u32 + 1,
            column + (logical.len() - raw.len()) as u32,
        );
        entries.push(RawEntry {
            key: unescape(key),
            value: unescape(raw),
            position,
            value_position,
        });
    }
    entries
}

/// The uninterpolated value of `key` in `.properties` text (later lines win).
pub fn raw_value(text: &str, key: &str) -> Option<String> {
    raw_entries(text, Path::new(""))
        .into_iter()
        .rev()
        .find(|e| e.key == key)
        .map(|e| e.value)
}

fn ends_with_continuation(line: &str) -> bool {
    line.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

fn split_key_value(line: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' => {
                let key = &line[..i];
                let mut rest = line[i..].trim_start_matches([' ', '\t']);
                let separator_follows = rest.starts_with('=') || rest.starts_with(':');
                if c == '=' || c == ':' || separator_follows {
                    rest = &rest[1..];
                }
                return (key, rest.trim_start_matches([' ', '\t']));
            }
            _ => {}
        }
    }
    (line, "")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_james_openpaas_properties() {
        let text = "# comment\nopenpaas.api.uri=${env:MAILETD_TEST_UNSET_X:-http://side/api}\nopenpaas.admin.user = admin@x\nlist=a, b,,c\nmulti=one \\\n   two\n";
        let p = Properties::parse(text, Path::new("openpaas.properties")).unwrap();
        assert_eq!(p.get("openpaas.api.uri"), Some("http://side/api"));
        assert_eq!(p.get("openpaas.admin.user"), Some("admin@x"));
        assert_eq!(p.get_list("list"), vec!["a", "b", "c"]);
        assert_eq!(p.get("multi"), Some("one two"));
        assert_eq!(p.entry("openpaas.admin.user").unwrap().position.line, 3);
    }

    #[test]
    fn keys_of_the_same_file_and_system_properties_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("jvm.properties"),
            "james.dav.host=dav.local\n",
        )
        .unwrap();
        let text = "api.uri=${base}/api\nbase=http://${sys:james.dav.host}:${port}\nport=8080\ntmp=${sys:java.io.tmpdir}\n";
        let p = Properties::parse(text, &dir.path().join("openpaas.properties")).unwrap();
        assert_eq!(p.get("api.uri"), Some("http://dav.local:8080/api"));
        assert_eq!(
            p.get("tmp"),
            Some(std::env::temp_dir().display().to_string().as_str())
        );
        let err = Properties::parse("a=${nokey}\n", Path::new("openpaas.properties")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("openpaas.properties:1:3: ${nokey}: no key"),
            "{err}"
        );
        let lenient = Properties::parse_with(
            "a=${env:MAILETD_TEST_UNSET_L}\nb=${nokey}\n",
            Path::new("postgres.properties"),
            false,
        )
        .unwrap();
        assert_eq!(lenient.get("a"), Some("${env:MAILETD_TEST_UNSET_L}"));
        assert_eq!(lenient.get("b"), Some("${nokey}"));
    }

    #[test]
    fn unset_variable_names_file_and_line() {
        let err = Properties::parse(
            "\n\nkey=${env:MAILETD_TEST_UNSET_Y}\n",
            Path::new("conf/openpaas.properties"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "conf/openpaas.properties:3:5: environment variable MAILETD_TEST_UNSET_Y is not set"
            ),
            "{err}"
        );
    }
}
