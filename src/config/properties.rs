//! Java `.properties` files (James `PropertiesConfiguration`), with env interpolation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::error::{ConfigError, Position};
use super::interpolate::interpolate;

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
    /// Reads and interpolates one file.
    pub fn load(path: &Path) -> Result<Properties, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Position::file_start(path).error(format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    /// Reads every `*.properties` file of `dir`, in name order (later files win).
    pub fn load_dir(dir: &Path) -> Result<Properties, ConfigError> {
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
        for path in paths {
            all.merge(Self::load(&path)?);
        }
        Ok(all)
    }

    /// Parses `.properties` text (comments `#`/`!`, `=`/`:`/space separators, `\` continuations).
    pub fn parse(text: &str, path: &Path) -> Result<Properties, ConfigError> {
        let file = Arc::new(path.to_path_buf());
        let mut entries = BTreeMap::new();
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
            let value = interpolate(&unescape(raw), &value_position)?;
            entries.insert(unescape(key), PropertyValue { value, position });
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
