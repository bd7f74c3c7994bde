//! `${env:VAR}` and `${env:VAR:-default}` interpolation, as Apache Commons Configuration does,
//! except that an unset variable without a default is an error (James keeps the literal).

use super::error::{ConfigError, Position};

/// Replaces every `${env:VAR}` / `${env:VAR:-default}` / `${sys:VAR}` in `value`.
/// `position` is where `value` starts; the error points at the `${` of the unset variable.
pub fn interpolate(value: &str, position: &Position) -> Result<String, ConfigError> {
    interpolate_with(value, position, |name| std::env::var(name).ok())
}

/// [`interpolate`] with a custom variable lookup (tests).
pub fn interpolate_with(
    value: &str,
    position: &Position,
    lookup: impl Fn(&str) -> Option<String>,
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
        out.push_str(&resolve(expr, &var_position, &lookup)?);
        consumed += start + len + 1;
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(
    expr: &str,
    position: &Position,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let (prefix, body) = expr.split_once(':').unwrap_or(("", expr));
    if prefix != "env" && prefix != "sys" {
        return Err(position.error(format!(
            "unsupported interpolation ${{{expr}}}: expected ${{env:VAR}} or ${{env:VAR:-default}}"
        )));
    }
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    match (lookup(name), default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(position.error(format!(
            "environment variable {name} is not set and ${{{expr}}} has no default (write ${{{prefix}:{name}:-default}} to give one)"
        ))),
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
    use std::path::Path;

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
}
