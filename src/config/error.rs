//! Configuration errors that point at the offending file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A place in a configuration file (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The file.
    pub file: Arc<PathBuf>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
}

impl Position {
    /// A position in `file`.
    pub fn new(file: &Arc<PathBuf>, line: u32, column: u32) -> Self {
        Position {
            file: file.clone(),
            line,
            column,
        }
    }

    /// The start of a file (for errors about the file as a whole).
    pub fn file_start(file: &Path) -> Self {
        Position {
            file: Arc::new(file.to_path_buf()),
            line: 1,
            column: 1,
        }
    }

    /// An error at this position.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            position: Some(self.clone()),
            message: message.into(),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A configuration error: `file:line:column: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, when known.
    pub position: Option<Position>,
    /// What was found and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error not tied to a position.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            position: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.position {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration, in the order found (`mailetd check` reports them
/// all in one run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => one.fmt(f),
            all => {
                write!(f, "{} errors in the configuration:", all.len())?;
                for e in all {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

/// `"; did you mean A, B?"` with the names of `known` closest to `wanted`, or `""`.
pub fn did_you_mean<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let suggestions = closest_names(wanted, known);
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

/// `class` without the first of `prefixes` it starts with (James package names → short name).
pub fn strip_class_prefix<'a>(class: &'a str, prefixes: &[&str]) -> &'a str {
    prefixes
        .iter()
        .find_map(|p| class.strip_prefix(p))
        .unwrap_or(class)
}

/// The names in `known` closest to `wanted` (edit distance, case-insensitive), best first.
pub fn closest_names<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let wanted_lower = wanted.to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = known
        .into_iter()
        .map(|k| (edit_distance(&wanted_lower, &k.to_ascii_lowercase()), k))
        .collect();
    scored.sort();
    let best = scored.first().map(|s| s.0).unwrap_or(0);
    let limit = (wanted.len() / 2).max(3).max(best);
    scored
        .into_iter()
        .filter(|(d, _)| *d <= limit)
        .take(3)
        .map(|(_, k)| k)
        .collect()
}

/// Levenshtein distance between two strings (in characters).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        let known = ["ToProcessor", "ToRepository", "Null", "LogMessage"];
        assert_eq!(closest_names("ToProccessor", known)[0], "ToProcessor");
        assert_eq!(closest_names("nul", known)[0], "Null");
    }
}
