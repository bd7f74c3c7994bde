//! `${…}` interpolation as Apache Commons Configuration does it for James:
//! - `${env:VAR}` / `${env:VAR:-default}`: an environment variable;
//! - `${sys:name}` / `${sys:name:-default}`: a Java system property. James sets them from
//!   `jvm.properties` of the conf directory; the JVM's own (`user.home`, `user.dir`,
//!   `java.io.tmpdir`, …) are given their obvious values;
//! - `${key}` (in a `.properties` file): the value of another key of the same file.
//!
//! In the files mailetd uses, something that does not resolve is an error pointing at its
//! `${` (James keeps the literal, which then fails later, per mail). In the files mailetd
//! does not use, it is kept literally, as James does, and stops nothing.

use std::path::Path;

use super::error::{ConfigError, Position};

/// How many `${key}` references may nest before the value is taken as a loop.
const MAX_DEPTH: usize = 16;

/// A name → value lookup.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where the values of `${…}` come from.
pub struct Lookups<'a> {
    /// Environment variables.
    pub env: Lookup<'a>,
    /// Java system properties.
    pub sys: Lookup<'a>,
    /// Other keys of the same file (raw, not yet interpolated); `None` outside `.properties`.
    pub keys: Option<Lookup<'a>>,
    /// Whether something unresolved is an error (files mailetd uses) or kept literally.
    pub strict: bool,
}

/// Replaces every `${env:…}` / `${sys:…}` in `value`, reading the process environment and
/// the system properties of `position`'s directory; an unresolved one is an error.
/// `position` is where `value` starts; the error points at the `${` of the unset variable.
pub fn interpolate(value: &str, position: &Position) -> Result<String, ConfigError> {
    if !value.contains("${") {
        return Ok(value.to_string());
    }
    let dir = position.file.parent().map(Path::to_path_buf);
    let env = |name: &str| std::env::var(name).ok();
    let sys = |name: &str| system_property(name, dir.as_deref());
    interpolate_in(
        value,
        position,
        &Lookups {
            env: &env,
            sys: &sys,
            keys: None,
            strict: true,
        },
    )
}

/// [`interpolate`] with an environment lookup of the caller's (tests).
pub fn interpolate_with(
    value: &str,
    position: &Position,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let none = |_: &str| None;
    interpolate_in(
        value,
        position,
        &Lookups {
            env: &lookup,
            sys: &none,
            keys: None,
            strict: true,
        },
    )
}

/// Interpolates `value` with `lookups`.
pub fn interpolate_in(
    value: &str,
    position: &Position,
    lookups: &Lookups,
) -> Result<String, ConfigError> {
    expand(value, position, lookups, 0)
}

fn expand(
    value: &str,
    position: &Position,
    lookups: &Lookups,
    depth: usize,
) -> Result<String, ConfigError> {
    if !value.contains("${") {
        return Ok(value.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut consumed = 0usize;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let expr = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        let var_position = offset_position(position, &value[..consumed + start]);
        match resolve(expr, &var_position, lookups, depth)? {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + len + 1]),
        }
        consumed += start + len + 1;
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of one `${expr}`; `None` keeps it literally (lenient files only).
fn resolve(
    expr: &str,
    position: &Position,
    lookups: &Lookups,
    depth: usize,
) -> Result<Option<String>, ConfigError> {
    let unresolved = |message: String| {
        if lookups.strict {
            Err(position.error(message))
        } else {
            Ok(None)
        }
    };
    let (prefix, body) = match expr.split_once(':') {
        Some((p, b)) if p == "env" || p == "sys" => (p, b),
        _ => {
            let Some(keys) = lookups.keys else {
                return unresolved(format!(
                    "unsupported interpolation ${{{expr}}}: expected ${{env:VAR}}, ${{env:VAR:-default}} or ${{sys:name}}"
                ));
            };
            if depth >= MAX_DEPTH {
                return Err(position.error(format!(
                    "${{{expr}}} refers to itself (through {MAX_DEPTH} levels of ${{key}})"
                )));
            }
            return match keys(expr) {
                Some(raw) => expand(&raw, position, lookups, depth + 1).map(Some),
                None => unresolved(format!(
                    "${{{expr}}}: no key {expr:?} in this file (and not ${{env:…}} or ${{sys:…}})"
                )),
            };
        }
    };
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    let found = if prefix == "env" {
        (lookups.env)(name)
    } else {
        (lookups.sys)(name)
    };
    match (found, default) {
        (Some(value), _) => Ok(Some(value)),
        (None, Some(default)) => Ok(Some(default.to_string())),
        (None, None) if prefix == "env" => unresolved(format!(
            "environment variable {name} is not set and ${{{expr}}} has no default (write ${{env:{name}:-default}} to give one)"
        )),
        (None, None) => unresolved(format!(
            "system property {name} is not set (James reads them from jvm.properties) and ${{{expr}}} has no default (write ${{sys:{name}:-default}} to give one)"
        )),
    }
}

/// A Java system property as James would see it: `jvm.properties` of the conf directory
/// first (James loads it into the system properties at startup), then the JVM's own.
pub fn system_property(name: &str, conf_dir: Option<&Path>) -> Option<String> {
    if let Some(dir) = conf_dir
        && let Ok(text) = std::fs::read_to_string(dir.join("jvm.properties"))
        && let Some(value) = super::properties::raw_value(&text, name)
    {
        return Some(value);
    }
    let home = || std::env::var("HOME").ok();
    match name {
        "user.home" => home(),
        "user.name" => std::env::var("USER").ok(),
        "user.dir" => std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        "java.io.tmpdir" => Some(std::env::temp_dir().display().to_string()),
        "file.separator" => Some("/".into()),
        "path.separator" => Some(":".into()),
        "line.separator" => Some("\n".into()),
        "os.name" => Some(
            match std::env::consts::OS {
                "linux" => "Linux",
                "macos" => "Mac OS X",
                other => other,
            }
            .to_string(),
        ),
        _ => None,
    }
}

fn offset_position(start: &Position, before: &str) -> Position {
    let newlines = before.matches('\n').count() as u32;
    let column = match before.rfind('\n') {
        Some(i) => before[i + 1..].chars().count() as u32 + 1,
        None => start.column + before.chars().count() as u32,
    };
    Position {
        file: start.file.clone(),
        line: start.line + newlines,
        column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos() -> Position {
        Position {
            line: 3,
            column: 10,
            ..Position::file_start(Path::new("conf/x.properties"))
        }
    }

    #[test]
    fn replaces_set_default_and_reports_unset() {
        let lookup = |n: &str| (n == "SET").then(|| "v".to_string());
        assert_eq!(
            interpolate_with("a${env:SET}b", &pos(), lookup).unwrap(),
            "avb"
        );
        assert_eq!(
            interpolate_with("${env:UNSET:-http://x:1/api}", &pos(), lookup).unwrap(),
            "http://x:1/api"
        );
        assert_eq!(
            interpolate_with("${env:UNSET:-}", &pos(), lookup).unwrap(),
            ""
        );
        let err = interpolate_with("x ${env:UNSET}", &pos(), lookup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conf/x.properties:3:12: environment variable UNSET is not set and ${env:UNSET} has no default (write ${env:UNSET:-default} to give one)"
        );
    }

    #[test]
    fn keys_and_system_properties_resolve_and_lenient_files_keep_the_rest() {
        let env = |_: &str| None;
        let sys = |n: &str| (n == "james.root").then(|| "/opt/james".to_string());
        let keys = |k: &str| match k {
            "host" => Some("db.local".to_string()),
            "url" => Some("jdbc://${host}:5432".to_string()),
            "loop" => Some("${loop}".to_string()),
            _ => None,
        };
        let mut lookups = Lookups {
            env: &env,
            sys: &sys,
            keys: Some(&keys),
            strict: true,
        };
        assert_eq!(
            interpolate_in("${url}/x ${sys:james.root}", &pos(), &lookups).unwrap(),
            "jdbc://db.local:5432/x /opt/james"
        );
        assert!(
            interpolate_in("${loop}", &pos(), &lookups)
                .unwrap_err()
                .message
                .contains("refers to itself")
        );
        assert!(
            interpolate_in("${sys:nope}", &pos(), &lookups)
                .unwrap_err()
                .message
                .contains("jvm.properties")
        );
        lookups.strict = false;
        assert_eq!(
            interpolate_in(
                "${env:UNSET}|${nokey}|${sys:nope}|${host}",
                &pos(),
                &lookups
            )
            .unwrap(),
            "${env:UNSET}|${nokey}|${sys:nope}|db.local"
        );
    }
}
